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
//! (nothing was touched). Failures above the ratio halt the rollout:
//! nothing more starts, and the controller puts the previous image back —
//! into the pin row for a pin, into its own image knowledge for a tag or a
//! build — which replaces the changed workspaces back onto it.
//!
//! The state lives in the controller's memory; after a restart a rollout
//! starts counting again at the canary wave, which only makes it more
//! careful, and the replaces found under way (a `-prev` container beside
//! a new one made to the spec) hold their places in it and count.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Rollout as Limits;
use crate::model::{ContainerSpec, Digest, ImageSource, WorkspaceId};
use crate::plan::{Change, Op, Plan, Why};

/// What a rollout moves.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Track {
    /// The pin of this ring.
    Pin(String),
    /// The runtime's moving tag.
    Tag,
    /// The runtime's local build.
    Build,
}

impl Track {
    pub fn as_str(&self) -> &str {
        match self {
            Track::Pin(ring) => ring,
            Track::Tag => "tag",
            Track::Build => "build",
        }
    }
}

/// One rollout: a runtime's track moving onto `to` (a manifest digest, or
/// for a build an image ID).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RolloutKey {
    pub runtime: String,
    pub track: Track,
    pub to: Digest,
}

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
    /// Workspaces told to wait for a slot: woken when one frees.
    pub waiting: BTreeSet<WorkspaceId>,
    pub halted: bool,
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

/// A replace that belongs to a rollout.
#[derive(Debug, PartialEq, Eq)]
pub struct Replace {
    pub key: RolloutKey,
    pub from: Option<Digest>,
    pub image: String,
}

/// The rollout a plan's replace belongs to, if it is one: its first action
/// replaces `runtime`'s container onto a new pinned digest, a new digest of
/// its moving tag, or a new local build.
pub fn image_replace(plan: &Plan, runtime: &str) -> Option<Replace> {
    let first = plan.actions.first()?;
    let Why::Replace(change) = &first.why else {
        return None;
    };
    let spec = plan.actions.iter().find_map(|a| match &a.op {
        Op::Create(spec) => Some(spec),
        _ => None,
    })?;
    replace_of(change, spec, runtime)
}

/// The rollout a replace already under way belongs to (`Plan::resumed`,
/// onto `spec`), if it is one.
pub fn resumed_replace(plan: &Plan, spec: &ContainerSpec, runtime: &str) -> Option<Replace> {
    replace_of(plan.resumed.as_ref()?, spec, runtime)
}

