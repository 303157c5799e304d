//! What the controller's loop knows between passes, and its pruning.

use std::collections::{BTreeMap, BTreeSet};

use super::WorkQueue;
use super::halt;
use super::rollout::Rollouts;
use crate::model::{ObservedContainer, ObservedVolume, ResolvedImage, WorkspaceId, WorkspaceRow};
use crate::plan::{Catalogue, Memory, Settings};

/// What the loop knows between passes.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) rows: BTreeMap<WorkspaceId, WorkspaceRow>,
    pub(super) catalogue: Catalogue,
    pub(super) desired_complete: bool,
    pub(super) memory: BTreeMap<WorkspaceId, Memory>,
    /// What is known of each image reference now (digest, local id).
    pub(super) images: BTreeMap<String, ResolvedImage>,
    /// Image references whose last refresh failed, with why.
    pub(super) refresh_failures: BTreeMap<String, crate::plan::RefreshFailure>,
    pub(super) last_prune: Option<tokio::time::Instant>,
    /// The notes each key's last plan made, written as events only when
    /// they change (an orphan's kept volumes would else be one event per
    /// pass, forever).
    pub(super) noted: BTreeMap<WorkspaceId, Vec<String>>,
    pub(super) rollouts: Rollouts,
    /// Image references whose rollout onto a target halted, with that
    /// target (a digest or an image ID): a refresh that finds it again
    /// keeps the previous image.
    pub(super) held_back: BTreeMap<String, String>,
    /// The steps passes were in when they were abandoned at shutdown.
    pub(super) cut_short: super::cut_short::CutShort,
    /// Image references a refresh is resolving now.
    pub(super) refreshing: BTreeSet<String>,
    /// References asked to refresh again while one was resolving.
    pub(super) refresh_again: BTreeMap<String, (crate::model::ImageRef, crate::model::ImageSource)>,
    /// The image repositories each pass in flight makes local: the image
    /// sweep keeps their images (a pass may not have created its container
    /// yet).
    pub(super) ensuring: BTreeMap<WorkspaceId, Vec<String>>,
    /// Pins (with their digest) that every workspace of theirs ran
    /// without a rollout here, marked stable (see `mark_pins_landed`).
    pub(super) pins_landed: BTreeSet<super::rollout::RolloutKey>,
    /// Pins (with their digest) whose rollout halted here: never marked
    /// stable while the pin names that digest, whether or not the halt
    /// could write it back.
    pub(super) pins_halted: BTreeSet<super::rollout::RolloutKey>,
    /// When `mark_pins_landed` last looked (it reads every row).
    pub(super) pins_looked_at: Option<tokio::time::Instant>,
    /// Halted pins whose write-back the database has not taken yet.
    pub(super) pin_write_backs: Vec<halt::PinWriteBack>,
    /// The host had no rows at the last reread (and the log said so).
    pub(super) no_rows_said: bool,
    /// The delete guard's (wanted, limit) the log last reported.
    pub(super) guard_said: Option<(usize, usize)>,
    /// The delete guard's latch (see `PassPlan::guard_held`), the limit it
    /// tripped under, and whether the trail's latch was read at start.
    pub(super) guard_held: BTreeSet<WorkspaceId>,
    pub(super) guard_held_limit: Option<usize>,
    pub(super) trail_read: bool,
    /// Whether the pins' undone rollouts were looked at since the trail
    /// was read (see `halt_undone_pins`).
    pub(super) undone_pins_seen: bool,
    /// Events the database did not take when their pass ended.
    pub(super) backlog: super::backlog::Backlog,
    /// A refresh asked for while this instance did not hold the lease:
    /// `Some(None)` for every runtime.
    pub(super) pending_refresh: Option<Option<String>>,
    /// A pin changed since the pins were last read: no pass starts until
    /// the reread (due within 200 ms), so a row written after the pin
    /// edit is planned on the pin it names now.
    pub(super) pins_moved: bool,
    /// The epoch of the lease this instance last held.
    pub(super) led: Option<i64>,
}

impl State {
    /// Takes the lease of `epoch`. When another instance held the host
    /// since this one last did (the epoch moved on), what this one
    /// remembers of passes, rollouts and the delete guard is older than
    /// what that one did: it is forgotten, as a restarted berth would have
    /// it, and read again from the host, the rows and the trail. Kept, it
    /// timed a replace the other instance started from this one's old
    /// deadline and undid it at once.
    pub(super) fn take_lease(&mut self, epoch: i64) {
        if self.led.is_some_and(|led| led != epoch) {
            tracing::info!(
                epoch,
                "another instance held the host since this one did: its memory of passes and rollouts is dropped"
            );
            if !self.pin_write_backs.is_empty() {
                tracing::warn!(
                    dropped = self.pin_write_backs.len(),
                    "halted pins whose write-back the database never took are not written back: another instance has held the host since"
                );
            }
            self.memory.clear();
            self.noted.clear();
            self.rollouts = Rollouts::default();
            self.pin_write_backs.clear();
            self.guard_held.clear();
            self.guard_held_limit = None;
            self.guard_said = None;
            self.trail_read = false;
            self.undone_pins_seen = false;
        }
        self.led = Some(epoch);
    }

    /// The repositories passes in flight make images of.
    pub(super) fn busy_repositories(&self) -> BTreeSet<String> {
        self.ensuring.values().flatten().cloned().collect()
    }

    /// `forget_the_gone` on what the loop knows: `engine` is the complete
    /// picture of the engine's objects, `None` while it is incomplete (no
    /// key is forgotten then).
    pub(super) fn forget_the_gone(
        &mut self,
        settings: &Settings,
        engine: Option<(&[ObservedContainer], &[ObservedVolume])>,
        queue: &mut WorkQueue<WorkspaceId>,
    ) {
        let references: BTreeSet<String> = self
            .rows
            .values()
            .filter_map(|row| {
                crate::plan::choose_image(row, &self.catalogue, settings)
                    .ok()
                    .map(|(image, _, _)| image.as_str().to_string())
            })
            .collect();
        self.images.retain(|r, _| references.contains(r));
        self.held_back.retain(|r, _| references.contains(r));
        self.refresh_failures.retain(|r, _| references.contains(r));
        // A key's things go only on a complete picture of the engine.
        let Some((containers, volumes)) = engine else {
            return;
        };
        let mut live: BTreeSet<WorkspaceId> = self.rows.keys().copied().collect();
        live.extend(containers.iter().filter_map(|c| c.workspace()));
        live.extend(volumes.iter().filter_map(|v| v.workspace()));
        let gone: Vec<WorkspaceId> = self
            .memory
            .keys()
            .chain(self.noted.keys())
            .filter(|id| !live.contains(id))
            .copied()
            .collect();
        for id in gone {
            self.memory.remove(&id);
            self.noted.remove(&id);
            queue.forget(&id);
        }
    }
}
