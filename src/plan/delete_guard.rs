//! The delete guard (DESIGN §2 rule 3): a pass's orphan and duplicate
//! removals over the limit, or any an earlier pass withheld, are none of
//! them made.

use std::collections::BTreeSet;

use crate::model::WorkspaceId;

use super::Plan;

/// What an operator does about a tripped delete guard.
pub const GUARD_HINT: &str = "If the rows went on purpose, raise BERTH_DELETE_GUARD for one run (and next time set desired_state = 'removed' instead of deleting rows: not counted); if not, put the rows back (all of them: the guard holds until every one is back)";

/// Rule 3: when the pass's orphan and duplicate removals exceed `limit`,
/// or any of them is one an earlier pass withheld (`held`), none of them
/// is made. Returns (wanted, limit) when it withheld them, and the
/// workspaces it withheld removals of (the latch for the next pass).
pub fn apply_delete_guard(
    plans: &mut [Plan],
    limit: usize,
    held: &BTreeSet<WorkspaceId>,
) -> (Option<(usize, usize)>, BTreeSet<WorkspaceId>) {
    let wanted: usize = plans.iter().map(Plan::guarded_removals).sum();
    let wanting: BTreeSet<WorkspaceId> = plans
        .iter()
        .filter(|p| p.guarded_removals() > 0)
        .map(|p| p.id)
        .collect();
    // Held workspaces still on their way to a removal: wanting one now, or
    // orphans whose grace (started again by a new berth) has not run out.
    let still: BTreeSet<WorkspaceId> = plans
        .iter()
        .filter(|p| held.contains(&p.id))
        .filter(|p| p.guarded_removals() > 0 || p.memory.orphan_since.is_some())
        .map(|p| p.id)
        .collect();
    let still_held = still.len();
    if wanted <= limit && still_held == 0 {
        return (None, BTreeSet::new());
    }
    if wanted == 0 {
        // Nothing to withhold now; the latch stays.
        return (None, still);
    }
    let why = if wanted > limit {
        format!("the pass wanted {wanted} orphan/duplicate removals, over the limit of {limit}")
    } else {
        format!(
            "it tripped earlier and {still_held} of the workspace(s) it held back are still without a row ({wanted} removal(s) wanted, limit {limit})"
        )
    };
    for p in plans.iter_mut().filter(|p| p.guarded_removals() > 0) {
        // The restore path starts at an action index: it moves down by the
        // removals withheld before it.
        if let Some(restore) = p.restore.as_mut() {
            let before = p.actions[..restore.from.min(p.actions.len())]
                .iter()
                .filter(|a| a.is_guarded_removal())
                .count();
            restore.from -= before;
        }
        p.actions.retain(|a| !a.is_guarded_removal());
        p.notes
            .push(format!("delete guard: {why}; none made. {GUARD_HINT}"));
    }
    (
        Some((wanted, limit)),
        wanting.union(&still).copied().collect(),
    )
}
