//! Image rollouts in waves (DESIGN §2 rule 11).
//!
//! A change that moves the image of several workspaces at once is one
//! rollout, keyed by runtime, track and target: a pin edit (track: the
//! ring), a moving tag re-resolved to a new digest (`berth refresh`,
//! `BERTH_TAG_REFRESH`), or a local build of a new template commit (the
//! target is the new image ID). It waits out `BERTH_PIN_DEBOUNCE` (a
//! change that does not hold replaces nothing), lets the canary count of
//! replaces run alone as wave 0, then waves of at most max-parallel, each
//! wave starting only when every replace of the one before finished
//! (ready) or failed. A replace that did not start after all (a pull
//! failed, the workspace turned away) gives its place in the wave to
//! another workspace. A started image
//! that fails readiness is a failure; a pull or build that fails is not
//! (nothing was touched), nor is a failed replace of a workspace broken by
//! itself before (crash looping, failed): it is put back and its place
//! goes to another workspace. Failures above the ratio halt the rollout:
//! nothing more starts, and the controller puts the previous image back —
//! into the pin row for a pin, into its own image knowledge for a tag or a
//! build — which replaces the changed workspaces back onto it.
//!
//! The state lives in the controller's memory; after a restart a rollout
//! starts counting again at the canary wave, which only makes it more
//! careful, the replaces found under way (a `-prev` container beside a new
//! one made to the spec) hold their places in it and count, and so do the
//! replaces of a pin's rollout the rows show undone since the pin was set
//! (the trail keeps them: a berth that died before it halted).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Rollout as Limits;
use crate::model::{Digest, WorkspaceId};

mod replace;

pub use replace::{Replace, RolloutKey, Track, image_replace, resumed_replace};

/// What a rollout has done so far.
#[derive(Debug)]
pub struct Rollout {
    pub from: Option<Digest>,
    /// The image reference the workspaces' specs name (the controller's
    /// image knowledge is keyed by it).
    pub image: String,
    pub seen_at: Instant,
    pub in_progress: BTreeSet<WorkspaceId>,
    pub done: BTreeSet<WorkspaceId>,
    pub failed: BTreeSet<WorkspaceId>,
    /// Workspaces whose replace began while they were broken by
    /// themselves (crash looping, failed): how their replace ends says
    /// nothing about the image.
    pub unproven: BTreeSet<WorkspaceId>,
    /// Unproven workspaces whose replace failed: restored, not counted.
    pub inconclusive: BTreeSet<WorkspaceId>,
    /// Workspaces told to wait for a slot: woken when one frees.
    pub waiting: BTreeSet<WorkspaceId>,
    pub halted: bool,
    /// For a pin's rollout that halted: when the pin row was last changed
    /// as it halted (the database's clock). The same digest pinned again
    /// since is the operator's word to try it afresh.
    pub halted_pinned_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The wave under way: 0 is the canary.
    pub wave: usize,
    /// Replaces started in this wave (those that did not start after all
    /// are given back).
    pub wave_started: usize,
}

/// A rollout that just halted.
#[derive(Debug, PartialEq, Eq)]
pub struct Halt {
    pub key: RolloutKey,
    pub from: Option<Digest>,
    pub image: String,
    pub failed: usize,
    pub tried: usize,
    /// The workspaces whose replace failed, for the operator to look at.
    pub failed_ids: Vec<WorkspaceId>,
}

/// A rollout that completed.
#[derive(Debug, PartialEq, Eq)]
pub struct Completed {
    pub key: RolloutKey,
    /// Workspaces broken by themselves whose replace failed: they
    /// stay on their old image and hold the image's landing back no more
    /// than they proved anything against it.
    pub not_counted: BTreeSet<WorkspaceId>,
}

/// The decision for one workspace's replace this round.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    /// Start the replace now.
    Go,
    /// Not now: look again after this long.
    Wait(Duration),
    /// The rollout halted: never onto this image.
    Halted,
}

/// Every rollout the controller is carrying out. A rollout is dropped as
/// soon as no workspace wants it and none is being replaced for it, so a
/// digest pinned again later starts over (debounce, canary), and the map
/// holds only rollouts under way.
#[derive(Debug, Default)]
pub struct Rollouts {
    pub by_key: BTreeMap<RolloutKey, Rollout>,
    /// Waiting workspaces of rollouts whose slot freed, for the caller to
    /// queue now rather than at their next look.
    wake: BTreeSet<WorkspaceId>,
}

