//! What a pass writes on its row: the status columns it ends in, with the
//! container's URL, and the `status` event of a row going into trouble.

use crate::act::Executor;
use crate::desired::{Event, StatusWrite};
use crate::model::{
    ContainerSpec, LABEL_IMAGE_DIGEST, ObservedContainer, Reason, Status, WorkspaceRow,
};
use crate::plan::StatusUpdate;

/// The event for a row going into trouble (`failed`, `degraded` or
/// `online/rolled_back`, or a refusal with a new cause): `berth events`
/// tells when the row stopped converging and why, which `last_error` (only
/// the latest) cannot. A row already showing that trouble gets none, so a
/// standing failure is on the trail once, not at every pass.
pub(super) fn trouble_event(
    row: &WorkspaceRow,
    update: &StatusUpdate,
    memory: &crate::plan::Memory,
    rollout: Option<&serde_json::Value>,
) -> Option<Event> {
    let undone = update.reason == Some(Reason::RolledBack);
    if !matches!(update.status, Status::Failed | Status::Degraded) && !undone {
        return None;
    }
    // A steady message (a refusal's, a change blocked by the row's own
    // fault) names its cause: a new one is a new cause. Other messages
    // count restarts or seconds.
    let same = row.status == Some(update.status)
        && row.status_reason == update.reason
        && (!update.steady || row.last_error == update.detail);
    if same {
        return None;
    }
    let shown = update.reason.map_or(update.status.to_string(), |r| {
        format!("{}/{r}", update.status)
    });
    let mut detail = serde_json::json!({"status": update.status.as_str()});
    if let Some(reason) = update.reason {
        detail["reason"] = reason.as_str().into();
    }
    if let Some(error) = &update.detail {
        detail["error"] = error.clone().into();
    }
    // The spec undone, so that a restarted berth (or another instance)
    // does not try it again before the row changes (see
    // `desired::rolled_back`).
    // It carries when the change was undone: the row may show it again
    // later (the spec undone wanted anew), and a rollout counts a failure
    // by when it happened, not when the row last said so.
    if undone && let Some(hash) = &memory.rolled_back_hash {
        detail["rolled_back"] = serde_json::json!({
            "hash": hash,
            "image": memory.rolled_back_image,
            "why": memory.rolled_back_why,
            "at": memory.rolled_back_at,
        });
        // The rollout the replace undone belonged to (its column: which,
        // and whether it counted the replace): a berth that takes the
        // rollout up counts this undo against it as that one did, and an
        // undo of another change (an env edit) against none.
        if let Some(column) = rollout.or(row.rollout.as_ref())
            && column["state"] == "replacing"
        {
            detail["rolled_back"]["rollout"] = column.clone();
        }
    }
    Some(Event {
        workspace: row.id,
        action: "status".into(),
        reason: shown,
        detail,
        at: chrono::Utc::now(),
    })
}

/// The status columns for `row` showing `update`, with `running` as the
/// workspace's container.
pub(super) fn status_write(
    row: &WorkspaceRow,
    update: &crate::plan::StatusUpdate,
    running: Option<&ObservedContainer>,
    converged: bool,
    rollout: Option<serde_json::Value>,
) -> StatusWrite {
    let removed = update.status == Status::Removed;
    let running = running.filter(|_| !removed);
    StatusWrite {
        id: row.id,
        status: update.status,
        reason: update.reason,
        container_id: running.map(|c| c.id.clone()),
        runtime_image_digest: running
            .and_then(|c| c.label(LABEL_IMAGE_DIGEST))
            .map(str::to_string),
        runtime_image_id: running.map(|c| c.image_id.clone()),
        // The URL the row shows for this very container, until
        // [`with_url`] reads it again from a spec.
        url: running
            .filter(|c| row.container_id.as_deref() == Some(c.id.as_str()))
            .and(row.url.clone()),
        observed_generation: if converged {
            row.generation
        } else {
            row.observed_generation
        },
        restart_count: running
            .map(|c| c.restart_count.min(i32::MAX as u32) as i32)
            .unwrap_or(0),
        last_error: update.detail.clone(),
        rollout,
    }
}

/// Fills the URL from the container's published port (or the spec's fixed
/// URL) while the status is one a client may reach, and clears it while
/// not. Without a spec (a row edited into one berth refuses, whose last
/// spec's container serves on) the URL stays the one the row shows for
/// that container.
pub(super) async fn with_url(
    mut w: StatusWrite,
    executor: &Executor,
    spec: Option<&ContainerSpec>,
) -> StatusWrite {
    let reachable = matches!(
        w.status,
        Status::Online | Status::Provisioning | Status::Degraded
    );
    if !reachable {
        w.url = None;
    } else if let (Some(c), Some(spec)) = (&w.container_id, spec) {
        w.url = executor.url(c, spec).await.ok().flatten();
    }
    w
}
