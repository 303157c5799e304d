//! Ensure image: resolve a moving tag with distribution inspect (a 404
//! there is "not found", and nothing is touched), pull by digest only when
//! the local store lacks it, under a no-progress and a total deadline.

use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures::StreamExt;

use crate::docker::DockerError;
use crate::model::{Digest, ImageRef, ImageSource, Platform, ResolvedImage, Secret};

use super::auth::registry_host;
use super::{ActError, Executor};

/// An image present in the local store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnsuredImage {
    /// What the container is created from: when a digest is known,
    /// `<repository>[:<tag>]@<digest>` — the engine looks such a reference
    /// up by its digest, so a tag moving meanwhile cannot change it, and
    /// `Config.Image` still shows the tag; for a local build, the tag
    /// naming its commit (`<repository>:<commit12>`); else the reference
    /// as given (local override).
    pub reference: String,
    /// The manifest digest it was pulled by; `None` for a local image.
    pub digest: Option<Digest>,
    /// The local image ID.
    pub id: String,
    /// Whether this call pulled it.
    pub pulled: bool,
}

/// `[registry/]path` of a reference, without tag or digest.
pub fn repository(image: &ImageRef) -> &str {
    let text = image.as_str();
    let text = text.split_once('@').map_or(text, |(name, _)| name);
    match image.tag() {
        Some(tag) => &text[..text.len() - tag.len() - 1],
        None => text,
    }
}

/// Registry answers as executor errors: not found, auth and rate limit
/// keep their reasons; anything else stays a classified Docker error.
fn registry_error(action: &'static str, image: &str, e: DockerError) -> ActError {
    let image = image.to_string();
    match e {
        DockerError::NotFound { message } => ActError::ImageNotFound { image, message },
        DockerError::Auth { message } => ActError::RegistryAuth { image, message },
        DockerError::RateLimited { message } => ActError::RegistryRateLimited { image, message },
        // The engine relays a registry's refusal of a distribution inspect
        // as a 500 carrying the registry's words (`unauthorized`, `no
        // basic auth credentials`, `toomanyrequests`): they are the
        // registry's codes, as inside a pull stream.
        DockerError::Server { message, .. } if DockerError::is_registry_refusal(&message) => {
            registry_error(action, &image, DockerError::from_stream(message))
        }
        other => ActError::docker(action, other),
    }
}

fn expose(creds: Option<Secret<DockerCredentials>>) -> Option<DockerCredentials> {
    creds.map(|c| c.expose().clone())
}

impl Executor {
    /// The manifest digest the registry gives `image` now (distribution
    /// inspect; pulls nothing).
    pub async fn resolve(&self, image: &ImageRef) -> Result<Digest, ActError> {
        let host = registry_host(image.as_str());
        self.registries.admit(host, image.as_str())?;
        let asked = self.inspect_registry(image).await;
        self.registries.answered(host, asked.as_ref().map(|_| ()));
        let info = asked?;
        let digest = info.descriptor.digest.unwrap_or_default();
        Digest::parse(&digest).map_err(|e| {
            ActError::docker(
                "distribution inspect",
                DockerError::Other {
                    message: e.to_string(),
                },
            )
        })
    }

    async fn inspect_registry(
        &self,
        image: &ImageRef,
    ) -> Result<bollard::models::DistributionInspect, ActError> {
        let creds = self.credentials(image.as_str()).await?;
        let sent = creds.is_some();
        self.docker
            .inspect_registry_image(image.as_str(), expose(creds))
            .await
            .map_err(|e| {
                let e = registry_error("distribution inspect", image.as_str(), e.into());
                self.say_credentials(e, image.as_str(), sent)
            })
    }

    /// A refusal of the credentials names which went (never their value).
    fn say_credentials(&self, e: ActError, reference: &str, sent: bool) -> ActError {
        match e {
            ActError::RegistryAuth { image, message } => ActError::RegistryAuth {
                message: format!(
                    "{message} (credentials sent: {})",
                    self.credentials_sent(reference, sent)
                ),
                image,
            },
            other => other,
        }
    }

