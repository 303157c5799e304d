//! Taking a finished pass's outcome: the image it made local, its place
//! in a rollout (see `halt`), the key's backoff and memory, and the
//! metrics.

use chrono::Utc;

use super::{Controller, Done, State, WorkQueue};
use crate::model::{Status, WorkspaceId};
use crate::plan::Failure;

impl Controller {
    /// Takes a finished pass's outcome into memory, the queue and the
    /// rollouts.
    pub(super) async fn finish(
        &self,
        state: &mut State,
        queue: &mut WorkQueue<WorkspaceId>,
        mut done: Done,
    ) {
        let id = done.id;
        queue.done(&id);
        if let Some((lease, events)) = done.unrecorded.take() {
            state.backlog.keep(&lease, events);
        }
        // What the pass made local is known first, so that a halt the pass
        // causes puts the previous image back over it, not the reverse. It
        // is taken only over what the pass was planned with: a refresh that
        // landed during a long pull knows better.
        for (image, planned, known) in &done.images {
            let key = image.as_str().to_string();
            if state.images.get(&key).is_some_and(|now| now != planned) {
                continue;
            }
            let target = known
                .digest
                .as_ref()
                .map(|d| d.as_str().to_string())
                .or_else(|| known.id.clone());
            if target.is_some() && state.held_back.get(&key) == target.as_ref() {
                continue;
            }
            state.images.insert(key, known.clone());
        }
        self.follow_rollouts(state, &done).await;
        for waiting in state.rollouts.take_wakeups() {
            queue.add(waiting);
        }
        if done.failure.is_some() || done.lost_lease {
            undo_restart_mark(state.memory.entry(id).or_default(), &done.plan);
        }
        let was_timed_out = done.row.as_ref().and_then(|r| r.status_reason)
            == Some(crate::model::Reason::ProvisionTimeout);
        if done.lost_lease {
            // Looked at again soon: a refused write whose lease still holds
            // (the row moved, say) should not wait for the next resync.
            queue.add_after(id, std::time::Duration::from_secs(2));
            return;
        }
        self.time_convergence(state, &done);
        if !done.built_for.is_zero()
            && let (Some(row), Some(memory)) = (done.row.as_ref(), state.memory.get_mut(&id))
        {
            // The provision timeout counts provisioning, not a build of the
            // image (which has deadlines of its own: a cold build takes
            // longer than a workspace may take to come up).
            let since = memory
                .provisioning_since
                .map_or(row.desired_changed_at, |s| s.max(row.desired_changed_at));
            memory.provisioning_since =
                Some(since + chrono::TimeDelta::from_std(done.built_for).unwrap_or_default());
        }
        let memory = state.memory.entry(id).or_default();
        let result = match (&done.failure, &done.write_error) {
            (Some(failed), _) => {
                let delay = queue.retry(id);
                self.metrics.workqueue_retries_total.inc();
                self.metrics
                    .reconcile_errors_total
                    .with_label_values(&[failed.error.kind()])
                    .inc();
                let retry_at = Utc::now() + chrono::TimeDelta::from_std(delay).unwrap_or_default();
                let image = done
                    .images
                    .last()
                    .and_then(|(_, _, known)| crate::plan::image_identity(known));
                if remember(memory, failed, done.hash.as_deref(), image, retry_at) {
                    // Plan again at once: that pass only reports the
                    // failure on the row; the retry waits for the backoff.
                    queue.add(id);
                }
                if failed.restored {
                    self.metrics
                        .rollbacks_total
                        .with_label_values(&[failed.phase.to_string().as_str()])
                        .inc();
                }
                "error"
            }
            (None, Some(error)) => {
                tracing::error!(workspace = %id, %error, "writing the outcome failed");
                queue.retry(id);
                self.metrics.workqueue_retries_total.inc();
                self.metrics
                    .reconcile_errors_total
                    .with_label_values(&["database"])
                    .inc();
                "error"
            }
            (None, None) => {
                if super::halt::undone_for_readiness(&done) {
                    self.metrics
                        .rollbacks_total
                        .with_label_values(&["readiness"])
                        .inc();
                }
                // A pass that only reported (a failure backing off, or one
                // given up on at the provision timeout) is no success: the
                // failure stays, and its reason with it, until a pass acts
                // and succeeds or the spec it was for is gone.
                let reported_only = done.plan.actions.is_empty()
                    && memory
                        .failure
                        .as_ref()
                        .is_some_and(|f| Some(&f.hash) == done.hash.as_ref());
                if !reported_only {
                    queue.forget(&id);
                    memory.failure = None;
                }
                if done.plan.requeue_after.is_some() {
                    "requeue"
                } else {
                    "success"
                }
            }
        };
        if let Some(after) = done.plan.requeue_after {
            queue.add_after(id, after);
        }
        self.metrics
            .reconcile_total
            .with_label_values(&[result])
            .inc();
        if let Some(update) = &done.plan.status
            && update.status == Status::Failed
            && update.reason == Some(crate::model::Reason::ProvisionTimeout)
            && !was_timed_out
        {
            // Counted when a row turns provision_timeout.
            let phase = update
                .detail
                .as_deref()
                .and_then(|d| d.split_whitespace().find_map(phase_word))
                .unwrap_or("readiness");
            self.metrics
                .provision_timeouts_total
                .with_label_values(&[phase])
                .inc();
        }
    }
}