impl Rollout {
    /// A rollout first seen now, at the canary wave.
    fn new(replace: &Replace) -> Self {
        Rollout {
            from: replace.from.clone(),
            image: replace.image.clone(),
            seen_at: Instant::now(),
            in_progress: BTreeSet::new(),
            done: BTreeSet::new(),
            failed: BTreeSet::new(),
            unproven: BTreeSet::new(),
            inconclusive: BTreeSet::new(),
            waiting: BTreeSet::new(),
            halted: false,
            halted_pinned_at: None,
            wave: 0,
            wave_started: 0,
        }
    }

    /// A slot freed: every waiting workspace may look again.
    fn free_slot(&mut self, wake: &mut BTreeSet<WorkspaceId>) {
        wake.append(&mut self.waiting);
    }

    /// A replace of this wave that did not start after all: its place in
    /// the wave goes to another workspace.
    fn give_back(&mut self, wake: &mut BTreeSet<WorkspaceId>) {
        self.wave_started = self.wave_started.saturating_sub(1);
        self.free_slot(wake);
    }

    /// Halts the rollout when its failures exceed the ratio; the halt, the
    /// first time.
    fn halt_if_over(&mut self, key: &RolloutKey, limits: &Limits) -> Option<Halt> {
        let tried = self.done.len() + self.failed.len();
        let ratio = self.failed.len() as f64 / tried.max(1) as f64;
        if self.halted || self.failed.is_empty() || ratio <= limits.max_failure_ratio {
            return None;
        }
        self.halted = true;
        Some(Halt {
            key: key.clone(),
            from: self.from.clone(),
            image: self.image.clone(),
            failed: self.failed.len(),
            tried,
            failed_ids: self.failed.iter().copied().collect(),
        })
    }

    /// How many replaces `wave` holds.
    fn wave_size(wave: usize, limits: &Limits) -> usize {
        if wave == 0 {
            limits.canary as usize
        } else {
            limits.max_parallel.max(1) as usize
        }
    }
}

impl Rollouts {
    /// Whether `id` may start its replace for `key` now.
    pub fn gate(
        &mut self,
        replace: &Replace,
        id: WorkspaceId,
        limits: &Limits,
        debounce: Duration,
    ) -> Gate {
        let r = self
            .by_key
            .entry(replace.key.clone())
            .or_insert_with(|| Rollout::new(replace));
        if r.halted {
            return Gate::Halted;
        }
        let held = r.seen_at.elapsed();
        if held < debounce {
            return Gate::Wait(debounce - held);
        }
        if r.in_progress.contains(&id) {
            return Gate::Go;
        }
        // The next wave opens once every replace of this one finished (an
        // empty canary wave opens the first at once).
        if r.wave_started >= Rollout::wave_size(r.wave, limits) && r.in_progress.is_empty() {
            r.wave += 1;
            r.wave_started = 0;
        }
        if r.wave_started < Rollout::wave_size(r.wave, limits) {
            r.wave_started += 1;
            r.waiting.remove(&id);
            r.in_progress.insert(id);
            Gate::Go
        } else {
            // Woken when a slot frees; the timer only backs that up.
            r.waiting.insert(id);
            Gate::Wait(Duration::from_secs(5))
        }
    }

    /// `id`, whose replace `key` just let go, was broken by itself before
    /// it (crash looping, failed): a failure of its replace is no evidence
    /// against the image.
    pub fn unproven(&mut self, key: &RolloutKey, id: WorkspaceId) {
        if let Some(r) = self.by_key.get_mut(key)
            && r.in_progress.contains(&id)
        {
            r.unproven.insert(id);
        }
    }

    /// Notes when the pin of halted `key` was last changed as it halted.
    pub fn halted_at_pin(
        &mut self,
        key: &RolloutKey,
        pinned_at: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        if let Some(r) = self.by_key.get_mut(key) {
            r.halted_pinned_at = pinned_at;
        }
    }

