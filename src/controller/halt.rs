//! What a finished pass means for the rollouts: a replace done, undone
//! (for the image's fault, which may halt its rollout) or abandoned; a
//! halt and what it puts back, and the pin write-backs the database has
//! not taken yet.

use super::rollout::{Halt, Replace, Rollouts, Track};
use super::{Controller, Done, State};
use crate::desired;
use crate::model::{DesiredState, Digest, ImageSource, Reason, ResolvedImage, Status};

impl Controller {
    /// What a finished pass means for the rollouts: a replace finished
    /// ready, one undone (a readiness failure, which may halt its rollout),
    /// or one that did not start after all.
    pub(super) async fn follow_rollouts(&self, state: &mut State, done: &Done) {
        use crate::plan::Why;
        let id = done.id;
        if done.lost_lease {
            // Nothing is known of how the pass ended: the slot stays until
            // this instance (or its successor) looks again.
            return;
        }
        let whys = || done.plan.actions.iter().map(|a| &a.why);
        let planned_restore = done.failure.is_none() && whys().any(|w| *w == Why::Restore);
        let restored = done.failure.as_ref().is_some_and(|f| f.restored) || planned_restore;
        if image_failed(done) {
            for halt in state.rollouts.failed(id, &self.rollout) {
                self.halt(state, halt).await;
            }
        } else if planned_restore && done.plan.resumed.is_some() {
            // A replace found under way was undone for a cause that says
            // nothing of the image (cut short, never started): the
            // workspace keeps its place and tries again through it.
        } else if restored
            || done.failure.as_ref().is_some_and(|f| {
                matches!(
                    f.phase,
                    crate::plan::Phase::Pull | crate::plan::Phase::Build
                )
            })
        {
            // The image could not be made local (nothing was touched), or
            // the engine failed on the way: the slot goes to the next
            // workspace.
            state.rollouts.release(id);
        } else if whys().any(|w| *w == Why::FinishReplace) {
            state.rollouts.succeeded(id);
        }
    }
}

impl Controller {
    /// Takes up, for a rollout this instance has not carried yet, the
    /// replaces of it that failed before: rows the trail shows undone onto
    /// the rollout's spec since its pin was last changed (a berth that died
    /// after putting a canary back and before it halted the rollout, or
    /// that another instance took the host from). They count against it,
    /// and may halt it at once; else a new canary would be tried.
    ///
    /// With `keep` false (no replace of the rollout is planned), only a
    /// halt comes of it.
    pub(super) async fn take_up_failures(&self, state: &mut State, replace: &Replace, keep: bool) {
        let key = &replace.key;
        let Track::Pin(ring) = &key.track else {
            return;
        };
        let Some(pinned_at) = state.catalogue.pinned_at(&key.runtime, ring) else {
            return;
        };
        let mains = self.observed.main_containers(&self.settings.host_id);
        let (mut failed, mut done) = (Vec::new(), Vec::new());
        for row in state.rows.values() {
            if row.runtime != key.runtime
                || row.desired_state != DesiredState::Running
                || row.paused
            {
                continue;
            }
            let Ok(spec) = crate::plan::spec(row, &state.catalogue, &self.settings) else {
                continue;
            };
            if spec.image_source != (ImageSource::Pinned { ring: ring.clone() })
                || spec.image.digest() != Some(&key.to)
            {
                continue;
            }
            // An undo of this rollout's replace that counted (its column on
            // the trail names the rollout and does not say unproven): not
            // an undo of another change of the row, such as an env edit.
            let undone = state.memory.get(&row.id).is_some_and(|m| {
                let column = m.rolled_back_rollout.as_ref();
                Rollouts::column_names(column, key)
                    && !Rollouts::column_unproven(column)
                    && m.undid(
                        &spec.hash,
                        crate::plan::image_identity(&spec.known_image()).as_deref(),
                    )
                    && m.rolled_back_at.is_some_and(|at| at > pinned_at)
            });
            // Undone and back (online/rolled_back), or undone with the
            // old container not back yet (a berth died putting it back:
            // the row still says provisioning).
            if undone
                && ((row.status == Some(Status::Online)
                    && row.status_reason == Some(Reason::RolledBack))
                    || row.status == Some(Status::Provisioning))
            {
                failed.push(row.id);
            } else if mains
                .get(&row.id)
                .is_some_and(|c| c.label(crate::model::LABEL_IMAGE_DIGEST) == Some(key.to.as_str()))
            {
                done.push(row.id);
            }
        }
        if failed.is_empty() {
            return;
        }
        tracing::warn!(
            runtime = key.runtime,
            ring,
            to = %key.to,
            failed = failed.len(),
            done = done.len(),
            "replaces of this rollout undone before this instance carried it count against it"
        );
        if let Some(halt) = state
            .rollouts
            .seed_failed(replace, &failed, &done, &self.rollout, keep)
        {
            self.halt(state, halt).await;
        }
    }

