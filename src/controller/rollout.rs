//! Pin rollouts in waves (DESIGN §2 rule 11).
//!
//! A pin edit that moves the image of several workspaces is one rollout,
//! keyed by (runtime, ring, new digest). It waits out `BERTH_PIN_DEBOUNCE`
//! (a pin that does not hold replaces nothing), lets the canary count of
//! replaces run alone, then at most max-parallel at a time, each slot freed
//! only when a replace finished (ready) or failed. A started image that
//! fails readiness is a failure; a pull that fails is not (nothing was
//! touched). Failures above the ratio halt the rollout: nothing more
//! starts, and the controller writes the previous digest back into the
//! pin, which replaces the changed workspaces back onto it.
//!
//! The state lives in the controller's memory; after a restart a rollout
//! starts counting again, which only makes it more careful.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Rollout as Limits;
use crate::model::{Digest, ImageSource, WorkspaceId};
use crate::plan::{Change, Op, Plan, Why};

/// (runtime, ring, target digest).
pub type RolloutKey = (String, String, Digest);

/// What a rollout has done so far.
#[derive(Debug)]
pub struct Rollout {
    pub from: Option<Digest>,
    pub seen_at: Instant,
    pub in_progress: BTreeSet<WorkspaceId>,
    pub done: BTreeSet<WorkspaceId>,
    pub failed: BTreeSet<WorkspaceId>,
    pub halted: bool,
    pub complete: bool,
}

/// The decision for one workspace's pin replace this round.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    /// Start the replace now.
    Go,
    /// Not now: look again after this long.
    Wait(Duration),
    /// The rollout halted: never onto this digest.
    Halted,
}

/// The pin rollout a plan's replace belongs to, if it is one: the first
/// action replaces `runtime`'s container onto a pinned digest.
pub fn pin_replace(plan: &Plan, runtime: &str) -> Option<(RolloutKey, Option<Digest>)> {
    let first = plan.actions.first()?;
    let Why::Replace(Change::Digest { from, to }) = &first.why else {
        return None;
    };
    let spec = plan.actions.iter().find_map(|a| match &a.op {
        Op::Create(spec) => Some(spec),
        _ => None,
    })?;
    let ImageSource::Pinned { ring } = &spec.image_source else {
        return None;
    };
    Some((
        (runtime.to_string(), ring.clone(), to.clone()),
        from.clone(),
    ))
}

/// Every rollout the controller is carrying out.
#[derive(Debug, Default)]
pub struct Rollouts {
    pub by_key: BTreeMap<RolloutKey, Rollout>,
}

impl Rollouts {
    /// Whether `id` may start its replace for `key` now.
    pub fn gate(
        &mut self,
        key: &RolloutKey,
        from: Option<Digest>,
        id: WorkspaceId,
        limits: &Limits,
        debounce: Duration,
    ) -> Gate {
        let r = self.by_key.entry(key.clone()).or_insert_with(|| Rollout {
            from,
            seen_at: Instant::now(),
            in_progress: BTreeSet::new(),
            done: BTreeSet::new(),
            failed: BTreeSet::new(),
            halted: false,
            complete: false,
        });
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
        let slots = if (r.done.len() as u32) < limits.canary {
            limits.canary.saturating_sub(r.done.len() as u32)
        } else {
            limits.max_parallel
        } as usize;
        if r.in_progress.len() < slots {
            r.in_progress.insert(id);
            Gate::Go
        } else {
            Gate::Wait(Duration::from_secs(1))
        }
    }

    /// A replace of `id` finished ready.
    pub fn succeeded(&mut self, id: WorkspaceId) {
        for r in self.by_key.values_mut() {
            if r.in_progress.remove(&id) {
                r.done.insert(id);
            }
        }
    }