    /// Forgets the halted pin rollouts whose digest the pin names again
    /// after a change since the halt (the operator pinned the same digest
    /// anew, `berth pin` or an UPDATE): the next replace onto it begins a
    /// rollout afresh, at the canary. Returns the keys forgotten.
    pub fn forget_repinned(&mut self, catalogue: &crate::plan::Catalogue) -> Vec<RolloutKey> {
        let repinned: Vec<RolloutKey> = self
            .by_key
            .iter()
            .filter(|(key, r)| {
                let Track::Pin(ring) = &key.track else {
                    return false;
                };
                r.halted
                    && r.in_progress.is_empty()
                    && r.halted_pinned_at.is_some()
                    && catalogue.pin(&key.runtime, ring) == Some(&key.to)
                    && catalogue.pinned_at(&key.runtime, ring) != r.halted_pinned_at
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in &repinned {
            if let Some(r) = self.by_key.remove(key) {
                self.wake.extend(r.waiting);
            }
        }
        repinned
    }

    /// The rollout whose replace `id` holds a place in, if any.
    pub fn held_by(&self, id: WorkspaceId) -> Option<RolloutKey> {
        self.by_key
            .iter()
            .find(|(_, r)| r.in_progress.contains(&id))
            .map(|(key, _)| key.clone())
    }

    /// Whether `key`'s rollout is under way (or halted) in this instance.
    pub fn knows(&self, key: &RolloutKey) -> bool {
        self.by_key.contains_key(key)
    }

    /// Starts `replace`'s rollout with the replaces that failed before
    /// this instance carried it (a berth that died after a canary was put
    /// back, before it halted the rollout) and those that were done: the
    /// failures count against the done ones, and may halt it at once.
    /// With `keep` false, a rollout that does not halt is not started:
    /// nothing of it is left to carry, and counted done it would read as
    /// completed.
    pub fn seed_failed(
        &mut self,
        replace: &Replace,
        failed: &[WorkspaceId],
        done: &[WorkspaceId],
        limits: &Limits,
        keep: bool,
    ) -> Option<Halt> {
        let known = self.knows(&replace.key);
        let r = self
            .by_key
            .entry(replace.key.clone())
            .or_insert_with(|| Rollout::new(replace));
        r.failed.extend(failed.iter().copied());
        r.done.extend(done.iter().copied());
        let halt = r.halt_if_over(&replace.key, limits);
        if halt.is_none() && !keep && !known {
            self.by_key.remove(&replace.key);
        }
        halt
    }

    /// Whether `id` holds a place in `key`'s rollout (its replace began).
    pub fn holds(&self, key: &RolloutKey, id: WorkspaceId) -> bool {
        self.by_key
            .get(key)
            .is_some_and(|r| r.in_progress.contains(&id))
    }

    /// `id`'s replace for `replace` is already under way (found running
    /// by a restarted berth): it holds a place in the current wave, as if
    /// the gate had let it go, so the rollout waits for it and counts
    /// how it ends.
    pub fn adopt(&mut self, replace: &Replace, id: WorkspaceId) {
        let r = self
            .by_key
            .entry(replace.key.clone())
            .or_insert_with(|| Rollout::new(replace));
        if r.in_progress.contains(&id) || r.done.contains(&id) || r.failed.contains(&id) {
            return;
        }
        r.waiting.remove(&id);
        r.in_progress.insert(id);
        r.wave_started += 1;
    }

    /// A replace of `id` finished ready. The waiting workspaces look
    /// again only when that ends the wave: before, no place is free.
    pub fn succeeded(&mut self, id: WorkspaceId) {
        for r in self.by_key.values_mut() {
            if r.in_progress.remove(&id) {
                r.unproven.remove(&id);
                r.done.insert(id);
                if r.in_progress.is_empty() {
                    r.free_slot(&mut self.wake);
                }
            }
        }
    }

    /// A replace of `id` failed readiness (and was restored). Returns the
    /// rollouts this failure halts, with their counts, for the caller to
    /// write back. The failure of a workspace broken by itself before
    /// counts for nothing: its place in the wave goes to another
    /// workspace, so a canary wave still proves the image on one that
    /// served.
    pub fn failed(&mut self, id: WorkspaceId, limits: &Limits) -> Vec<Halt> {
        let mut halts = Vec::new();
        for (key, r) in self.by_key.iter_mut() {
            if !r.in_progress.remove(&id) {
                continue;
            }
            if r.unproven.remove(&id) {
                tracing::warn!(
                    workspace = %id,
                    runtime = key.runtime,
                    to = %key.to,
                    "a replace failed on a workspace broken by itself before it: not counted against the rollout"
                );
                r.inconclusive.insert(id);
                r.give_back(&mut self.wake);
                continue;
            }
            r.failed.insert(id);
            halts.extend(r.halt_if_over(key, limits));
            // The waiting look again when the wave ends, or at once when
            // the rollout halted (to show it).
            if r.in_progress.is_empty() || r.halted {
                r.free_slot(&mut self.wake);
            }
        }
        halts
    }

    /// A workspace whose replace did not start after all (a pull failed,
    /// the row changed): its slot is free again.
    pub fn release(&mut self, id: WorkspaceId) {
        for r in self.by_key.values_mut() {
            if r.in_progress.remove(&id) {
                r.unproven.remove(&id);
                r.give_back(&mut self.wake);
            }
        }
    }

    /// `id` no longer heads for any rollout but `still` (none when `None`):
    /// the slots it holds elsewhere are free.
    pub fn abandon(&mut self, id: WorkspaceId, still: Option<&RolloutKey>) {
        for (key, r) in self.by_key.iter_mut() {
            if Some(key) != still && r.in_progress.remove(&id) {
                r.unproven.remove(&id);
                r.give_back(&mut self.wake);
            }
        }
    }

    /// Workspaces to queue now: a slot of their rollout freed.
    pub fn take_wakeups(&mut self) -> BTreeSet<WorkspaceId> {
        std::mem::take(&mut self.wake)
    }

    /// Drops every rollout no workspace wants this round and none is
    /// being replaced for; returns those of them that completed (work
    /// done, not halted: their image is stable).
    pub fn completed(&mut self, wanted: &BTreeSet<RolloutKey>) -> Vec<Completed> {
        let mut out = Vec::new();
        self.by_key.retain(|key, r| {
            if wanted.contains(key) || !r.in_progress.is_empty() {
                return true;
            }
            if !r.halted && !r.done.is_empty() {
                out.push(Completed {
                    key: key.clone(),
                    not_counted: std::mem::take(&mut r.inconclusive),
                });
            }
            false
        });
        out
    }

    /// Rollouts under way, rollouts halted, and the highest wave of those
    /// under way.
    pub fn summary(&self) -> (usize, usize, usize) {
        let mut out = (0, 0, 0);
        for r in self.by_key.values() {
            if r.halted {
                out.1 += 1;
            } else {
                out.0 += 1;
                out.2 = out.2.max(r.wave);
            }
        }
        out
    }

    /// The image references of halted rollouts still carried (their
    /// workspaces being put back).
    pub fn halted_images(&self) -> impl Iterator<Item = &str> {
        self.by_key
            .values()
            .filter(|r| r.halted)
            .map(|r| r.image.as_str())
    }

    /// Whether a row's `rollout` column says its replace was judged
    /// unproven (the workspace broken by itself before it).
    pub fn column_unproven(column: Option<&serde_json::Value>) -> bool {
        column.is_some_and(|c| c["unproven"] == true)
    }

    /// The `rollout` column of `id` while its replace for `key` runs: the
    /// rollout's, and whether its failure would count (kept on the row, so
    /// that a berth restarted mid-replace judges it as this one did).
    pub fn replacing(&self, key: &RolloutKey, id: WorkspaceId) -> serde_json::Value {
        let mut column = self.describe(key, "replacing");
        if self
            .by_key
            .get(key)
            .is_some_and(|r| r.unproven.contains(&id))
        {
            column["unproven"] = serde_json::Value::Bool(true);
        }
        column
    }

    /// Whether a row's `rollout` column says its replace for `key`'s
    /// rollout was under way (`replacing`; a row waiting for its wave has
    /// not been touched).
    pub fn column_names(column: Option<&serde_json::Value>, key: &RolloutKey) -> bool {
        let Some(c) = column.filter(|c| c["state"] == "replacing") else {
            return false;
        };
        let track = match &key.track {
            Track::Pin(ring) => c["track"] == "pin" && c["ring"] == ring.as_str(),
            Track::Tag => c["track"] == "tag",
            Track::Build => c["track"] == "build",
        };
        track && c["runtime"] == key.runtime.as_str() && c["to"] == key.to.as_str()
    }

    /// The `rollout` column for a workspace in a rollout: the change, its
    /// state, the wave (0 is the canary) and the counts so far.
    pub fn describe(&self, key: &RolloutKey, state: &str) -> serde_json::Value {
        let r = self.by_key.get(key);
        let done = r.map_or(0, |r| r.done.len());
        let wave = r.map_or(0, |r| r.wave);
        let mut v = serde_json::json!({
            "runtime": key.runtime,
            "track": match key.track {
                Track::Pin(_) => "pin",
                Track::Tag => "tag",
                Track::Build => "build",
            },
            "to": key.to.as_str(),
            "from": r.and_then(|r| r.from.as_ref()).map(Digest::as_str),
            "state": state,
            "wave": wave,
            "done": done,
            "failed": r.map_or(0, |r| r.failed.len()),
            "not_counted": r.map_or(0, |r| r.inconclusive.len()),
            "in_progress": r.map_or(0, |r| r.in_progress.len()),
        });
        if let Track::Pin(ring) = &key.track {
            v["ring"] = serde_json::Value::String(ring.clone());
        }
        v
    }
}

#[cfg(test)]
mod tests;