/// The rollout `change` onto `spec` belongs to: a new pinned digest, a new
/// digest of a moving tag, or a new local build.
fn replace_of(change: &Change, spec: &ContainerSpec, runtime: &str) -> Option<Replace> {
    let (track, from, to) = match (change, &spec.image_source) {
        (Change::Digest { from, to }, ImageSource::Pinned { ring }) => {
            (Track::Pin(ring.clone()), from.clone(), to.clone())
        }
        (Change::Digest { from, to }, ImageSource::Tag) => (Track::Tag, from.clone(), to.clone()),
        (Change::Digest { from, to }, ImageSource::Explicit) if spec.image.is_moving() => {
            (Track::Tag, from.clone(), to.clone())
        }
        (Change::ImageId { from, to }, ImageSource::LocalBuild { .. }) => (
            Track::Build,
            Digest::parse(from).ok(),
            Digest::parse(to).ok()?,
        ),
        _ => return None,
    };
    Some(Replace {
        key: RolloutKey {
            runtime: runtime.to_string(),
            track,
            to,
        },
        from,
        image: spec.image.to_string(),
    })
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
            waiting: BTreeSet::new(),
            halted: false,
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
                r.done.insert(id);
                if r.in_progress.is_empty() {
                    r.free_slot(&mut self.wake);
                }
            }
        }
    }

    /// A replace of `id` failed readiness (and was restored). Returns the
    /// rollouts this failure halts, with their counts, for the caller to
    /// write back.
    pub fn failed(&mut self, id: WorkspaceId, limits: &Limits) -> Vec<Halt> {
        let mut halts = Vec::new();
        for (key, r) in self.by_key.iter_mut() {
            if !r.in_progress.remove(&id) {
                continue;
            }
            r.failed.insert(id);
            let tried = r.done.len() + r.failed.len();
            let ratio = r.failed.len() as f64 / tried as f64;
            if !r.halted && ratio > limits.max_failure_ratio {
                r.halted = true;
                halts.push(Halt {
                    key: key.clone(),
                    from: r.from.clone(),
                    image: r.image.clone(),
                    failed: r.failed.len(),
                    tried,
                });
            }
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
                r.give_back(&mut self.wake);
            }
        }
    }

    /// `id` no longer heads for any rollout but `still` (none when `None`):
    /// the slots it holds elsewhere are free.
    pub fn abandon(&mut self, id: WorkspaceId, still: Option<&RolloutKey>) {
        for (key, r) in self.by_key.iter_mut() {
            if Some(key) != still && r.in_progress.remove(&id) {
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
    pub fn completed(&mut self, wanted: &BTreeSet<RolloutKey>) -> Vec<RolloutKey> {
        let mut out = Vec::new();
        self.by_key.retain(|key, r| {
            if wanted.contains(key) || !r.in_progress.is_empty() {
                return true;
            }
            if !r.halted && !r.done.is_empty() {
                out.push(key.clone());
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
            "in_progress": r.map_or(0, |r| r.in_progress.len()),
        });
        if let Track::Pin(ring) = &key.track {
            v["ring"] = serde_json::Value::String(ring.clone());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RolloutKey {
        RolloutKey {
            runtime: "agent".into(),
            track: Track::Pin("stable".into()),
            to: Digest::parse(&format!("sha256:{}", "b".repeat(64))).unwrap(),
        }
    }

    fn replace() -> Replace {
        Replace {
            key: key(),
            from: None,
            image: "reg/agent@sha256:bb".into(),
        }
    }

    fn ids(n: u128) -> Vec<WorkspaceId> {
        (1..=n)
            .map(|i| WorkspaceId(uuid::Uuid::from_u128(i)))
            .collect()
    }

    const LIMITS: Limits = Limits {
        canary: 1,
        max_parallel: 3,
        max_failure_ratio: 0.0,
    };

    #[tokio::test(start_paused = true)]
    async fn a_replace_found_under_way_holds_the_canary_place_and_its_failure_halts() {
        let mut r = Rollouts::default();
        let ws = ids(3);
        let gate = |r: &mut Rollouts, id| r.gate(&replace(), id, &LIMITS, Duration::ZERO);
        // A restarted berth finds ws[0] mid-replace onto the new digest.
        r.adopt(&replace(), ws[0]);
        r.adopt(&replace(), ws[0]);
        assert!(
            matches!(gate(&mut r, ws[1]), Gate::Wait(_)),
            "the canary place is taken by the replace under way"
        );
        assert_eq!(gate(&mut r, ws[0]), Gate::Go, "it goes on");
        let halts = r.failed(ws[0], &LIMITS);
        assert_eq!(halts.len(), 1, "its failure counts");
        assert_eq!((halts[0].failed, halts[0].tried), (1, 1));
        assert_eq!(gate(&mut r, ws[2]), Gate::Halted);
    }

    #[tokio::test(start_paused = true)]
    async fn the_canary_goes_alone_then_waves_of_max_parallel() {
        let mut r = Rollouts::default();
        let ws = ids(6);
        let gate = |r: &mut Rollouts, id| r.gate(&replace(), id, &LIMITS, Duration::ZERO);
        assert_eq!(gate(&mut r, ws[0]), Gate::Go);
        assert!(
            matches!(gate(&mut r, ws[1]), Gate::Wait(_)),
            "the canary goes alone"
        );
        r.succeeded(ws[0]);
        for id in &ws[1..4] {
            assert_eq!(gate(&mut r, *id), Gate::Go);
        }
        assert!(
            matches!(gate(&mut r, ws[4]), Gate::Wait(_)),
            "at most max-parallel"
        );
        // A wave is gated on the whole wave before it, not on one slot.
        r.succeeded(ws[1]);
        r.succeeded(ws[2]);
        assert!(
            matches!(gate(&mut r, ws[4]), Gate::Wait(_)),
            "wave 1 is not finished"
        );
        r.succeeded(ws[3]);
        assert_eq!(gate(&mut r, ws[4]), Gate::Go);
        assert_eq!(r.summary(), (1, 0, 2), "the second wave after the canary");
    }

    #[tokio::test(start_paused = true)]
    async fn a_replace_that_did_not_start_gives_its_place_in_the_wave_back() {
        let mut r = Rollouts::default();
        let ws = ids(6);
        let gate = |r: &mut Rollouts, id| r.gate(&replace(), id, &LIMITS, Duration::ZERO);
        assert_eq!(gate(&mut r, ws[0]), Gate::Go);
        r.succeeded(ws[0]);
        for id in &ws[1..4] {
            assert_eq!(gate(&mut r, *id), Gate::Go);
        }
        // Its pull failed: nothing was touched, another takes its place.
        r.release(ws[1]);
        assert_eq!(gate(&mut r, ws[4]), Gate::Go);
        assert!(matches!(gate(&mut r, ws[5]), Gate::Wait(_)));
        assert_eq!(r.summary(), (1, 0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_summary_counts_rollouts_and_names_the_wave() {
        let mut r = Rollouts::default();
        let ws = ids(5);
        r.gate(&replace(), ws[0], &LIMITS, Duration::ZERO);
        assert_eq!(r.summary(), (1, 0, 0), "the canary is wave 0");
        r.succeeded(ws[0]);
        for id in &ws[1..4] {
            r.gate(&replace(), *id, &LIMITS, Duration::ZERO);
        }
        for id in &ws[1..4] {
            r.succeeded(*id);
        }
        r.gate(&replace(), ws[4], &LIMITS, Duration::ZERO);
        assert_eq!(r.summary(), (1, 0, 2), "1 canary + 3 done: wave 2");
        let col = r.describe(&key(), "waiting");
        assert_eq!(
            (col["wave"].as_u64(), col["done"].as_u64()),
            (Some(2), Some(4))
        );
        assert_eq!(col["ring"], "stable");
        r.failed(ws[4], &LIMITS);
        assert_eq!(r.summary(), (0, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_wakes_the_waiting_workspaces() {
        let mut r = Rollouts::default();
        let ws = ids(3);
        assert_eq!(r.gate(&replace(), ws[0], &LIMITS, Duration::ZERO), Gate::Go);
        assert!(matches!(
            r.gate(&replace(), ws[1], &LIMITS, Duration::ZERO),
            Gate::Wait(_)
        ));
        assert!(matches!(
            r.gate(&replace(), ws[2], &LIMITS, Duration::ZERO),
            Gate::Wait(_)
        ));
        assert!(r.take_wakeups().is_empty(), "no slot freed yet");
        r.succeeded(ws[0]);
        assert_eq!(r.take_wakeups(), BTreeSet::from([ws[1], ws[2]]));
        assert!(r.take_wakeups().is_empty(), "each wake-up once");
    }

    #[tokio::test(start_paused = true)]
    async fn the_waiting_wake_when_a_wave_ends_not_at_each_replace() {
        let mut r = Rollouts::default();
        let ws = ids(6);
        let gate = |r: &mut Rollouts, id| r.gate(&replace(), id, &LIMITS, Duration::ZERO);
        gate(&mut r, ws[0]);
        r.succeeded(ws[0]);
        for id in &ws[1..4] {
            assert_eq!(gate(&mut r, *id), Gate::Go);
        }
        r.take_wakeups();
        assert!(matches!(gate(&mut r, ws[4]), Gate::Wait(_)));
        r.succeeded(ws[1]);
        r.succeeded(ws[2]);
        assert!(r.take_wakeups().is_empty(), "the wave is not over");
        r.succeeded(ws[3]);
        assert_eq!(r.take_wakeups(), BTreeSet::from([ws[4]]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_digest_pinned_again_after_its_rollout_starts_over() {
        let mut r = Rollouts::default();
        let id = ids(1)[0];
        let debounce = Duration::from_secs(5);
        tokio::time::advance(debounce).await;
        r.gate(&replace(), id, &LIMITS, debounce);
        tokio::time::advance(debounce).await;
        assert_eq!(r.gate(&replace(), id, &LIMITS, debounce), Gate::Go);
        r.succeeded(id);
        assert_eq!(r.completed(&BTreeSet::new()), vec![key()]);
        assert!(r.by_key.is_empty(), "a finished rollout is dropped");
        // Pinned away and back later: the debounce and the canary again.
        assert_eq!(
            r.gate(&replace(), id, &LIMITS, debounce),
            Gate::Wait(debounce)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rollout_nobody_wants_any_more_is_dropped_without_completing() {
        let mut r = Rollouts::default();
        let id = ids(1)[0];
        r.gate(&replace(), id, &LIMITS, Duration::from_secs(5));
        assert!(r.completed(&BTreeSet::new()).is_empty(), "nothing was done");
        assert_eq!(r.summary(), (0, 0, 0), "and nothing is under way");
    }

    #[tokio::test(start_paused = true)]
    async fn a_workspace_that_turned_away_gives_its_slot_back() {
        let mut r = Rollouts::default();
        let ws = ids(2);
        assert_eq!(r.gate(&replace(), ws[0], &LIMITS, Duration::ZERO), Gate::Go);
        assert!(matches!(
            r.gate(&replace(), ws[1], &LIMITS, Duration::ZERO),
            Gate::Wait(_)
        ));
        r.abandon(ws[0], Some(&key()));
        assert!(
            r.take_wakeups().is_empty(),
            "still heading for this rollout"
        );
        r.abandon(ws[0], None);
        assert_eq!(r.take_wakeups(), BTreeSet::from([ws[1]]));
        assert_eq!(r.gate(&replace(), ws[1], &LIMITS, Duration::ZERO), Gate::Go);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_canary_halts_and_nothing_more_starts() {
        let mut r = Rollouts::default();
        let ws = ids(3);
        assert_eq!(r.gate(&replace(), ws[0], &LIMITS, Duration::ZERO), Gate::Go);
        let halts = r.failed(ws[0], &LIMITS);
        assert_eq!(halts.len(), 1);
        assert_eq!((halts[0].failed, halts[0].tried), (1, 1));
        assert_eq!(
            r.gate(&replace(), ws[1], &LIMITS, Duration::ZERO),
            Gate::Halted
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pin_must_hold_for_the_debounce_before_anything_starts() {
        let mut r = Rollouts::default();
        let id = ids(1)[0];
        let debounce = Duration::from_secs(5);
        assert_eq!(
            r.gate(&replace(), id, &LIMITS, debounce),
            Gate::Wait(debounce)
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(r.gate(&replace(), id, &LIMITS, debounce), Gate::Go);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ratio_tolerates_failures_up_to_it() {
        let limits = Limits {
            canary: 1,
            max_parallel: 4,
            max_failure_ratio: 0.5,
        };
        let mut r = Rollouts::default();
        let ws = ids(4);
        assert_eq!(r.gate(&replace(), ws[0], &limits, Duration::ZERO), Gate::Go);
        r.succeeded(ws[0]);
        assert_eq!(r.gate(&replace(), ws[1], &limits, Duration::ZERO), Gate::Go);
        assert!(
            r.failed(ws[1], &limits).is_empty(),
            "1 of 2 is not above 0.5"
        );
        assert_eq!(r.gate(&replace(), ws[2], &limits, Duration::ZERO), Gate::Go);
        assert_eq!(r.failed(ws[2], &limits).len(), 1, "2 of 3 is");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rollout_completes_when_nothing_is_wanted_or_running() {
        let mut r = Rollouts::default();
        let id = ids(1)[0];
        r.gate(&replace(), id, &LIMITS, Duration::ZERO);
        assert!(
            r.completed(&BTreeSet::new()).is_empty(),
            "still in progress"
        );
        r.succeeded(id);
        assert_eq!(
            r.completed(&BTreeSet::from([key()])),
            Vec::<RolloutKey>::new()
        );
        assert_eq!(r.completed(&BTreeSet::new()), vec![key()]);
        assert!(r.completed(&BTreeSet::new()).is_empty(), "reported once");
    }
}