/// The image reference a failed pass found stale (the digest its tag
/// named is gone from the registry), to resolve again at once; the pass's
/// own retry waits for its backoff as usual.
pub(super) fn stale_reference(
    done: &Done,
) -> Option<(crate::model::ImageRef, crate::model::ImageSource)> {
    let Some(crate::act::ActError::DigestGone { image, .. }) =
        done.failure.as_ref().map(|f| &f.error)
    else {
        return None;
    };
    done.plan.actions.iter().find_map(|a| match &a.op {
        crate::plan::Op::EnsureImage {
            image: i, source, ..
        } if i.as_str() == image => Some((i.clone(), source.clone())),
        _ => None,
    })
}

/// A pass that failed or lost the lease may not have done what its plan
/// did for a `restart_epoch` bump (rewrite the files, restart): the bump is
/// wanted again.
fn undo_restart_mark(memory: &mut crate::plan::Memory, plan: &crate::plan::Plan) {
    if plan
        .actions
        .iter()
        .any(|a| matches!(a.why, crate::plan::Why::RestartEpoch { .. }))
    {
        memory.restarted_epoch = None;
    }
}

/// Takes a failed pass into the key's memory; true when the planner now
/// has a failure to report. Every failure but a stale plan (the object
/// gone or in the way: planned again at once) is kept with its retry time,
/// so every trigger honours the backoff and the row says what failed: its
/// reason, or for an engine error or a deadline the phase it stopped in.
/// A replace undone for a cause in the spec or the image is not tried
/// again until the spec changes; one undone for a transient cause is.
fn remember(
    memory: &mut crate::plan::Memory,
    failed: &super::Failed,
    hash: Option<&str>,
    image: Option<String>,
    retry_at: chrono::DateTime<Utc>,
) -> bool {
    let Some(hash) = hash else {
        return false;
    };
    if failed.restored && !failed.error.is_transient() {
        memory.record_rollback(hash, image, failed.error.to_string(), Utc::now());
    }
    if failed.error.needs_replan() {
        return false;
    }
    memory.record_failure(Failure {
        reason: failed
            .error
            .reason()
            .unwrap_or_else(|| failed.phase.reason()),
        phase: failed.phase,
        message: failed.error.to_string(),
        retry_at,
        hash: hash.to_string(),
    });
    true
}