    /// The local image `id` as a local build of `image`'s repository,
    /// named by its commit tag when it has one; `None` when the store lacks
    /// it.
    async fn local_build(
        &self,
        image: &ImageRef,
        id: &str,
    ) -> Result<Option<EnsuredImage>, ActError> {
        let info = match self.docker.inspect_image(id).await {
            Ok(info) => info,
            Err(e) => {
                return match DockerError::from(e) {
                    DockerError::NotFound { .. } => Ok(None),
                    other => Err(ActError::docker("inspect image", other)),
                };
            }
        };
        let prefix = format!("{}:", repository(image));
        let tags = info.repo_tags.unwrap_or_default();
        let reference = tags
            .iter()
            .find(|t| t.starts_with(&prefix) && !t.ends_with(":latest"))
            .or_else(|| tags.iter().find(|t| t.starts_with(&prefix)))
            .cloned()
            .unwrap_or_else(|| id.to_string());
        Ok(Some(EnsuredImage {
            reference,
            digest: None,
            id: info.id.unwrap_or_else(|| id.to_string()),
            pulled: false,
        }))
    }

    /// The local image `reference` names, or `None` when the store lacks it.
    pub(super) async fn local_id(&self, reference: &str) -> Result<Option<String>, ActError> {
        match self.docker.inspect_image(reference).await {
            Ok(info) => Ok(Some(info.id.unwrap_or_default())),
            Err(e) => match DockerError::from(e) {
                DockerError::NotFound { .. } => Ok(None),
                other => Err(ActError::docker("inspect image", other)),
            },
        }
    }

    /// Makes `image` local. Registry sources are resolved to a digest and
    /// pulled by it unless already local; `LocalOnly` only looks; a
    /// local-build source is built from its template repository unless an
    /// image of its HEAD is present (never pulled from anywhere).
    pub async fn ensure_image(
        &self,
        image: &ImageRef,
        source: &ImageSource,
        platform: Option<&Platform>,
    ) -> Result<EnsuredImage, ActError> {
        self.ensure_known(image, source, platform, &ResolvedImage::default())
            .await
    }

