//! Image retention's Docker side: which images containers use, and the
//! removal of one image by id or by reference. Which images may go is the
//! controller's to decide (only images berth recorded as pulled or built);
//! this removes one without force, so the engine itself refuses an image a
//! container uses or another repository still names.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveImageOptionsBuilder};
use tokio::time::Instant;

use crate::docker::DockerError;

use super::{ActError, Executor};

/// What a removal of an image did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageRemoval {
    Removed,
    /// The reference went, and the image stays: another reference (a tag
    /// someone else gave it) still names it.
    Untagged,
    /// The engine had no such image: done.
    Gone,
    /// The engine refused (409): a container uses it, a child image
    /// depends on it, or more than one repository names it. It stays.
    /// (A pulled image another repository names loses berth's reference
    /// and stays: [`ImageRemoval::Untagged`].)
    Kept,
}

/// When the image sweep last ran in this process, shared by the executor's
/// clones so every caller sees one cadence.
#[derive(Debug, Default)]
pub(super) struct SweepClock(Mutex<Option<Instant>>);

impl Executor {
    /// The image ids of every container on the engine, berth's or not,
    /// running or stopped. A container the engine lists without an image
    /// id makes the answer unknown: an error, so no caller reads an image
    /// as unused.
    pub async fn image_ids_in_use(&self) -> Result<BTreeSet<String>, ActError> {
        let opts = ListContainersOptionsBuilder::new().all(true).build();
        let containers = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| ActError::docker("list containers", e))?;
        containers
            .into_iter()
            .map(|c| {
                c.image_id.filter(|id| !id.is_empty()).ok_or_else(|| {
                    ActError::docker(
                        "list containers",
                        DockerError::Other {
                            message: format!(
                                "container {} is listed without an image id",
                                c.id.as_deref().unwrap_or("?")
                            ),
                        },
                    )
                })
            })
            .collect()
    }

    /// Removes image `id`, without force and without pruning untagged
    /// parents. With `pulled_as` (`<repository>@<digest>`, the reference a
    /// pull of berth's made), that reference goes first and takes the
    /// image with it only when nothing else names it; the image itself
    /// goes after it only when all that still names it is other digests of
    /// that repository (berth's own pulls of it by another digest), never
    /// when a tag does (someone tagged it). Without, the id goes with every
    /// reference to it. An image a container uses or that more than one
    /// repository names is refused by the engine and stays
    /// ([`ImageRemoval::Kept`]); an absent one is done.
    pub async fn remove_image(
        &self,
        id: &str,
        pulled_as: Option<&str>,
    ) -> Result<ImageRemoval, ActError> {
        let Some(reference) = pulled_as else {
            return self.remove_one(id).await;
        };
        match self.remove_one(reference).await? {
            ImageRemoval::Untagged => {}
            other => return Ok(other),
        }
        let image = match self.docker.inspect_image(id).await {
            Ok(image) => image,
            Err(e) => {
                return match DockerError::from(e) {
                    DockerError::NotFound { .. } => Ok(ImageRemoval::Removed),
                    other => Err(ActError::docker("inspect image", other)),
                };
            }
        };
        let repository = reference.split_once('@').map_or(reference, |(r, _)| r);
        let only_berths = image.repo_tags.unwrap_or_default().is_empty()
            && image
                .repo_digests
                .unwrap_or_default()
                .iter()
                .all(|d| d.split_once('@').is_some_and(|(r, _)| r == repository));
        if only_berths {
            self.remove_one(id).await
        } else {
            Ok(ImageRemoval::Untagged)
        }
    }

    /// One removal of an id or a reference (see [`Executor::remove_image`]).
    async fn remove_one(&self, target: &str) -> Result<ImageRemoval, ActError> {
        let opts = RemoveImageOptionsBuilder::new()
            .force(false)
            .noprune(true)
            .build();
        super::may_change("remove image")?;
        match self.docker.remove_image(target, Some(opts), None).await {
            Ok(items) if items.iter().any(|i| i.deleted.is_some()) => Ok(ImageRemoval::Removed),
            Ok(_) => Ok(ImageRemoval::Untagged),
            Err(e) => match DockerError::from(e) {
                DockerError::NotFound { .. } => Ok(ImageRemoval::Gone),
                DockerError::Conflict { .. } => Ok(ImageRemoval::Kept),
                other => Err(ActError::docker("remove image", other)),
            },
        }
    }

    /// Whether an image sweep is due: none has run in this process, or the
    /// last began at least `every` ago. Taking the answer `true` starts the
    /// next interval.
    pub fn image_sweep_due(&self, every: Duration) -> bool {
        let mut last = self
            .image_sweeps
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < every) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Makes the next [`Executor::image_sweep_due`] answer `true`: a sweep
    /// that was wanted could not run.
    pub fn image_sweep_wanted(&self) {
        *self
            .image_sweeps
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::settings;
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_sweep_is_due_once_per_interval_or_again_when_wanted() {
        let docker = bollard::Docker::connect_with_local_defaults().expect("a client");
        let exec = Executor::new(docker, settings());
        let every = Duration::from_secs(300);
        assert!(exec.image_sweep_due(every), "the first is due");
        assert!(!exec.image_sweep_due(every));
        tokio::time::advance(Duration::from_secs(299)).await;
        assert!(
            !exec.clone().image_sweep_due(every),
            "clones share the clock"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(exec.image_sweep_due(every));
        exec.image_sweep_wanted();
        assert!(exec.image_sweep_due(every), "wanted makes it due at once");
        assert!(!exec.image_sweep_due(every));
    }
}
