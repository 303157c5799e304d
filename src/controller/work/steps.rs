//! The steps of one pass, in order: the row told of a long image step,
//! the plan's actions each on the trail before the next, the old container
//! put back when a step of a replace fails, and the status they end in
//! written with the last events.

use std::time::Instant;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::act::{ActError, Executor, Outcome, Run};
use crate::desired::{self, Event, Lease};
use crate::metrics::Metrics;
use crate::model::{
    ContainerSpec, ImageSource, ObservedContainer, Reason, ResolvedImage, WorkspaceId, WorkspaceRow,
};
use crate::observed::Observed;
use crate::plan::{Action, Op, StatusUpdate};

use super::super::cut_short::CutShort;
use super::super::row_status::{status_write, trouble_event, with_url};
use super::{
    Done, Failed, Work, cut_short_event, event, phase, record, record_undo_first, volume_gone,
};

/// What the steps of one pass share: the host they act for, the lease
/// they act under and the parts they act through.
pub(super) struct Pass<'a> {
    pub(super) id: WorkspaceId,
    pub(super) held: Lease,
    pub(super) executor: &'a Executor,
    pub(super) pool: &'a PgPool,
    pub(super) lease: &'a watch::Receiver<Option<Lease>>,
    pub(super) metrics: &'a Metrics,
    pub(super) observed: &'a Observed,
    pub(super) cut: &'a CutShort,
}

/// The steps of [`carry_out`](super::carry_out) for `work`, under the
/// lease `pass` holds; `events` ends with those not recorded.
pub(super) async fn steps(pass: &Pass<'_>, work: Work, events: &mut Vec<Event>) -> Done {
    let Work {
        plan,
        row,
        spec,
        current,
        lease: _,
        rollout,
    } = work;
    let pool = pass.pool;
    let mut done = Done {
        id: pass.id,
        plan,
        images: Vec::new(),
        failure: None,
        hash: spec.as_ref().map(|s| s.hash.clone()),
        lost_lease: false,
        write_error: None,
        built_for: std::time::Duration::ZERO,
        row: row.clone(),
        unrecorded: None,
    };
    pass.announce(
        row.as_ref(),
        spec.as_ref(),
        current.as_ref(),
        rollout.as_ref(),
        &done,
    )
    .await;
    let still = pass.still_held();
    let Some(trouble_recorded) =
        record_undo_first(pool, &pass.held, &row, rollout.as_ref(), &done, still).await
    else {
        done.lost_lease = true;
        return done;
    };
    let Some(waiting) = pass.act(row.as_ref(), &mut done, events).await else {
        done.lost_lease = true;
        return done;
    };
    let outcome = Settled {
        row,
        spec,
        current,
        rollout,
        trouble_recorded,
        waiting,
    };
    pass.conclude(outcome, done, events).await
}

/// What [`Pass::conclude`] writes the row's status from, besides the
/// pass's [`Done`].
struct Settled {
    row: Option<WorkspaceRow>,
    spec: Option<ContainerSpec>,
    current: Option<ObservedContainer>,
    rollout: Option<serde_json::Value>,
    /// The trouble the pass ends in is on the trail already.
    trouble_recorded: bool,
    /// The pass got as far as the new container's readiness wait.
    waiting: bool,
}

