//! Moving tags and local builds, re-resolved on `berth refresh [runtime]`
//! and every `BERTH_TAG_REFRESH`.
//!
//! A refresh asks, for each image reference this host's workspaces run
//! from a moving tag (the runtime's, or a row's explicit image named by a
//! tag) or a local build, what it names now: the registry's
//! digest for the tag (distribution inspect: nothing is pulled), or the
//! image of the template repository's HEAD (built only when no image of
//! that commit exists). A new answer goes into the controller's image
//! knowledge; the planner then sees each container on the old image as a
//! change, and the replaces go through the rollout waves. The pull of a
//! new digest happens in the replace, so an unchanged tag costs one
//! registry request and nothing else.

use std::collections::BTreeMap;

use super::{Controller, State, Tasks, WorkQueue};
use crate::act::ActError;
use crate::model::{
    DesiredState, ImageRef, ImageSource, LABEL_IMAGE_DIGEST, LABEL_IMAGE_ID, ResolvedImage,
    WorkspaceId,
};
use crate::plan::RefreshFailure;

/// A refresh's answer for one image reference.
#[derive(Debug)]
pub struct Refreshed {
    pub image: ImageRef,
    pub result: Result<ResolvedImage, ActError>,
}

impl Controller {
    /// Learns what each moving reference names from the containers already
    /// made from it, for references the controller knows nothing of yet (a
    /// restarted berth), when they all run one image. So a restart does not
    /// ask the registry or the repository anew, and changes nothing until
    /// a refresh.
    pub(super) fn seed_images(&self, state: &mut State) {
        let mut seen: BTreeMap<String, BTreeMap<ResolvedImage, usize>> = BTreeMap::new();
        let mut runtimes: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        let mains = self.observed.main_containers(&self.settings.host_id);
        for row in state.rows.values() {
            let Ok((image, source, _)) =
                crate::plan::choose_image(row, &state.catalogue, &self.settings)
            else {
                continue;
            };
            let key = image.as_str();
            if !source.follows(&image) || state.images.contains_key(key) {
                continue;
            }
            let Some(c) = mains.get(&row.id) else {
                continue;
            };
            // A local build's container names its commit's tag, not the
            // `:latest` the row asks for: the repository decides.
            let made_from = match &source {
                ImageSource::LocalBuild { .. } => ImageRef::parse(&c.image).is_ok_and(|made| {
                    crate::act::repository(&made) == crate::act::repository(&image)
                }),
                _ => crate::plan::hash::same_image(key, &c.image),
            };
            if !made_from {
                continue;
            }
            let known = match source {
                ImageSource::LocalBuild { .. } => ResolvedImage {
                    digest: None,
                    id: c.label(LABEL_IMAGE_ID).map(str::to_string),
                },
                _ => ResolvedImage {
                    digest: c
                        .label(LABEL_IMAGE_DIGEST)
                        .and_then(|d| crate::model::Digest::parse(d).ok()),
                    id: c.label(LABEL_IMAGE_ID).map(str::to_string),
                },
            };
            if known.digest.is_none() && known.id.is_none() {
                continue;
            }
            *seen
                .entry(key.to_string())
                .or_default()
                .entry(known)
                .or_default() += 1;
            runtimes
                .entry(key.to_string())
                .or_default()
                .insert(row.runtime.clone());
        }
        let mut mixed = std::collections::BTreeSet::new();
        for (key, counts) in seen {
            // Containers on different images (a rollout cut short by the
            // restart) say nothing of which is current: the reference is
            // resolved anew (one registry request, or the repository's
            // HEAD), and the rollout goes on towards what it names now.
            if counts.len() != 1 {
                tracing::info!(
                    image = key,
                    images = counts.len(),
                    "containers of one reference run different images: resolving it anew"
                );
                mixed.extend(runtimes.remove(&key).unwrap_or_default());
                continue;
            }
            if let Some((known, _)) = counts.into_iter().next() {
                tracing::debug!(
                    image = key,
                    ?known,
                    "image known from the containers made from it"
                );
                state.images.insert(key, known);
            }
        }
        if !mixed.is_empty() {
            let one = (mixed.len() == 1)
                .then(|| mixed.into_iter().next())
                .flatten();
            state.pending_refresh = Some(match (state.pending_refresh.take(), one) {
                (None, one) => one,
                (Some(Some(before)), Some(one)) if before == one => Some(one),
                _ => None,
            });
        }
    }

    /// The moving-tag and local-build references the rows of this host (of
    /// `runtime`, or all) run from, by reference text.
    fn moving_references(
        &self,
        state: &State,
        runtime: Option<&str>,
    ) -> BTreeMap<String, (ImageRef, ImageSource)> {
        let mut wanted = BTreeMap::new();
        for row in state.rows.values() {
            if row.desired_state == DesiredState::Removed
                || runtime.is_some_and(|r| r != row.runtime)
            {
                continue;
            }
            let Ok((image, source, _)) =
                crate::plan::choose_image(row, &state.catalogue, &self.settings)
            else {
                continue;
            };
            if source.follows(&image) {
                wanted.insert(image.as_str().to_string(), (image, source));
            }
        }
        wanted
    }