    /// [`Executor::ensure_image`], holding a moving reference to what
    /// `known` says it names: a tag with a known digest is pulled by that
    /// digest without asking the registry what the tag names now, and a
    /// local build with a known image ID uses that image while it is in
    /// the store (no HEAD check, no build). Only a refresh moves them.
    pub async fn ensure_known(
        &self,
        image: &ImageRef,
        source: &ImageSource,
        platform: Option<&Platform>,
        known: &ResolvedImage,
    ) -> Result<EnsuredImage, ActError> {
        match source {
            ImageSource::LocalBuild { runtime } => {
                if let Some(id) = &known.id
                    && let Some(found) = self.local_build(image, id).await?
                {
                    return Ok(found);
                }
                return self.ensure_built(image, runtime, platform).await;
            }
            ImageSource::LocalOnly => {
                let Some(id) = self.local_id(image.as_str()).await? else {
                    return Err(ActError::ImageNotFound {
                        image: image.to_string(),
                        message: "not in the local image store (WORKSPACE_IMAGE_LOCAL_OVERRIDE never pulls)".into(),
                    });
                };
                return Ok(EnsuredImage {
                    reference: image.to_string(),
                    digest: None,
                    id,
                    pulled: false,
                });
            }
            ImageSource::Explicit | ImageSource::Pinned { .. } | ImageSource::Tag => {}
        }
        let digest = match (image.digest(), &known.digest) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) if image.is_moving() => d.clone(),
            (None, _) => self.resolve(image).await?,
        };
        let by_digest = format!("{}@{digest}", repository(image));
        let reference = match image.tag() {
            Some(tag) => format!("{}:{tag}@{digest}", repository(image)),
            None => by_digest.clone(),
        };
        if let Some(id) = self.local_id(&by_digest).await? {
            return Ok(EnsuredImage {
                reference,
                digest: Some(digest),
                id,
                pulled: false,
            });
        }
        if !image.is_moving() {
            // A pull of a missing manifest fails as a 500 inside the
            // stream; distribution inspect answers 404 and touches nothing.
            self.resolve(image).await?;
        }
        match self.pull(image, &digest, platform).await {
            // A tag's known digest the registry no longer has (the tag
            // moved and the old manifest was deleted): the tag must be
            // resolved anew, which the caller learns from the kind.
            Err(ActError::ImageNotFound { message, .. }) if image.is_moving() => {
                return Err(ActError::DigestGone {
                    image: image.to_string(),
                    digest,
                    message,
                });
            }
            pulled => pulled?,
        }
        let id = self
            .local_id(&by_digest)
            .await?
            .ok_or_else(|| ActError::Gone {
                object: super::Object::Image,
                name: by_digest.clone(),
            })?;
        Ok(EnsuredImage {
            reference,
            digest: Some(digest),
            id,
            pulled: true,
        })
    }

    /// Pulls `<repository of image>@<digest>`, always by digest (an empty
    /// tag would pull every tag). The stream is dropped — and the daemon's
    /// pull with it — when no message arrives within the progress timeout
    /// or the whole pull passes the total timeout; an error inside the
    /// stream is an error even though the answer began with 200.
    pub async fn pull(
        &self,
        image: &ImageRef,
        digest: &Digest,
        platform: Option<&Platform>,
    ) -> Result<(), ActError> {
        let reference = &format!("{}@{digest}", repository(image));
        let host = registry_host(reference);
        self.registries.admit(host, reference)?;
        let pulled = self.pull_stream(reference, platform).await;
        self.registries.answered(host, pulled.as_ref().map(|_| ()));
        pulled
    }

    async fn pull_stream(
        &self,
        reference: &str,
        platform: Option<&Platform>,
    ) -> Result<(), ActError> {
        let creds = self.credentials(reference).await?;
        let sent = creds.is_some();
        let mut opts = CreateImageOptionsBuilder::new().from_image(reference);
        if let Some(p) = platform {
            opts = opts.platform(&p.0);
        }
        let mut stream = self
            .docker
            .create_image(Some(opts.build()), None, expose(creds));
        let progress = self.settings.pull_progress_timeout;
        let total = self.settings.pull_timeout;
        let drain = async {
            loop {
                match tokio::time::timeout(progress, stream.next()).await {
                    Err(_) => {
                        return Err(ActError::Timeout {
                            what: "pull without progress",
                            after: progress,
                        });
                    }
                    Ok(None) => return Ok(()),
                    Ok(Some(Err(e))) => {
                        let e = registry_error("pull", reference, e.into());
                        return Err(self.say_credentials(e, reference, sent));
                    }
                    Ok(Some(Ok(_))) => {}
                }
            }
        };
        tokio::time::timeout(total, drain)
            .await
            .map_err(|_| ActError::Timeout {
                what: "pull",
                after: total,
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_drops_tag_and_digest_but_keeps_the_registry_port() {
        let d = format!("sha256:{}", "c".repeat(64));
        let r = |s: &str| ImageRef::parse(s).unwrap();
        assert_eq!(
            repository(&r("127.0.0.1:5000/a/b:v1")),
            "127.0.0.1:5000/a/b"
        );
        assert_eq!(repository(&r("127.0.0.1:5000/a/b")), "127.0.0.1:5000/a/b");
        assert_eq!(repository(&r(&format!("reg:5000/x@{d}"))), "reg:5000/x");
        assert_eq!(repository(&r(&format!("reg/x:v2@{d}"))), "reg/x");
    }

    #[test]
    fn a_registry_refusal_relayed_as_a_500_is_the_registrys() {
        let server = |message: &str| DockerError::Server {
            status: 500,
            message: message.into(),
        };
        let head = "Head \"http://127.0.0.1:19600/v2/a/manifests/v4\"";
        let cases = [
            (format!("{head}: unauthorized"), "registry_auth"),
            (
                format!("{head}: no basic auth credentials"),
                "registry_auth",
            ),
            (
                format!("{head}: toomanyrequests: slow down"),
                "registry_rate_limited",
            ),
            ("the engine broke".to_string(), "transient"),
        ];
        for (message, kind) in cases {
            let e = registry_error("distribution inspect", "reg/a:v4", server(&message));
            assert_eq!(e.kind(), kind, "{message}");
        }
    }
}
