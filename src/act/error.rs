//! The executor's errors: each says which row reason it stands for, or
//! that it is transient (state unknown, retry with backoff).

use std::time::Duration;

use crate::docker::DockerError;
use crate::model::Reason;

/// The kind of Docker object an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    Container,
    Volume,
    Network,
    Image,
}

impl std::fmt::Display for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Object::Container => "container",
            Object::Volume => "volume",
            Object::Network => "network",
            Object::Image => "image",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActError {
    /// The object with this name (or id) lacks berth's managed label, or
    /// belongs to another host or workspace; berth never touches it.
    #[error("{object} {name} is not berth's: {detail}")]
    NameConflict {
        object: Object,
        name: String,
        detail: String,
    },
    /// The daemon refused to start the container; its words.
    #[error("start of {container} refused: {message}")]
    StartFailed { container: String, message: String },
    #[error("image {image} not found: {message}")]
    ImageNotFound { image: String, message: String },
    /// The digest a moving tag named when berth last resolved it is no
    /// longer in the registry (deleted, garbage-collected): nothing can be
    /// made from it, and the tag must be resolved anew.
    #[error(
        "image {image}: {digest}, which the tag named when berth last resolved it, is no longer in the registry ({message}); the tag is resolved again"
    )]
    DigestGone {
        image: String,
        digest: crate::model::Digest,
        message: String,
    },
    #[error("registry refused access to {image}: {message}")]
    RegistryAuth { image: String, message: String },
    #[error("registry rate limit for {image}: {message}")]
    RegistryRateLimited { image: String, message: String },
    /// A local build could not make the image: the template repository is
    /// unreachable or missing, its Dockerfile fails, or the build stalls;
    /// the message says which, with the build log's last lines.
    #[error("local build of {image} failed: {message}")]
    BuildFailed { image: String, message: String },
    /// The files for /configs cannot be written safely (a path escaping
    /// /configs, an unreadable template dir).
    #[error("files for /configs: {message}")]
    InvalidFiles { message: String },
    /// After the files are written, /configs of the created container
    /// (the configs volume plus what berth wrote) holds no config.yaml:
    /// the workspace would only crash-loop, so it is not started.
    #[error(
        "no config.yaml in /configs of {container}: config_files and template_path hold none and the configs volume {volume} has none"
    )]
    ConfigMissing { container: String, volume: String },
    /// A host directory the container would bind does not resolve, symlinks
    /// followed, under `BERTH_WORKSPACE_ROOTS`, or does not resolve at all;
    /// the container is not created.
    #[error("host directory {dir:?} for {target}: {detail}")]
    InvalidBind {
        dir: String,
        target: String,
        detail: String,
    },
    /// The object an action addresses is gone; the next pass plans again.
    #[error("{object} {name} is gone")]
    Gone { object: Object, name: String },
    /// An owned object is in the way (a container of the workspace holds
    /// the name with another spec); the next pass plans around it.
    #[error("{object} {name} already exists: {detail}")]
    InTheWay {
        object: Object,
        name: String,
        detail: String,
    },
    /// A pull made no progress, or took too long in all.
    #[error("{what} exceeded {after:?}")]
    Timeout { what: &'static str, after: Duration },
    /// The change was not sent: this instance no longer holds the host
    /// lease (see [`super::fenced`]).
    #[error("{action} not sent: this instance no longer holds the host lease")]
    Fenced { action: &'static str },
    /// Any other Docker answer, classified by status.
    #[error("{action}: {source}")]
    Docker {
        action: &'static str,
        #[source]
        source: DockerError,
    },
}

impl ActError {
    pub(crate) fn docker(action: &'static str, source: impl Into<DockerError>) -> Self {
        ActError::Docker {
            action,
            source: source.into(),
        }
    }

    /// The row reason this error stands for; `None` for errors that are
    /// retried without a reason of their own (transient, gone, in the way).
    pub fn reason(&self) -> Option<Reason> {
        match self {
            ActError::NameConflict { .. } => Some(Reason::NameConflict),
            ActError::StartFailed { .. } => Some(Reason::StartFailed),
            ActError::ImageNotFound { .. } | ActError::DigestGone { .. } => {
                Some(Reason::ImageNotFound)
            }
            ActError::RegistryAuth { .. } => Some(Reason::RegistryAuth),
            ActError::RegistryRateLimited { .. } => Some(Reason::RegistryRateLimited),
            ActError::BuildFailed { .. } => Some(Reason::ImageBuildFailed),
            ActError::InvalidFiles { .. } | ActError::InvalidBind { .. } => {
                Some(Reason::InvalidSpec)
            }
            ActError::ConfigMissing { .. } => Some(Reason::ConfigMissing),
            ActError::Docker { source, .. } => match source {
                DockerError::Auth { .. } => Some(Reason::RegistryAuth),
                DockerError::RateLimited { .. } => Some(Reason::RegistryRateLimited),
                _ => None,
            },
            ActError::Gone { .. }
            | ActError::InTheWay { .. }
            | ActError::Timeout { .. }
            | ActError::Fenced { .. } => None,
        }
    }

    /// The state is unknown and the same action may succeed later: retry
    /// with backoff, and never read it as "absent".
    pub fn is_transient(&self) -> bool {
        match self {
            ActError::Timeout { .. } | ActError::RegistryRateLimited { .. } => true,
            ActError::Docker { source, .. } => source.is_transient(),
            _ => false,
        }
    }

    /// The state is known and other than the plan assumed (the object is
    /// gone, or another of the workspace's containers holds the name):
    /// plan again from a fresh observation, without a backoff of its own.
    pub fn needs_replan(&self) -> bool {
        matches!(self, ActError::Gone { .. } | ActError::InTheWay { .. })
    }

    /// A bounded label for metrics (`docker_actions_total{result}`).
    pub fn kind(&self) -> &'static str {
        match self {
            ActError::NameConflict { .. } => "name_conflict",
            ActError::StartFailed { .. } => "start_failed",
            ActError::ImageNotFound { .. } | ActError::DigestGone { .. } => "image_not_found",
            ActError::RegistryAuth { .. } => "registry_auth",
            ActError::RegistryRateLimited { .. } => "registry_rate_limited",
            ActError::BuildFailed { .. } => "image_build_failed",
            ActError::InvalidFiles { .. } | ActError::InvalidBind { .. } => "invalid_spec",
            ActError::ConfigMissing { .. } => "config_missing",
            ActError::Gone { .. } => "gone",
            ActError::InTheWay { .. } => "in_the_way",
            ActError::Timeout { .. } => "timeout",
            ActError::Fenced { .. } => "lease_lost",
            ActError::Docker { source, .. } if source.is_transient() => "transient",
            ActError::Docker { source, .. } => source.kind(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_onto_the_row_reasons_or_transient() {
        let conflict = ActError::NameConflict {
            object: Object::Volume,
            name: "ws-x-configs".into(),
            detail: "no managed label".into(),
        };
        assert_eq!(conflict.reason(), Some(Reason::NameConflict));
        assert!(!conflict.is_transient());

        let server = ActError::docker(
            "inspect",
            DockerError::Server {
                status: 500,
                message: "dial tcp: connection refused".into(),
            },
        );
        assert_eq!(server.reason(), None);
        assert!(server.is_transient());
        assert_eq!(server.kind(), "transient");

        let auth = ActError::docker(
            "pull",
            DockerError::Auth {
                message: "unauthorized".into(),
            },
        );
        assert_eq!(auth.reason(), Some(Reason::RegistryAuth));
        assert!(!auth.is_transient());

        let stalled = ActError::Timeout {
            what: "pull without progress",
            after: Duration::from_secs(120),
        };
        assert!(stalled.is_transient());
        assert_eq!(stalled.reason(), None);
        assert!(!stalled.needs_replan());

        let gone = ActError::Gone {
            object: Object::Container,
            name: "abc".into(),
        };
        assert!(gone.needs_replan() && !gone.is_transient());
        assert_eq!(gone.reason(), None);
    }
}
