//! The rollouts' side of a dispatch round: which rollouts the host's
//! workspaces still head for, which completed (a pin's digest marked
//! stable, old images swept), the `rollout` column of a waiting row, and
//! the rollout gauges.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::watch;

use super::rollout::{RolloutKey, Rollouts, Track, image_replace, resumed_replace};
use super::{Controller, State};
use crate::desired::{self, Lease};
use crate::model::{DesiredState, WorkspaceId, WorkspaceRow};
use crate::plan::{self, PassPlan};

impl Controller {
    /// Follows the round's plans into the rollouts: adopts the replaces
    /// found under way (returned, by workspace), gives back the slots of
    /// workspaces that no longer head for their rollout's image, and ends
    /// the rollouts no workspace wants any more.
    pub(super) async fn track_rollouts(
        &self,
        state: &mut State,
        pass: &PassPlan,
        lease_rx: &watch::Receiver<Option<Lease>>,
    ) -> BTreeMap<WorkspaceId, RolloutKey> {
        // Rollouts still wanted by some workspace of the host this round;
        // one no longer wanted, with work done and none running, completed.
        let mut wanted: BTreeSet<RolloutKey> = BTreeSet::new();
        // Replaces found under way (a restarted berth's), by workspace.
        let mut resumed: BTreeMap<WorkspaceId, RolloutKey> = BTreeMap::new();
        for p in &pass.plans {
            // A workspace that no longer heads for its rollout's image (its
            // row is gone or stopped, or it wants another rollout's image
            // now) gives its slot back. A paused one keeps what it holds:
            // berth neither finishes nor undoes its replace while it is
            // paused (a canary under judgement is judged once unpaused),
            // and its place is not handed to another workspace meanwhile.
            let replaces = match state.rows.get(&p.id) {
                Some(row) if row.desired_state == DesiredState::Running && row.paused => continue,
                Some(row) if row.desired_state == DesiredState::Running => {
                    let under_way = p
                        .resumed
                        .as_ref()
                        .and_then(|_| plan::spec(row, &state.catalogue, &self.settings).ok())
                        .and_then(|spec| resumed_replace(p, &spec, &row.runtime));
                    // The replace under way was judged unproven by the
                    // instance that began it (its column says so).
                    let unproven = under_way.as_ref().is_some_and(|r| {
                        Rollouts::column_names(row.rollout.as_ref(), &r.key)
                            && Rollouts::column_unproven(row.rollout.as_ref())
                    });
                    Some((under_way, image_replace(p, &row.runtime), unproven))
                }
                _ => None,
            };
            let heading = match replaces {
                Some((under_way, planned, unproven)) => {
                    if let Some(r) = &under_way {
                        // Failures of this rollout an earlier instance
                        // saw count before the replace under way does.
                        if !state.rollouts.knows(&r.key) {
                            self.take_up_failures(state, r, true).await;
                        }
                        state.rollouts.adopt(r, p.id);
                        if unproven {
                            state.rollouts.unproven(&r.key, p.id);
                        }
                        resumed.insert(p.id, r.key.clone());
                    }
                    match planned.or(under_way) {
                        Some(r) => {
                            wanted.insert(r.key.clone());
                            Some(Some(r.key))
                        }
                        None => None,
                    }
                }
                None => Some(None),
            };
            if let Some(still) = heading {
                state.rollouts.abandon(p.id, still.as_ref());
            }
        }
        let completed = state.rollouts.completed(&wanted);
        let any_completed = !completed.is_empty();
        for super::rollout::Completed { key, not_counted } in completed {
            let (runtime, digest) = (&key.runtime, &key.to);
            tracing::info!(runtime, track = key.track.as_str(), digest = %digest, "rollout complete");
            // A pin's history records the digest as stable; a tag or a
            // build has no history to mark.
            if let Track::Pin(ring) = &key.track
                && self.pin_landed(state, &key, &not_counted)
                && let Err(error) =
                    desired::mark_stable(&self.pool, runtime, ring, digest.as_str()).await
            {
                tracing::error!(%error, "marking the pin stable failed");
            }
        }
        self.mark_pins_landed(state, &wanted).await;
        if any_completed && state.refreshing.is_empty() {
            // The image before the rollout's is now the previous one: the
            // one before that may go. With passes running, the next resync
            // sweeps instead.
            let busy = state.busy_repositories();
            self.sweep_images(lease_rx, &busy, super::retention::Sweep::Now)
                .await;
        }
        resumed
    }

