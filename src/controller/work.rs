//! Carrying out one workspace's plan: its actions in order through the
//! executor, the restore path when a step of a replace fails, then the
//! row's status and one event per action taken.

use std::time::Instant;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::act::{ActError, Executor, Outcome, Run};
use crate::desired::{self, Event, Lease};
use crate::metrics::Metrics;
use crate::model::{
    ContainerSpec, ImageRef, ImageSource, ObservedContainer, Reason, ResolvedImage, WorkspaceId,
    WorkspaceRow,
};
use crate::observed::Observed;
use crate::plan::{Action, Op, Phase, Plan, StatusUpdate};

use super::cut_short::CutShort;
use super::row_status::{status_write, trouble_event, with_url};

/// Everything one pass needs, moved into its task.
#[derive(Debug)]
pub struct Work {
    pub plan: Plan,
    pub row: Option<WorkspaceRow>,
    /// The spec the plan was made for (for the URL and the hash).
    pub spec: Option<ContainerSpec>,
    /// The workspace's container as observed, for the status columns.
    pub current: Option<ObservedContainer>,
    pub lease: Lease,
    /// The `rollout` column: the pin rollout this pass's replace belongs
    /// to, or `None` (which clears it).
    pub rollout: Option<serde_json::Value>,
}

/// How a pass ended.
#[derive(Debug)]
pub struct Done {
    pub id: WorkspaceId,
    pub plan: Plan,
    /// Images made local: the reference the plan asked for, what the plan
    /// knew of it, and what the pass found.
    pub images: Vec<(ImageRef, ResolvedImage, ResolvedImage)>,
    pub failure: Option<Failed>,
    /// The spec hash the plan worked towards.
    pub hash: Option<String>,
    /// The lease was lost before or during the pass: nothing more was done.
    pub lost_lease: bool,
    /// A status write or event write failed (the database is the problem).
    pub write_error: Option<String>,
    /// How long the pass waited for a local build it then used (its own,
    /// or another pass's of the same image).
    pub built_for: std::time::Duration,
    /// The row as the pass planned on it (a reread meanwhile may already
    /// show what the pass wrote).
    pub row: Option<WorkspaceRow>,
    /// Events of steps taken that the database did not take (it went away
    /// mid-pass), with the lease the pass held: the controller writes them
    /// once that lease holds again.
    pub unrecorded: Option<(Lease, Vec<Event>)>,
}

#[cfg(test)]
impl Failed {
    pub(crate) fn new(error: ActError, phase: Phase, restored: bool) -> Self {
        Failed {
            error,
            phase,
            restored,
        }
    }
}

/// An action that failed, and what the restore path did.
#[derive(Debug)]
pub struct Failed {
    pub error: ActError,
    pub phase: Phase,
    /// The restore path ran (a replace was undone).
    pub restored: bool,
}

/// The phase an op belongs to, for `provision_timeout` and failures.
fn phase(op: &Op) -> Phase {
    match op {
        Op::EnsureImage {
            source: ImageSource::LocalBuild { .. },
            ..
        } => Phase::Build,
        Op::EnsureImage { .. } => Phase::Pull,
        Op::EnsureVolume(_)
        | Op::Preflight { .. }
        | Op::Create(_)
        | Op::WriteFiles { .. }
        | Op::Rename { .. } => Phase::Create,
        Op::WaitReady { .. } => Phase::Readiness,
        _ => Phase::Start,
    }
}

/// Writes `events` (what the pass did since the last write) and clears
/// them; kept when the database did not answer, or refused them because
/// the lease moved on meanwhile (they are steps really taken: the backlog
/// records them late).
async fn record(pool: &PgPool, held: &Lease, events: &mut Vec<Event>, done: &mut Done) {
    if events.is_empty() {
        return;
    }
    match desired::record_events(pool, held, events).await {
        Ok(desired::Written::Yes) => events.clear(),
        Ok(desired::Written::Refused) => done.lost_lease = true,
        Err(e) => done.write_error = Some(format!("events: {e}")),
    }
}

/// The note for a volume a create had to make anew although the row had
/// a container (the volume was removed by hand or pruned: the workspace's
/// data is gone), unless the pass's plan said so already (the planner
/// notes the volumes it sees gone; this catches those it still saw).
pub(super) fn volume_gone(
    row: Option<&WorkspaceRow>,
    action: &Action,
    actions: &[Action],
    notes: &[String],
) -> Option<String> {
    let Op::EnsureVolume(v) = &action.op else {
        return None;
    };
    let had_container = row.is_some_and(|r| r.container_id.is_some());
    let noted = notes.iter().any(|n| n.contains(v.name.as_str()));
    // A volume the plan removed itself (a session discard) is made anew
    // on purpose.
    let discarded = actions
        .iter()
        .any(|a| matches!(&a.op, Op::RemoveVolume { name, .. } if *name == v.name));
    (had_container && action.why == crate::plan::Why::Missing && !noted && !discarded)
        .then(|| crate::plan::volumes_gone_note(&[v.name.as_str()]))
}