    /// A refresh task that ended without an answer (it panicked): the
    /// reference is free again, and asked once more if that was wanted.
    pub(super) fn lost_refresh(
        &self,
        state: &mut State,
        key: String,
        tasks: &mut Tasks<String, Refreshed>,
    ) {
        match state.refresh_again.remove(&key) {
            Some((image, source)) => self.spawn_refresh(image, source, tasks),
            None => {
                state.refreshing.remove(&key);
            }
        }
    }

    /// Starts resolving every moving-tag and local-build image the rows of
    /// this host (of `runtime`, or all) run from; one task per reference,
    /// none for a reference already being resolved.
    pub(super) fn start_refresh(
        &self,
        state: &mut State,
        runtime: Option<&str>,
        tasks: &mut Tasks<String, Refreshed>,
    ) {
        let wanted = self.moving_references(state, runtime);
        let mut started = 0;
        for (image, source) in wanted.into_values() {
            started += usize::from(self.refresh_reference(state, image, source, tasks));
        }
        tracing::info!(
            runtime = runtime.unwrap_or("*"),
            images = started,
            "refreshing moving tags and local builds"
        );
    }

    /// Starts resolving one reference; true when a task started (else one
    /// is under way, and it is asked once more when that answers).
    pub(super) fn refresh_reference(
        &self,
        state: &mut State,
        image: ImageRef,
        source: ImageSource,
        tasks: &mut Tasks<String, Refreshed>,
    ) -> bool {
        let key = image.as_str().to_string();
        if state.refreshing.contains(&key) {
            // Asked again while an answer is on its way (a build of an
            // older commit, say): ask once more when it arrives.
            state.refresh_again.insert(key, (image, source));
            return false;
        }
        state.refreshing.insert(key);
        self.spawn_refresh(image, source, tasks);
        true
    }

    fn spawn_refresh(
        &self,
        image: ImageRef,
        source: ImageSource,
        tasks: &mut Tasks<String, Refreshed>,
    ) {
        let executor = self.executor.clone();
        let platform = self.settings.platform.clone();
        tasks.spawn(image.as_str().to_string(), async move {
            let result = match &source {
                ImageSource::Tag | ImageSource::Explicit => {
                    executor.resolve(&image).await.map(|d| ResolvedImage {
                        digest: Some(d),
                        id: None,
                    })
                }
                _ => executor
                    .ensure_image(&image, &source, platform.as_ref())
                    .await
                    .map(|e| ResolvedImage {
                        digest: e.digest,
                        id: Some(e.id),
                    }),
            };
            Refreshed { image, result }
        });
    }

    /// Takes a refresh's answer: a new digest or build becomes the current
    /// image of its reference (unless a rollout onto it halted), and every
    /// workspace is planned again.
    pub(super) fn finish_refresh(
        &self,
        state: &mut State,
        queue: &mut WorkQueue<WorkspaceId>,
        done: Refreshed,
        tasks: &mut Tasks<String, Refreshed>,
    ) {
        let key = done.image.as_str().to_string();
        match state.refresh_again.remove(&key) {
            Some((image, source)) => self.spawn_refresh(image, source, tasks),
            None => {
                state.refreshing.remove(&key);
            }
        }
        let now = match done.result {
            Ok(now) => {
                if state.refresh_failures.remove(&key).is_some() {
                    self.enqueue_all(state, queue);
                }
                now
            }
            Err(error) => {
                // The workspaces keep running what they run, and say why;
                // the next refresh asks again. A build that fails is a
                // wanted change blocked; a registry that did not answer
                // says nothing of a change.
                tracing::warn!(image = key, %error, "refreshing an image failed");
                let failure = RefreshFailure {
                    message: error.to_string(),
                    blocks_change: matches!(error, ActError::BuildFailed { .. }),
                };
                state.refresh_failures.insert(key, failure);
                self.enqueue_all(state, queue);
                return;
            }
        };
        let target = now
            .digest
            .as_ref()
            .map(|d| d.as_str().to_string())
            .or_else(|| now.id.clone());
        let known = state.images.get(&key);
        let same = match (&now.digest, known) {
            (Some(d), Some(k)) => k.digest.as_ref() == Some(d),
            (None, Some(k)) => k.id == now.id,
            (_, None) => false,
        };
        if same {
            tracing::info!(image = key, "refreshed: unchanged");
            return;
        }
        if target.is_some() && state.held_back.get(&key) == target.as_ref() {
            tracing::warn!(
                image = key,
                target = target.as_deref().unwrap_or_default(),
                "refreshed onto an image whose rollout halted: staying on the previous one"
            );
            return;
        }
        tracing::info!(
            image = key,
            target = target.as_deref().unwrap_or_default(),
            "refreshed: workspaces on another image are replaced onto this one in waves"
        );
        // The reference moved past the target it held back: that halt is
        // over (should it come back, it rolls out from the canary again).
        state.held_back.remove(&key);
        state.images.insert(key, now);
        self.enqueue_all(state, queue);
    }
}