    /// A replace of `id` failed readiness (and was restored). Returns the
    /// rollouts this failure halts, with their counts, for the caller to
    /// write back.
    pub fn failed(
        &mut self,
        id: WorkspaceId,
        limits: &Limits,
    ) -> Vec<(RolloutKey, Option<Digest>, usize, usize)> {
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
                halts.push((key.clone(), r.from.clone(), r.failed.len(), tried));
            }
        }
        halts
    }

    /// A workspace whose replace did not start after all (a pull failed,
    /// the row changed): its slot is free again.
    pub fn release(&mut self, id: WorkspaceId) {
        for r in self.by_key.values_mut() {
            r.in_progress.remove(&id);
        }
    }

    /// Rollouts with work done, none in progress and none still wanted
    /// this round: complete (their digest is stable).
    pub fn completed(&mut self, wanted: &BTreeSet<RolloutKey>) -> Vec<RolloutKey> {
        let mut out = Vec::new();
        for (key, r) in self.by_key.iter_mut() {
            if !r.complete
                && !r.halted
                && !r.done.is_empty()
                && r.in_progress.is_empty()
                && !wanted.contains(key)
            {
                r.complete = true;
                out.push(key.clone());
            }
        }
        out
    }

    /// The `rollout` column for a workspace in a rollout.
    pub fn describe(&self, key: &RolloutKey, state: &str) -> serde_json::Value {
        let r = self.by_key.get(key);
        serde_json::json!({
            "runtime": key.0,
            "ring": key.1,
            "to": key.2.as_str(),
            "from": r.and_then(|r| r.from.as_ref()).map(Digest::as_str),
            "state": state,
            "done": r.map_or(0, |r| r.done.len()),
            "failed": r.map_or(0, |r| r.failed.len()),
            "in_progress": r.map_or(0, |r| r.in_progress.len()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RolloutKey {
        (
            "agent".into(),
            "stable".into(),
            Digest::parse(&format!("sha256:{}", "b".repeat(64))).unwrap(),
        )
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
    async fn the_canary_goes_alone_then_waves_of_max_parallel() {
        let mut r = Rollouts::default();
        let ws = ids(6);
        let gate = |r: &mut Rollouts, id| r.gate(&key(), None, id, &LIMITS, Duration::ZERO);
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
        r.succeeded(ws[1]);
        assert_eq!(gate(&mut r, ws[4]), Gate::Go);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_canary_halts_and_nothing_more_starts() {
        let mut r = Rollouts::default();
        let ws = ids(3);
        assert_eq!(
            r.gate(&key(), None, ws[0], &LIMITS, Duration::ZERO),
            Gate::Go
        );
        let halts = r.failed(ws[0], &LIMITS);
        assert_eq!(halts.len(), 1);
        assert_eq!((halts[0].2, halts[0].3), (1, 1));
        assert_eq!(
            r.gate(&key(), None, ws[1], &LIMITS, Duration::ZERO),
            Gate::Halted
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pin_must_hold_for_the_debounce_before_anything_starts() {
        let mut r = Rollouts::default();
        let id = ids(1)[0];
        let debounce = Duration::from_secs(5);
        assert_eq!(
            r.gate(&key(), None, id, &LIMITS, debounce),
            Gate::Wait(debounce)
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(r.gate(&key(), None, id, &LIMITS, debounce), Gate::Go);
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
        assert_eq!(
            r.gate(&key(), None, ws[0], &limits, Duration::ZERO),
            Gate::Go
        );
        r.succeeded(ws[0]);
        assert_eq!(
            r.gate(&key(), None, ws[1], &limits, Duration::ZERO),
            Gate::Go
        );
        assert!(
            r.failed(ws[1], &limits).is_empty(),
            "1 of 2 is not above 0.5"
        );
        assert_eq!(
            r.gate(&key(), None, ws[2], &limits, Duration::ZERO),
            Gate::Go
        );
        assert_eq!(r.failed(ws[2], &limits).len(), 1, "2 of 3 is");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rollout_completes_when_nothing_is_wanted_or_running() {
        let mut r = Rollouts::default();
        let id = ids(1)[0];
        r.gate(&key(), None, id, &LIMITS, Duration::ZERO);
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