    /// At start or takeover, on a complete picture: each pin whose
    /// rollout the rows show undone onto since it was set halts now when
    /// those failures are over the ratio, though no replace of it is left
    /// to plan (the undone rows are not tried again, the others run it or
    /// are stopped). Else a berth killed between putting the last canary
    /// back and halting would leave the bad digest pinned for every host.
    pub(super) async fn halt_undone_pins(&self, state: &mut State) {
        let pins: Vec<Replace> = state
            .catalogue
            .pins()
            .map(|(runtime, ring, digest)| Replace {
                key: super::rollout::RolloutKey {
                    runtime: runtime.to_string(),
                    track: Track::Pin(ring.to_string()),
                    to: digest.clone(),
                },
                from: None,
                image: String::new(),
            })
            .filter(|r| !state.rollouts.knows(&r.key))
            .collect();
        for replace in pins {
            let Track::Pin(ring) = &replace.key.track else {
                continue;
            };
            // A rollout that completed stands: the undone rows it did
            // not count (broken by themselves) do not halt it later. Not
            // knowing, nothing is halted.
            match desired::pin_stable(
                &self.pool,
                &replace.key.runtime,
                ring,
                replace.key.to.as_str(),
            )
            .await
            {
                Ok(false) => self.take_up_failures(state, &replace, false).await,
                Ok(true) => {}
                Err(error) => {
                    tracing::warn!(%error, runtime = replace.key.runtime, ring, "reading whether a pin's rollout completed failed; its undone rows halt nothing now");
                }
            }
        }
    }

    /// Puts a halted rollout's previous image back: into the pin row for
    /// a pin, or no pin row when the rollout's pin was new (the history
    /// says berth did it and why), into the image
    /// knowledge for a tag or a build (so the planner sees the old image
    /// as current, and a refresh that finds the halted target again keeps
    /// it out). Workspaces the rollout changed are replaced back onto it.
    async fn halt(&self, state: &mut State, halt: Halt) {
        self.metrics.rollout_halts_total.inc();
        let Halt {
            key,
            from,
            image,
            failed,
            tried,
            failed_ids,
        } = halt;
        if let Track::Pin(ring) = &key.track {
            state.pins_halted.insert(key.clone());
            let pinned_at = state.catalogue.pinned_at(&key.runtime, ring);
            state.rollouts.halted_at_pin(&key, pinned_at);
        }
        let runtime = &key.runtime;
        let track = key.track.as_str();
        let names = failed_names(state, &failed_ids);
        tracing::error!(runtime, track, to = %key.to, failed, tried, workspaces = %names, "rollout halted");
        // A pin goes back to the digest it named before: the workspaces it
        // changed are put back, and every other workspace keeps what it
        // runs (an older stable digest would replace them all; so would
        // the old image of the first workspace the rollout replaced, which
        // may be one that never took the pin before). Only when the
        // history does not say does the rollout's own `from`, then the
        // previous stable digest (what `berth rollback` would choose),
        // stand in.
        // A previous pin no workspace here runs (it never rolled out: the
        // pin moved on before its first replace held) gives way to what
        // the rollout's workspaces ran, so the write-back never names an
        // image that was never proven here.
        let from = match &key.track {
            Track::Pin(ring) => match (self.pinned_before(runtime, ring, &key.to).await, from) {
                (Some(before), Some(from)) if before != from && !self.runs(&before) => Some(from),
                (Some(before), _) => Some(before),
                (None, Some(from)) => Some(from),
                (None, None) => self.stable_before(runtime, ring, &key.to).await,
            },
            _ => from,
        };
        // Never back onto a digest berth itself halted since it was last
        // pinned (a write-back whose own rollout halted): the pins would
        // swing between two digests, replacing every workspace each time.
        if let (Track::Pin(ring), Some(back)) = (&key.track, &from)
            && !matches!(
                desired::halted_since_pinned(&self.pool, runtime, ring, back.as_str()).await,
                Ok(false)
            )
        {
            tracing::error!(
                runtime,
                ring,
                to = %key.to,
                back_to = %back,
                "the digest before this rollout was halted by berth too (or the history did not answer): the pin stays, nothing more rolls out onto it, and the workspaces it did not reach keep the digest they run; to go on, set the pin by hand (berth pin, berth rollback --to): pinning the digest it names now again tries its rollout afresh"
            );
            return;
        }
        match (&key.track, from) {
            (Track::Pin(ring), from) => {
                // A pin new with this rollout goes (the ring follows what
                // it followed before); another gets `from` back.
                let note = format!(
                    "halted by berth on host {}: {failed} of {tried} replaces onto {} failed readiness ({names})",
                    self.settings.host_id,
                    key.to.short()
                );
                let write = PinWriteBack {
                    runtime: runtime.clone(),
                    ring: ring.clone(),
                    to: key.to.as_str().to_string(),
                    from: from.map(|d| d.as_str().to_string()),
                    note,
                };
                if !self.write_pin_back(&write).await {
                    // Tried again at each reread until the database takes
                    // it: the halt holds here meanwhile.
                    state.pin_write_backs.push(write);
                }
            }
            (_, None) => {
                tracing::error!(
                    runtime,
                    track,
                    "no previous image known: nothing more rolls out onto the halted one"
                );
            }
            (Track::Tag | Track::Build, Some(from)) => {
                let previous = match key.track {
                    Track::Tag => ResolvedImage {
                        digest: Some(from.clone()),
                        id: None,
                    },
                    _ => ResolvedImage {
                        digest: None,
                        id: Some(from.as_str().to_string()),
                    },
                };
                tracing::warn!(runtime, track, image, back_to = %from, "previous image is current again");
                state.images.insert(image.clone(), previous);
                state.held_back.insert(image, key.to.as_str().to_string());
            }
        }
    }
}