    /// Forgets the halted rollouts whose digest the operator pinned again
    /// (see [`Rollouts::forget_repinned`]), and the undoing of them on the
    /// workspaces they were tried on: those try it again too. Before the
    /// round plans, so its plans start from what is forgotten.
    pub(super) fn forget_repinned(&self, state: &mut State) {
        for key in state.rollouts.forget_repinned(&state.catalogue) {
            tracing::info!(runtime = key.runtime, ring = key.track.as_str(), digest = %key.to, "a halted digest was pinned again: its rollout starts afresh");
            state.pins_halted.remove(&key);
            for memory in state.memory.values_mut() {
                if Rollouts::column_names(memory.rolled_back_rollout.as_ref(), &key) {
                    memory.forget_rollback();
                }
            }
        }
    }

    /// The rollout and registry gauges, set at every loop turn.
    pub(super) fn set_gauges(&self, state: &State) {
        let (active, _, wave) = state.rollouts.summary();
        // Halted: a rollout still being put back, or a tag or build whose
        // halted target this instance keeps holding back (until the tag
        // or the template moves on), each reference once.
        let mut halted: BTreeSet<&str> = state.held_back.keys().map(String::as_str).collect();
        halted.extend(state.rollouts.halted_images());
        let rollouts = &self.metrics.rollouts;
        rollouts.with_label_values(&["active"]).set(active as i64);
        rollouts
            .with_label_values(&["halted"])
            .set(halted.len() as i64);
        self.metrics.rollout_wave.set(wave as i64);
        for (reason, refusal) in [
            ("rate_limited", crate::act::Refusal::RateLimited),
            ("auth", crate::act::Refusal::Auth),
        ] {
            let n = self.executor.registries_refusing(refusal);
            self.metrics
                .registry_backoffs
                .with_label_values(&[reason])
                .set(n as i64);
        }
    }

