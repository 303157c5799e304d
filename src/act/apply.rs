//! Running one planned op: [`Executor::apply`] resolves the op's target
//! and calls the action it names.

use chrono::{DateTime, Utc};

use crate::model::ImageRef;
use crate::plan::{Op, Target};

use super::{ActError, EnsuredImage, Executor};

/// What the steps of one plan have made so far, for the steps after them.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// The container this plan's `Create` made.
    pub created: Option<String>,
    /// The image this plan's `EnsureImage` made local, by its reference.
    pub image: Option<(ImageRef, EnsuredImage)>,
}

/// What one op did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The volume was not there: this call made it, empty.
    VolumeMade,
    /// The image is local.
    Image(EnsuredImage),
    /// The container was created (or a retried create found it).
    Created {
        id: String,
    },
    /// The op addressed this plan's new container and the plan made none.
    Skipped,
    /// Readiness is the controller's to judge (it reads the heartbeat
    /// column): wait for container `id` until `deadline`.
    WaitReady {
        id: String,
        deadline: DateTime<Utc>,
    },
}

impl Executor {
    /// Runs `op`, reading and updating `run`.
    pub async fn apply(&self, op: &Op, run: &mut Run) -> Result<Outcome, ActError> {
        let target = match op.target() {
            None => None,
            Some(Target::Id(id)) => Some(id.clone()),
            Some(Target::Created) => match &run.created {
                Some(id) => Some(id.clone()),
                None => return Ok(Outcome::Skipped),
            },
        };
        let id = target.as_deref().unwrap_or_default();
        match op {
            Op::EnsureImage {
                image,
                source,
                platform,
                known,
            } => {
                let ensured = self
                    .ensure_known(image, source, platform.as_ref(), known)
                    .await?;
                run.image = Some((image.clone(), ensured.clone()));
                Ok(Outcome::Image(ensured))
            }
            Op::EnsureVolume(spec) => self.ensure_volume(spec).await.map(|made| match made {
                true => Outcome::VolumeMade,
                false => Outcome::Done,
            }),
            Op::RemoveVolume {
                name,
                below_epoch: None,
            } => self.remove_volume(name).await.map(|()| Outcome::Done),
            Op::RemoveVolume {
                name,
                below_epoch: Some(epoch),
            } => self
                .discard_session(name, *epoch)
                .await
                .map(|()| Outcome::Done),
            Op::Preflight {
                binds,
                others,
                network,
            } => self
                .preflight(binds, others, network)
                .await
                .map(|()| Outcome::Done),
            Op::Create(spec) => {
                let image = match &run.image {
                    Some((image, ensured)) if *image == spec.image => ensured.clone(),
                    // No ensure step before this create: ensuring again
                    // is cheap when the image is local.
                    _ => {
                        self.ensure_known(
                            &spec.image,
                            &spec.image_source,
                            spec.platform.as_ref(),
                            &spec.known_image(),
                        )
                        .await?
                    }
                };
                let id = self.create(spec, &image).await?;
                run.created = Some(id.clone());
                Ok(Outcome::Created { id })
            }
            Op::WriteFiles { files, .. } => {
                self.write_files(id, files).await.map(|()| Outcome::Done)
            }
            Op::Start { .. } => self.start(id).await.map(|()| Outcome::Done),
            Op::Stop { timeout, .. } => self.stop(id, *timeout).await.map(|()| Outcome::Done),
            Op::Restart { timeout, .. } => self.restart(id, *timeout).await.map(|()| Outcome::Done),
            Op::Rename { to, .. } => self.rename(id, to).await.map(|()| Outcome::Done),
            Op::Connect {
                network, aliases, ..
            } => self
                .connect(id, network, aliases)
                .await
                .map(|()| Outcome::Done),
            Op::RemoveContainer { .. } => self.remove(id).await.map(|()| Outcome::Done),
            Op::WaitReady { deadline, .. } => Ok(Outcome::WaitReady {
                id: id.to_string(),
                deadline: *deadline,
            }),
        }
    }
}