/// The workspaces whose replace failed, by name and short id, for the
/// halt's log line and pin history note: the first few, and how many more.
fn failed_names(state: &State, ids: &[crate::model::WorkspaceId]) -> String {
    const SHOWN: usize = 5;
    let mut parts: Vec<String> = ids
        .iter()
        .take(SHOWN)
        .map(|id| match state.rows.get(id) {
            Some(row) => format!("{} {}", row.name, id.id12()),
            None => id.id12(),
        })
        .collect();
    if ids.len() > SHOWN {
        parts.push(format!("and {} more", ids.len() - SHOWN));
    }
    parts.join(", ")
}

/// Whether a pass undid a replace for the image's fault, which counts
/// towards a halt: the new container, made to the spec, not ready in time
/// or not alive (the planner then marks its hash rolled back), or the
/// engine refusing to run it. A replace cut short (no new container under
/// the name, after a lost lease or a crash) or a transient engine error (a
/// 5xx, a timeout) says nothing about the image: undone, and tried again.
fn image_failed(done: &Done) -> bool {
    if planned_restore(done) {
        undone_for_readiness(done)
    } else {
        done.failure
            .as_ref()
            .is_some_and(|f| f.restored && !f.error.is_transient())
    }
}

/// The pass was planned to put a previous container back.
fn planned_restore(done: &Done) -> bool {
    done.failure.is_none()
        && done
            .plan
            .actions
            .iter()
            .any(|a| a.why == crate::plan::Why::Restore)
}

/// The pass undid a replace whose new container, made to the spec, was
/// not ready in time or not alive (the planner marked its hash rolled
/// back).
pub(super) fn undone_for_readiness(done: &Done) -> bool {
    planned_restore(done) && done.hash.is_some() && done.plan.memory.rolled_back_hash == done.hash
}

/// A halted pin's write-back, kept until the database took it.
#[derive(Debug, Clone)]
pub(super) struct PinWriteBack {
    runtime: String,
    ring: String,
    to: String,
    from: Option<String>,
    note: String,
}