    /// Marks stable the pins that needed no rollout here: every running
    /// row the pin decides already runs its digest (a pin set to what a tag
    /// had brought, a host that finished before this berth started), at
    /// least one of them online on it. `berth rollback` and a halt then
    /// know the digest held. A pin with a rollout under way or halted, or
    /// with no workspace online on it, is left alone; so is any pin while
    /// either snapshot is incomplete. Each (pin, digest) is looked at once
    /// per process once it landed (`mark_stable` changes nothing when the
    /// entry is marked already, or when the pin moved on), and never while
    /// a rollout onto it halted here. It reads every row: at most once
    /// per resync interval.
    async fn mark_pins_landed(&self, state: &mut State, wanted: &BTreeSet<RolloutKey>) {
        if !state.desired_complete || !self.observed.is_complete() {
            return;
        }
        let catalogue = &state.catalogue;
        let named =
            |key: &RolloutKey| catalogue.pin(&key.runtime, key.track.as_str()) == Some(&key.to);
        state.pins_landed.retain(named);
        state.pins_halted.retain(named);
        let now = tokio::time::Instant::now();
        if state
            .pins_looked_at
            .is_some_and(|at| now.duration_since(at) < self.resync_interval)
        {
            return;
        }
        state.pins_looked_at = Some(now);
        let candidates: Vec<RolloutKey> = state
            .catalogue
            .pins()
            .map(|(runtime, ring, digest)| RolloutKey {
                runtime: runtime.to_string(),
                track: Track::Pin(ring.to_string()),
                to: digest.clone(),
            })
            .filter(|key| {
                !state.pins_landed.contains(key)
                    && !state.pins_halted.contains(key)
                    && !wanted.contains(key)
                    && !state.rollouts.knows(key)
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let mains = self.observed.main_containers(&self.settings.host_id);
        for key in candidates {
            let Track::Pin(ring) = &key.track else {
                continue;
            };
            let online_on_it = state.rows.values().any(|row| {
                row.desired_state == DesiredState::Running
                    && !row.paused
                    && row.runtime == key.runtime
                    && row.status == Some(crate::model::Status::Online)
                    && row.status_reason.is_none()
                    && matches!(
                        plan::choose_image(row, &state.catalogue, &self.settings),
                        Ok((image, crate::model::ImageSource::Pinned { ring: r }, _))
                            if &r == ring && image.digest() == Some(&key.to)
                    )
                    && mains.get(&row.id).is_some_and(|c| {
                        c.label(crate::model::LABEL_IMAGE_DIGEST) == Some(key.to.as_str())
                    })
            });
            if !online_on_it || !self.pin_landed(state, &key, &BTreeSet::new()) {
                continue;
            }
            match desired::mark_stable(&self.pool, &key.runtime, ring, key.to.as_str()).await {
                Ok(()) => {
                    state.pins_landed.insert(key);
                }
                Err(error) => tracing::error!(%error, "marking the pin stable failed"),
            }
        }
    }

    /// Whether every running row of this host the pin of `key` decides
    /// runs its digest now: a rollout whose workspaces dropped out (a pull
    /// backing off, a replace given up) has not landed, and marks nothing
    /// stable. Rows broken by themselves (crash looping, failed) and those
    /// `not_counted` (broken before, their replace failed) hold no landing
    /// back: their trouble is their own.
    fn pin_landed(
        &self,
        state: &State,
        key: &RolloutKey,
        not_counted: &BTreeSet<WorkspaceId>,
    ) -> bool {
        let Track::Pin(ring) = &key.track else {
            return false;
        };
        let mains = self.observed.main_containers(&self.settings.host_id);
        state.rows.values().all(|row| {
            if row.desired_state != DesiredState::Running
                || row.paused
                || row.runtime != key.runtime
                || not_counted.contains(&row.id)
                || row.broken()
                // A row that makes no spec (an invalid edit while its old
                // container serves: degraded/change_blocked) is not
                // replaced by any rollout: its trouble is its own.
                || plan::spec(row, &state.catalogue, &self.settings).is_err()
            {
                return true;
            }
            match plan::choose_image(row, &state.catalogue, &self.settings) {
                // A row with no container (refused, not made yet) runs no
                // older image: it holds no landing back.
                Ok((image, crate::model::ImageSource::Pinned { ring: r }, _))
                    if &r == ring && image.digest() == Some(&key.to) =>
                {
                    mains.get(&row.id).is_none_or(|c| {
                        c.label(crate::model::LABEL_IMAGE_DIGEST) == Some(key.to.as_str())
                    })
                }
                _ => true,
            }
        })
    }

    /// Writes the `rollout` column of a row whose replace waits for its
    /// wave (or will not run: the rollout halted), when it shows something
    /// else.
    pub(super) async fn show_rollout(
        &self,
        lease: &Lease,
        row: &WorkspaceRow,
        key: &RolloutKey,
        what: &str,
        state: &State,
    ) {
        let column = state.rollouts.describe(key, what);
        // Rewritten when the rollout, its state or its wave changes, not at
        // each replace done elsewhere (thousands of waiting rows would be
        // written at every one): the counts are as of the wave's start.
        let same = |old: &serde_json::Value| {
            ["runtime", "track", "to", "state", "wave"]
                .iter()
                .all(|k| old[*k] == column[*k])
        };
        if row.rollout.as_ref().is_some_and(same) {
            return;
        }
        if let Err(error) = desired::write_rollout(&self.pool, lease, row.id, &column).await {
            tracing::warn!(workspace = %row.id, %error, "writing the rollout column failed");
        }
    }
}
