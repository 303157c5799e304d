//! What a berth takes up from the trail when it starts, or takes the host
//! back after another instance held it: the delete guard's latch (see
//! `guard`), the rollbacks the rows still show, so that neither a
//! withheld removal nor an undone change is tried again before its time,
//! and the notes last made, so that they are not made again.

use super::{Controller, State};
use crate::desired;

impl Controller {
    /// Reads the trail into `state`. False when the database did not
    /// answer: no round runs until it is read.
    pub(super) async fn read_trail(&self, state: &mut State) -> bool {
        if !self.read_guard_latch(state).await {
            return false;
        }
        match desired::rolled_back(&self.pool, &self.settings.host_id).await {
            Ok(rows) => {
                let mut taken = 0;
                for r in rows {
                    let memory = state.memory.entry(r.id).or_default();
                    if memory.rolled_back_hash.is_none() {
                        memory.rolled_back_hash = Some(r.hash);
                        memory.rolled_back_image = r.image;
                        memory.rolled_back_why = r.why;
                        memory.rolled_back_at = Some(r.at);
                        memory.rolled_back_rollout = r.rollout;
                        taken += 1;
                    }
                }
                if taken > 0 {
                    tracing::info!(
                        workspaces = taken,
                        "rows show changes undone earlier: not tried again until the row changes"
                    );
                }
                self.read_notes(state).await;
                state.trail_read = true;
                true
            }
            Err(error) => {
                tracing::warn!(%error, "reading the rollbacks on the trail failed; no round until it is read");
                false
            }
        }
    }

    /// Takes up the notes this host last put on each workspace's trail as
    /// made by this process: a restart does not make them again while
    /// they hold (volumes kept without a row, a name in the way). A
    /// failed read only costs the repeat.
    async fn read_notes(&self, state: &mut State) {
        let read = desired::last_notes(&self.pool, &self.settings.host_id);
        match desired::within(desired::LOOP_READ_DEADLINE, read).await {
            Ok(notes) => {
                for (id, note) in notes {
                    state.noted.entry(id).or_default().push(note);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "reading the notes on the trail failed; notes still holding are made again");
            }
        }
    }
}