impl Controller {
    /// Writes a halted pin back; false when the database did not answer.
    async fn write_pin_back(&self, w: &PinWriteBack) -> bool {
        use desired::PinHalted;
        let (runtime, ring) = (&w.runtime, &w.ring);
        let from = w.from.as_deref();
        match desired::halt_pin(&self.pool, runtime, ring, &w.to, from, &w.note).await {
            Ok(PinHalted::PutBack) => {
                tracing::warn!(runtime, ring, back_to = from, "pin written back");
            }
            Ok(PinHalted::Unpinned) => tracing::warn!(
                runtime,
                ring,
                "pin removed: it was new with the halted rollout, and the ring follows what it followed before"
            ),
            Ok(PinHalted::Moved) => {
                tracing::warn!(runtime, ring, "pin already changed; not written back");
            }
            Ok(PinHalted::NothingToPutBack) => tracing::error!(
                runtime,
                ring,
                "no previous digest known: the pin is left on the halted one, and nothing more rolls out onto it here"
            ),
            Err(error) => {
                tracing::error!(%error, runtime, ring, "writing the pin back failed; trying again at the next reread");
                return false;
            }
        }
        true
    }

    /// Tries the pin write-backs the database did not take before.
    pub(super) async fn retry_pin_write_backs(&self, state: &mut State) {
        let mut left = Vec::new();
        for w in std::mem::take(&mut state.pin_write_backs) {
            if !self.write_pin_back(&w).await {
                left.push(w);
            }
        }
        state.pin_write_backs = left;
    }

    /// Whether a workspace's container on this host runs `digest`.
    fn runs(&self, digest: &Digest) -> bool {
        self.observed
            .main_containers(&self.settings.host_id)
            .values()
            .any(|c| c.label(crate::model::LABEL_IMAGE_DIGEST) == Some(digest.as_str()))
    }

    /// The digest the pin of (`runtime`, `ring`) named before `to`, if the
    /// history says (and the read answers).
    async fn pinned_before(&self, runtime: &str, ring: &str, to: &Digest) -> Option<Digest> {
        match desired::pinned_before(&self.pool, runtime, ring, to.as_str()).await {
            Ok(before) => before.and_then(|d| Digest::parse(&d).ok()),
            Err(error) => {
                tracing::warn!(%error, "reading the pin history failed; going back to the digest the workspaces ran");
                None
            }
        }
    }

    /// The newest digest of (`runtime`, `ring`) marked stable before `to`
    /// was pinned, if any.
    async fn stable_before(&self, runtime: &str, ring: &str, to: &Digest) -> Option<Digest> {
        match desired::rollback_target(&self.pool, runtime, ring, to.as_str()).await {
            Ok(Some(t)) if t.stable_at.is_some() => Digest::parse(&t.digest).ok(),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, "reading the pin history failed; going back to the digest the workspaces ran");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Failed;
    use super::*;
    use crate::act::ActError;
    use crate::plan::{Memory, Phase};

    fn done_with(plan: crate::plan::Plan, failure: Option<Failed>) -> Done {
        Done {
            id: plan.id,
            plan,
            images: Vec::new(),
            failure,
            hash: Some("h1".into()),
            lost_lease: false,
            write_error: None,
            unrecorded: None,
            built_for: std::time::Duration::ZERO,
            row: None,
        }
    }

    #[test]
    fn only_an_undone_replace_for_the_images_fault_counts_towards_a_halt() {
        use crate::plan::{Op, Plan, Target, Why};
        let id = crate::model::WorkspaceId(uuid::Uuid::nil());
        let restore = |rolled_back: Option<&str>| {
            let mut p = Plan::new(
                id,
                Memory {
                    rolled_back_hash: rolled_back.map(str::to_string),
                    ..Memory::default()
                },
            );
            p.push(
                Op::Rename {
                    target: Target::Id("old".into()),
                    to: "ws-x".into(),
                },
                Why::Restore,
            );
            p
        };
        assert!(
            image_failed(&done_with(restore(Some("h1")), None)),
            "the new container failed readiness"
        );
        assert!(
            !image_failed(&done_with(restore(None), None)),
            "a replace cut short: no new container was judged"
        );
        let engine = |error| {
            done_with(
                Plan::new(id, Memory::default()),
                Some(Failed::new(error, Phase::Start, true)),
            )
        };
        assert!(image_failed(&engine(ActError::StartFailed {
            container: "c".into(),
            message: "exec format error".into(),
        })));
        assert!(!image_failed(&engine(ActError::Timeout {
            what: "start",
            after: std::time::Duration::from_secs(1),
        })));
    }
}
