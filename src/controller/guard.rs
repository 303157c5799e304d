//! The delete guard's latch across passes and processes: taken up from
//! the trail at start, said in the log once per count, and written to the
//! trail when it holds (with the limit it tripped under) and when it lets
//! go, so a berth that starts or takes over next holds on where this one
//! was (the planner's `apply_delete_guard` decides each pass).

use chrono::{DateTime, Utc};

use super::{Controller, State};
use crate::desired::{self, Event, Lease};
use crate::model::WorkspaceId;
use crate::plan;

const RELEASED: &str = "delete guard released: none of the removals it withheld is wanted any more";
/// A workspace leaving a hold that goes on for others.
const PART: &str = "delete guard released this workspace: its removal is no longer wanted (its row is back); the guard still holds others";

/// The detail of a note event: a guard's hold carries its limit.
pub(super) fn note_detail(note: &str, limit: Option<usize>) -> serde_json::Value {
    match limit {
        Some(limit) if note.starts_with("delete guard:") => {
            serde_json::json!({"delete_guard": {"limit": limit}})
        }
        _ => serde_json::json!({}),
    }
}

impl Controller {
    /// Takes up the latch the last hour's trail shows. False when the
    /// database did not answer: no round runs until it is read.
    pub(super) async fn read_guard_latch(&self, state: &mut State) -> bool {
        match desired::guard_latch(&self.pool, &self.settings.host_id).await {
            Ok((held, limit)) => {
                if !held.is_empty() {
                    tracing::warn!(
                        held = held.len(),
                        "delete guard: the trail shows removals it withheld within the last hour; it holds them still"
                    );
                }
                state.guard_held.extend(held);
                state.guard_held_limit = limit.and_then(|l| usize::try_from(l).ok());
                true
            }
            Err(error) => {
                tracing::warn!(%error, "reading the delete guard's latch failed; no round until it is read");
                false
            }
        }
    }

    /// Takes a pass's guard outcome into the state: the alarm (said once
    /// per count, counted every pass), and on the trail each workspace the
    /// latch lets go, with why: its removal is no longer wanted (its row is
    /// back), or the limit was raised above the one the guard tripped
    /// under (the removals go ahead).
    pub(super) async fn follow_guard(
        &self,
        state: &mut State,
        pass: &plan::PassPlan,
        lease: &Lease,
        now: DateTime<Utc>,
    ) {
        let blocked = pass.guard_blocked;
        let held = &pass.guard_held;
        if let Some((wanted, limit)) = blocked {
            if state.guard_said != blocked {
                if wanted > limit {
                    tracing::error!(
                        wanted,
                        limit,
                        hint = plan::GUARD_HINT,
                        "delete guard: this pass's orphan/duplicate removals exceed the limit; none made"
                    );
                } else {
                    tracing::error!(
                        wanted,
                        limit,
                        held = held.len(),
                        hint = plan::GUARD_HINT,
                        "delete guard holds: removals it withheld are still wanted; none made"
                    );
                }
            }
            self.metrics.delete_guard_blocked_total.inc();
        }
        let let_go: Vec<WorkspaceId> = state.guard_held.difference(held).copied().collect();
        if !let_go.is_empty() {
            let reason = if !held.is_empty() {
                tracing::info!(
                    workspaces = let_go.len(),
                    still_held = held.len(),
                    "delete guard: workspaces whose removal is no longer wanted leave its hold"
                );
                PART.to_string()
            } else {
                let why = match state.guard_held_limit {
                    Some(tripped) if pass.guard_limit > tripped => format!(
                        "delete guard released: the limit is {} now, above the {tripped} it tripped under; the removals it withheld go ahead",
                        pass.guard_limit
                    ),
                    _ => RELEASED.to_string(),
                };
                tracing::warn!("{why}");
                why
            };
            let events: Vec<Event> = let_go
                .iter()
                .map(|id| Event {
                    workspace: *id,
                    action: "note".into(),
                    reason: reason.clone(),
                    detail: serde_json::json!({"delete_guard": "released"}),
                    at: now,
                })
                .collect();
            if let Err(error) = desired::record_events(&self.pool, lease, &events).await {
                tracing::warn!(%error, "recording the delete guard's release failed");
            }
        }
        state.guard_said = blocked;
        state.guard_held = held.clone();
        state.guard_held_limit = pass.guard_held_limit;
    }
}