/// The event of one step. A step that puts the previous container back
/// carries `cause`, what made berth undo the change: the trail says why,
/// not only that.
fn event(
    id: WorkspaceId,
    action: &Action,
    result: Result<(), &ActError>,
    cause: Option<&str>,
) -> Event {
    let mut detail = serde_json::json!({"op": action.op.name()});
    if action.why == crate::plan::Why::Restore
        && let Some(cause) = cause
    {
        detail["cause"] = serde_json::Value::String(cause.to_string());
    }
    if let Some(target) = action.op.target() {
        detail["target"] = serde_json::Value::String(target.to_string());
    }
    if let Some(object) = action.op.object() {
        detail["object"] = serde_json::Value::String(object);
    }
    if let Err(e) = result {
        detail["error"] = serde_json::Value::String(e.to_string());
    }
    Event {
        workspace: id,
        action: action.op.name().to_string(),
        reason: action.why.to_string(),
        detail,
        at: chrono::Utc::now(),
    }
}

/// The event of a step berth sent and did not see end: it stopped first,
/// so whether the step took effect is not known.
fn cut_short_event(id: WorkspaceId, action: &Action) -> Event {
    let mut e = event(id, action, Ok(()), None);
    e.detail["cut_short"] = serde_json::Value::Bool(true);
    e.detail["error"] = serde_json::Value::String(
        "berth stopped (its shutdown grace was over) while this step was under way: whether it took effect is not known; the next berth plans from what it finds"
            .into(),
    );
    e
}

/// Runs `work` to its end. Mutations stop as soon as `lease` says this
/// instance no longer holds the host. A pass dropped mid-step leaves that
/// step's event in `cut`.
#[allow(clippy::too_many_arguments)]
pub async fn carry_out(
    work: Work,
    executor: &Executor,
    pool: &PgPool,
    lease: &watch::Receiver<Option<Lease>>,
    metrics: &Metrics,
    observed: &Observed,
    cut: &CutShort,
) -> Done {
    let held = work.lease.clone();
    let mut events = Vec::new();
    let fence = {
        let (lease, held) = (lease.clone(), held.clone());
        std::sync::Arc::new(move || desired::still_holds(&lease, &held))
    };
    let mut done = crate::act::fenced(
        fence,
        steps(
            work,
            executor,
            pool,
            lease,
            metrics,
            observed,
            &mut events,
            cut,
        ),
    )
    .await;
    if !events.is_empty() {
        done.unrecorded = Some((held, events));
    }
    done
}

/// What the steps of one pass share: the host they act for, the lease
/// they act under and the parts they act through.
struct Pass<'a> {
    id: WorkspaceId,
    held: Lease,
    executor: &'a Executor,
    pool: &'a PgPool,
    lease: &'a watch::Receiver<Option<Lease>>,
    metrics: &'a Metrics,
    observed: &'a Observed,
    cut: &'a CutShort,
}

/// The steps of [`carry_out`]; `events` ends with those not recorded.
#[allow(clippy::too_many_arguments)]
async fn steps(
    work: Work,
    executor: &Executor,
    pool: &PgPool,
    lease: &watch::Receiver<Option<Lease>>,
    metrics: &Metrics,
    observed: &Observed,
    events: &mut Vec<Event>,
    cut: &CutShort,
) -> Done {
    let Work {
        plan,
        row,
        spec,
        current,
        lease: held,
        rollout,
    } = work;
    let pass = Pass {
        id: plan.id,
        held,
        executor,
        pool,
        lease,
        metrics,
        observed,
        cut,
    };
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
                        super::retention::record_ensured(
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

/// A change undone for its spec or image goes on the trail before the
/// first step that puts the old container back: a berth that dies part
/// way through the restore leaves a record a restarted berth reads as the
/// failure it was (it does not try the change again, and a rollout counts
/// it), though the row still says provisioning. The row says rolled_back
/// once the old container is back. Whether the event was recorded; `None`
/// when the lease no longer holds.
async fn record_undo_first(
    pool: &PgPool,
    held: &Lease,
    row: &Option<WorkspaceRow>,
    rollout: Option<&serde_json::Value>,
    done: &Done,
    holding: bool,
) -> Option<bool> {
    let (Some(row), Some(update)) = (row, &done.plan.status) else {
        return Some(false);
    };
    let undo = update.reason == Some(Reason::RolledBack)
        && done
            .plan
            .actions
            .iter()
            .any(|a| a.why == crate::plan::Why::Restore)
        && done.hash.is_some()
        && done.plan.memory.rolled_back_hash == done.hash;
    if !undo || !holding {
        return Some(false);
    }
    let Some(event) = trouble_event(row, update, &done.plan.memory, rollout) else {
        return Some(false);
    };
    match desired::record_events(pool, held, std::slice::from_ref(&event)).await {
        Ok(desired::Written::Yes) => Some(true),
        Ok(desired::Written::Refused) => None,
        Err(e) => {
            tracing::warn!(workspace = %done.id, error = %e, "recording the undone change before the restore failed");
            Some(false)
        }
    }
}