impl Controller {
    /// `time_to_converge_seconds`: a pass that ended without a failure
    /// showing the row in its desired state (online, stopped, removed; not
    /// rolled back) for a generation not yet reached observes the time
    /// since the desired change, once. A row that already showed it (a
    /// restarted berth) is taken as reached without a sample; one whose
    /// change waits (its generation unobserved) has not reached it.
    fn time_convergence(&self, state: &mut State, done: &Done) {
        let (Some(update), Some(row)) = (&done.plan.status, done.row.as_ref()) else {
            return;
        };
        let reached = matches!(
            update.status,
            Status::Online | Status::Stopped | Status::Removed
        ) && update.reason != Some(crate::model::Reason::RolledBack)
            && !update.unobserved;
        if !reached || done.failure.is_some() || done.write_error.is_some() || done.lost_lease {
            return;
        }
        let memory = state.memory.entry(done.id).or_default();
        if memory.reached_generation == Some(row.generation) {
            return;
        }
        memory.reached_generation = Some(row.generation);
        let shown = row.status == Some(update.status) && row.observed_generation == row.generation;
        if !shown {
            let took = (Utc::now() - row.desired_changed_at)
                .to_std()
                .unwrap_or_default();
            self.metrics
                .time_to_converge_seconds
                .observe(took.as_secs_f64());
        }
    }
}

fn phase_word(word: &str) -> Option<&'static str> {
    let word = word.trim_matches(|c: char| !c.is_ascii_alphabetic());
    ["pull", "build", "create", "start", "readiness"]
        .into_iter()
        .find(|p| *p == word)
}

#[cfg(test)]
mod tests {
    use super::super::Failed;
    use super::*;
    use crate::act::{ActError, Object};
    use crate::docker::DockerError;
    use crate::model::Reason;
    use crate::plan::{Memory, Phase};

    #[test]
    fn a_failure_without_a_reason_still_backs_off_and_names_its_phase() {
        let mut memory = Memory::default();
        let engine = ActError::docker(
            "create",
            DockerError::Server {
                status: 500,
                message: "boom".into(),
            },
        );
        assert!(remember(
            &mut memory,
            &Failed::new(engine, Phase::Create, false),
            Some("h1"),
            None,
            Utc::now()
        ));
        let kept = memory.failure.as_ref().expect("a failure to report");
        assert_eq!((kept.reason, kept.phase), (Reason::Creating, Phase::Create));
        assert!(kept.message.contains("boom"), "{}", kept.message);
        assert_eq!(memory.rolled_back_hash, None);
    }

    #[test]
    fn a_replace_undone_by_a_transient_error_is_tried_again_one_undone_by_its_image_is_not() {
        let mut memory = Memory::default();
        let transient = ActError::Timeout {
            what: "pull",
            after: std::time::Duration::from_secs(1),
        };
        remember(
            &mut memory,
            &Failed::new(transient, Phase::Start, true),
            Some("h1"),
            None,
            Utc::now(),
        );
        assert_eq!(memory.rolled_back_hash, None, "tried again after backoff");
        let refused = ActError::StartFailed {
            container: "c".into(),
            message: "no such file".into(),
        };
        remember(
            &mut memory,
            &Failed::new(refused, Phase::Start, true),
            Some("h1"),
            None,
            Utc::now(),
        );
        assert_eq!(memory.rolled_back_hash.as_deref(), Some("h1"));
        assert_eq!(memory.failure.unwrap().reason, Reason::StartFailed);
    }

    #[test]
    fn a_restart_that_did_not_happen_is_wanted_again() {
        let mut memory = Memory {
            restarted_epoch: Some(3),
            ..Memory::default()
        };
        let mut plan = crate::plan::Plan::new(
            crate::model::WorkspaceId(uuid::Uuid::nil()),
            Memory::default(),
        );
        undo_restart_mark(&mut memory, &plan);
        assert_eq!(memory.restarted_epoch, Some(3), "no restart planned");
        plan.push(
            crate::plan::Op::Restart {
                target: crate::plan::Target::Id("c".into()),
                timeout: std::time::Duration::from_secs(1),
            },
            crate::plan::Why::RestartEpoch { from: 2, to: 3 },
        );
        undo_restart_mark(&mut memory, &plan);
        assert_eq!(memory.restarted_epoch, None);
    }

    #[test]
    fn a_stale_plan_is_planned_again_without_a_failure() {
        let mut memory = Memory::default();
        let gone = ActError::Gone {
            object: Object::Container,
            name: "c".into(),
        };
        assert!(!remember(
            &mut memory,
            &Failed::new(gone, Phase::Start, false),
            Some("h1"),
            None,
            Utc::now()
        ));
        assert_eq!(memory.failure, None);
    }
}