impl Pass<'_> {
    fn still_held(&self) -> bool {
        desired::still_holds(self.lease, &self.held)
    }

    /// A pull or a build can take minutes: the row says so while it runs.
    /// A retry of the same spec after a failure keeps showing the failure
    /// (the status table's "retrying with backoff"; `change_blocked` for a
    /// replace), so a row does not flap at each retry; a changed spec is a
    /// new attempt and says so.
    async fn announce(
        &self,
        row: Option<&WorkspaceRow>,
        spec: Option<&ContainerSpec>,
        current: Option<&ObservedContainer>,
        rollout: Option<&serde_json::Value>,
        done: &Done,
    ) {
        let retry = done.plan.memory.failure.as_ref().map(|f| &f.hash) == done.hash.as_ref()
            && done.hash.is_some();
        let (Some(row), Some(update), Some(Op::EnsureImage { .. })) = (
            row,
            &done.plan.status,
            done.plan.actions.first().map(|a| &a.op),
        ) else {
            return;
        };
        if retry || !self.still_held() {
            return;
        }
        let early = status_write(row, update, current, false, rollout.cloned());
        let early = with_url(early, self.executor, spec).await;
        if let Err(e) = desired::write_status(self.pool, &self.held, &early).await {
            tracing::warn!(workspace = %self.id, error = %e, "writing the status before the image step failed");
        }
    }

    /// Carries out the plan's actions in order, each on the trail before
    /// the next starts, until one fails (then the restore runs) or the
    /// readiness wait ends the pass. Whether the pass reached that wait;
    /// `None` when the lease went.
    async fn act(
        &self,
        row: Option<&WorkspaceRow>,
        done: &mut Done,
        events: &mut Vec<Event>,
    ) -> Option<bool> {
        let id = self.id;
        let mut run = Run::default();
        let actions = done.plan.actions.clone();
        for (index, action) in actions.iter().enumerate() {
            if !self.still_held() {
                return None;
            }
            // What is done so far is on record before the next step starts:
            // a berth that dies mid-pass leaves its trail.
            record(self.pool, &self.held, events, done).await;
            // The record may have waited on a stalled database for seconds:
            // the lease is asked again right before the engine is.
            if done.lost_lease || !self.still_held() {
                return None;
            }
            let started = Instant::now();
            // A step that changes the host is on the trail even when berth
            // stops before it ends; a check (a readiness wait) is not.
            let check = matches!(action.op, Op::WaitReady { .. } | Op::Preflight { .. });
            let under_way = self
                .cut
                .step((!check).then(|| (self.held.clone(), cut_short_event(id, action))));
            let result = self.executor.apply(&action.op, &mut run).await;
            under_way.ended();
            if let Err(error @ ActError::Fenced { .. }) = &result {
                // Asked again right before the change went out (the step's
                // inspect may have waited through a freeze): nothing was sent.
                tracing::warn!(workspace = %id, action = %action, %error, "step stopped");
                return None;
            }
            let label = if result.is_ok() { "success" } else { "error" };
            self.metrics
                .docker_actions_total
                .with_label_values(&[action.op.name(), label])
                .inc();
            let took_ms = started.elapsed().as_millis() as u64;
            // What changed the host is on the log at its default level; the
            // checks around the changes are not.
            if check {
                tracing::debug!(workspace = %id, action = %action, took_ms, ok = result.is_ok(), "action");
            } else {
                tracing::info!(workspace = %id, action = %action, took_ms, ok = result.is_ok(), "action");
            }
            match result {
                Ok(Outcome::Image(ensured)) => {
                    if let Op::EnsureImage {
                        image,
                        source,
                        known: planned,
                        ..
                    } = &action.op
                    {
                        if matches!(source, ImageSource::LocalBuild { .. }) {
                            done.built_for = started.elapsed();
                        }
                        let runtime = row.map(|r| r.runtime.as_str());
                        super::super::retention::record_ensured(
                            self.pool, &self.held, runtime, source, &ensured,
                        )
                        .await;
                        let known = ResolvedImage {
                            digest: ensured.digest,
                            id: Some(ensured.id),
                        };
                        done.images.push((image.clone(), planned.clone(), known));
                    }
                    events.push(event(id, action, Ok(()), None));
                }
                // Readiness is judged by the next pass, which the plan
                // requeues: the pass ends here.
                Ok(Outcome::WaitReady { .. }) => return Some(true),
                // The op addressed a new container this pass did not make:
                // nothing happened, and the trail does not say it did.
                Ok(Outcome::Skipped) => {}
                Ok(Outcome::VolumeMade) => {
                    let mut made = event(id, action, Ok(()), None);
                    made.detail["made"] = serde_json::Value::Bool(true);
                    events.push(made);
                    if let Some(note) = volume_gone(row, action, &actions, &done.plan.notes) {
                        tracing::warn!(workspace = %id, "{note}");
                        events.push(Event {
                            workspace: id,
                            action: "note".into(),
                            reason: note,
                            detail: serde_json::json!({}),
                            at: chrono::Utc::now(),
                        });
                    }
                }
                Ok(_) => {
                    let cause = done.plan.status.as_ref().and_then(|s| s.detail.as_deref());
                    events.push(event(id, action, Ok(()), cause));
                }
                Err(error) => {
                    events.push(event(id, action, Err(&error), None));
                    let restored = match done.plan.restore.clone() {
                        Some(restore) if index >= restore.from => {
                            self.put_back(&restore, action, &error, &mut run, events)
                                .await
                        }
                        _ => false,
                    };
                    tracing::warn!(workspace = %id, action = %action, %error, restored, "action failed");
                    done.failure = Some(Failed {
                        error,
                        phase: phase(&action.op),
                        restored,
                    });
                    break;
                }
            }
        }
        Some(false)
    }

    /// The restore path after `failed` failed part way through a replace:
    /// the old container back under its name. Whether it is back (every
    /// step ran, and there was an old container).
    async fn put_back(
        &self,
        restore: &crate::plan::Restore,
        failed: &Action,
        error: &ActError,
        run: &mut Run,
        events: &mut Vec<Event>,
    ) -> bool {
        for step in &restore.actions {
            // The host's new holder finishes or undoes the replace from
            // what it observes: this instance changes nothing more.
            if !self.still_held() {
                return false;
            }
            let result = self.executor.apply(&step.op, run).await;
            match result {
                Ok(Outcome::Skipped) => continue,
                Err(ActError::Fenced { .. }) => return false,
                _ => {}
            }
            let cause = format!("{} failed: {error}", failed.op.name());
            events.push(event(
                self.id,
                step,
                result.as_ref().map(|_| ()),
                Some(&cause),
            ));
        }
        restore.previous.is_some()
    }

    /// Refreshes the observed container, then writes the row's status
    /// with the pass's last events (together, so the trail and the row
    /// agree).
    async fn conclude(&self, outcome: Settled, mut done: Done, events: &mut Vec<Event>) -> Done {
        let id = self.id;
        // The next pass plans on what this one did, not on events still on
        // their way.
        if !done.plan.actions.is_empty()
            && let Err(error) = crate::observed::sync_workspace(
                self.executor.docker(),
                self.observed,
                self.executor.host_id(),
                id,
            )
            .await
        {
            tracing::warn!(workspace = %id, %error, "refreshing the observed containers failed");
        }
        if !self.still_held() {
            done.lost_lease = true;
            return done;
        }
        let Settled {
            row,
            spec,
            current,
            rollout,
            trouble_recorded,
            waiting,
        } = outcome;
        if done.failure.is_none()
            && !trouble_recorded
            && let (Some(row), Some(update)) = (&row, &done.plan.status)
            && let Some(event) = trouble_event(row, update, &done.plan.memory, rollout.as_ref())
        {
            events.push(event);
        }
        // After a failure the status comes from the next (planning) pass,
        // which sees the failure in memory.
        let Some((row, update)) = row
            .as_ref()
            .zip(done.plan.status.as_ref())
            .filter(|_| done.failure.is_none())
        else {
            record(self.pool, &self.held, events, &mut done).await;
            return done;
        };
        // What runs now (the cache was refreshed after the actions); the
        // container is the truth for the image columns.
        let now_running = if done.plan.actions.is_empty() {
            current
        } else {
            self.observed.main_container(id, &self.held.host)
        };
        // A change not acted on (paused, waiting for its wave) is not
        // observed.
        let converged = done.plan.actions.is_empty() && !update.unobserved;
        // The row says where the pass got: past the pull or build, to the
        // wait for readiness, not the phase it began in.
        let reached = StatusUpdate::reason(Reason::WaitingReady, None);
        let update = if waiting { &reached } else { update };
        let write = status_write(row, update, now_running.as_ref(), converged, rollout);
        let write = with_url(write, self.executor, spec.as_ref()).await;
        // The trail's last steps and the status they end in land together.
        let landed = if events.is_empty() {
            desired::write_status(self.pool, &self.held, &write)
                .await
                .map(|written| (desired::Written::Yes, written))
        } else {
            desired::record_with_status(self.pool, &self.held, events, &write).await
        };
        match landed {
            Ok((recorded, written)) => {
                if recorded == desired::Written::Yes {
                    events.clear();
                }
                if recorded == desired::Written::Refused || written == desired::Written::Refused {
                    done.lost_lease = true;
                }
            }
            Err(e) => done.write_error = Some(format!("status: {e}")),
        }
        // The steps not recorded go on record later, alone; the status
        // event does not: without the row write it describes it would tell
        // a restarted berth what the row does not (the next pass makes it
        // again with its status).
        events.retain(|e| e.action != "status");
        done
    }
}
