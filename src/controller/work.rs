//! Carrying out one workspace's plan: its actions in order through the
//! executor, the restore path when a step of a replace fails, then the
//! row's status and one event per action taken.

use sqlx::PgPool;
use tokio::sync::watch;

use crate::act::{ActError, Executor};
use crate::desired::{self, Event, Lease};
use crate::metrics::Metrics;
use crate::model::{
    ContainerSpec, ImageRef, ImageSource, ObservedContainer, Reason, ResolvedImage, WorkspaceId,
    WorkspaceRow,
};
use crate::observed::Observed;
use crate::plan::{Action, Op, Phase, Plan};

use super::cut_short::CutShort;
use super::row_status::trouble_event;

mod steps;

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
    let pass = steps::Pass {
        id: work.plan.id,
        held: held.clone(),
        executor,
        pool,
        lease,
        metrics,
        observed,
        cut,
    };
    let mut done = crate::act::fenced(fence, steps::steps(&pass, work, &mut events)).await;
    if !events.is_empty() {
        done.unrecorded = Some((held, events));
    }
    done
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
