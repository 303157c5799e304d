//! The executor: the only code that changes anything on the Docker host.
//!
//! One method per planner action ([`crate::plan::Op`]), each idempotent
//! against the state it expects, and [`Executor::apply`] to run a plan's
//! op. Every mutating call first inspects the object and checks that it
//! carries berth's managed label and this host's id (or no host id: a
//! legacy object); an object that fails the check is a
//! [`ActError::NameConflict`] and is never touched.

mod apply;
mod auth;
mod binds;
mod build;
mod container;
mod error;
mod files;
mod image;
mod network;
mod registry;
mod retention;
mod volume;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use tokio::sync::{Mutex, OnceCell};

use crate::config::{Config, ImageMode, RegistryAuth};
use crate::model::{LABEL_HOST, LABEL_MANAGED, LABEL_WORKSPACE, WorkspaceId};

tokio::task_local! {
    /// Whether this instance may still change the engine, asked right
    /// before each change is sent (see [`fenced`]).
    static FENCE: Arc<dyn Fn() -> bool + Send + Sync>;
}

/// Runs `work` with `fence` asked right before every change the executor
/// sends to the engine (a create, start, stop, rename, removal, upload,
/// volume or network made): one it refuses is not sent, and the step
/// fails with [`ActError::Fenced`]. A check before each step is not
/// enough: a step inspects first, and a process frozen during that call
/// would send its change on waking, after another instance took the host.
/// Outside `fenced` (the commands, tests) every change is sent.
pub async fn fenced<F: std::future::Future>(
    fence: Arc<dyn Fn() -> bool + Send + Sync>,
    work: F,
) -> F::Output {
    FENCE.scope(fence, work).await
}

/// `Ok` when the change named `action` may be sent now.
fn may_change(action: &'static str) -> Result<(), ActError> {
    match FENCE.try_with(|fence| fence()) {
        Ok(false) => Err(ActError::Fenced { action }),
        _ => Ok(()),
    }
}

pub use apply::{Outcome, Run};
pub use build::{BuildCounts, BuildSettings};
pub use container::container_body;
pub use error::{ActError, Object};
pub use files::build_archive;
pub use image::{EnsuredImage, repository};
pub use registry::Refusal;
pub use retention::ImageRemoval;

/// What the executor needs of the configuration.
#[derive(Clone, Debug)]
pub struct ExecutorSettings {
    /// `BERTH_HOST_ID`.
    pub host_id: String,
    /// Where runtime images come from, as configuration decided it.
    pub images: Images,
    /// `GHCR_USER`/`GHCR_TOKEN`.
    pub registry_auth: Option<RegistryAuth>,
    /// The docker CLI config file (`auths`, `credHelpers`, `credsStore`),
    /// read at each registry call that needs credentials; `None` = none.
    pub docker_config: Option<PathBuf>,
    /// `BERTH_PULL_PROGRESS_TIMEOUT`: a pull with no message for this long
    /// is abandoned.
    pub pull_progress_timeout: Duration,
    /// `BERTH_PULL_TIMEOUT`: the most one pull may take.
    pub pull_timeout: Duration,
    /// Labels added to the workspace network when berth creates it, beside
    /// the managed and host labels.
    pub network_labels: BTreeMap<String, String>,
    /// `BERTH_WORKSPACE_ROOTS`: a host directory a container binds must
    /// resolve, symlinks followed, under one of them; none allows no bind.
    pub workspace_roots: Vec<PathBuf>,
}

impl ExecutorSettings {
    /// The settings from the parsed configuration, binding under its
    /// `BERTH_WORKSPACE_ROOTS`; `docker_config` is where the caller found
    /// the docker CLI config file.
    pub fn from_config(config: &Config, docker_config: Option<PathBuf>) -> ExecutorSettings {
        ExecutorSettings {
            host_id: config.host_id.clone(),
            images: match &config.images {
                ImageMode::Registry { prefix } => Images::Registry {
                    prefix: prefix.clone(),
                },
                ImageMode::LocalBuild {
                    repo_prefix,
                    cache_dir,
                    gitea_token,
                } => Images::LocalBuild(BuildSettings {
                    progress_timeout: config.build_progress_timeout,
                    timeout: config.build_timeout,
                    ..BuildSettings::new(
                        repo_prefix.clone(),
                        cache_dir.clone(),
                        gitea_token.clone(),
                    )
                }),
            },
            registry_auth: config.registry_auth.clone(),
            docker_config,
            pull_progress_timeout: config.pull_progress_timeout,
            pull_timeout: config.pull_timeout,
            network_labels: BTreeMap::new(),
            workspace_roots: config.workspace_roots.clone(),
        }
    }
}

/// The executor's side of the image mode (`config::ImageMode`): one value,
/// so a registry prefix and build settings never both apply.
#[derive(Clone, Debug)]
pub enum Images {
    /// Registry mode: images come from `prefix` (`MOLECULE_IMAGE_REGISTRY`),
    /// whose host the GHCR credentials are for; nothing is built.
    Registry { prefix: String },
    /// Local-build mode: runtime images are built from their template
    /// repositories, with these sources and cache.
    LocalBuild(BuildSettings),
}

impl Images {
    /// The registry prefix in registry mode.
    pub fn registry_prefix(&self) -> Option<&str> {
        match self {
            Images::Registry { prefix } => Some(prefix),
            Images::LocalBuild(_) => None,
        }
    }
}

/// The Docker client and what every action needs; cheap to clone.
#[derive(Clone, Debug)]
pub struct Executor {
    docker: Docker,
    settings: ExecutorSettings,
    /// Serializes the network's check-then-create.
    network_lock: Arc<Mutex<()>>,
    /// The host's CPU count as NanoCPUs, asked of the engine once.
    host_cpus: Arc<OnceCell<i64>>,
    /// Local builds: one at a time per runtime, answers shared briefly.
    builds: Arc<build::Builds>,
    /// Registries that refused lately, left alone by every workspace.
    registries: Arc<registry::Registries>,
    /// When the image retention sweep last ran.
    image_sweeps: Arc<retention::SweepClock>,
}

impl Executor {
    pub fn new(docker: Docker, settings: ExecutorSettings) -> Self {
        Executor {
            docker,
            settings,
            network_lock: Arc::default(),
            host_cpus: Arc::default(),
            builds: Arc::default(),
            registries: Arc::default(),
            image_sweeps: Arc::default(),
        }
    }

    pub fn host_id(&self) -> &str {
        &self.settings.host_id
    }

    /// Registries in backoff now because they refused for `refusal`.
    pub fn registries_refusing(&self, refusal: Refusal) -> usize {
        self.registries.count(refusal)
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Why `labels` do not make an object of this host's (and, when given,
    /// of this workspace's), or `None` when they do. Ownership is the
    /// managed label and `berth.host` equal to this host or absent (legacy).
    fn not_owned(
        &self,
        labels: Option<&HashMap<String, String>>,
        workspace: Option<WorkspaceId>,
    ) -> Option<String> {
        let empty = HashMap::new();
        let labels = labels.unwrap_or(&empty);
        if labels.get(LABEL_MANAGED).map(String::as_str) != Some("true") {
            return Some(format!("it lacks the label {LABEL_MANAGED}=true"));
        }
        if let Some(host) = labels.get(LABEL_HOST)
            && host != &self.settings.host_id
        {
            return Some(format!("it belongs to host {host:?}"));
        }
        if let (Some(want), Some(have)) = (workspace, labels.get(LABEL_WORKSPACE))
            && have != &want.to_string()
        {
            return Some(format!("it belongs to workspace {have}"));
        }
        None
    }
}

/// Labels as Docker takes them.
fn docker_labels(labels: &BTreeMap<String, String>) -> HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_is_sent_only_while_the_fence_allows_it() {
        assert!(may_change("stop container").is_ok(), "no fence: sent");
        let allowed = fenced(Arc::new(|| true), async { may_change("stop container") }).await;
        assert!(allowed.is_ok());
        let refused = fenced(Arc::new(|| false), async { may_change("stop container") }).await;
        match refused {
            Err(e @ ActError::Fenced { .. }) => {
                assert_eq!(e.kind(), "lease_lost");
                assert!(e.to_string().contains("stop container not sent"), "{e}");
            }
            other => panic!("expected Fenced, got {other:?}"),
        }
    }

    pub(crate) fn settings() -> ExecutorSettings {
        ExecutorSettings {
            host_id: "h1".into(),
            images: Images::Registry {
                prefix: "registry.test/ws".into(),
            },
            registry_auth: None,
            docker_config: None,
            pull_progress_timeout: Duration::from_secs(5),
            pull_timeout: Duration::from_secs(60),
            network_labels: BTreeMap::new(),
            workspace_roots: Vec::new(),
        }
    }

    fn executor() -> Executor {
        let docker = Docker::connect_with_local_defaults().expect("a client (no connection yet)");
        Executor::new(docker, settings())
    }

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn ownership_is_the_managed_label_and_this_host_or_none() {
        let exec = executor();
        let id: WorkspaceId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
        let owned = labels(&[(LABEL_MANAGED, "true"), (LABEL_HOST, "h1")]);
        assert_eq!(exec.not_owned(Some(&owned), None), None);
        let legacy = labels(&[(LABEL_MANAGED, "true")]);
        assert_eq!(exec.not_owned(Some(&legacy), Some(id)), None);
        assert!(exec.not_owned(None, None).is_some());
        let unmanaged = labels(&[(LABEL_HOST, "h1")]);
        assert!(exec.not_owned(Some(&unmanaged), None).is_some());
        let other_host = labels(&[(LABEL_MANAGED, "true"), (LABEL_HOST, "h2")]);
        assert!(exec.not_owned(Some(&other_host), None).is_some());
        let other_ws = labels(&[(LABEL_MANAGED, "true"), (LABEL_WORKSPACE, "x")]);
        assert!(exec.not_owned(Some(&other_ws), Some(id)).is_some());
        assert_eq!(exec.not_owned(Some(&other_ws), None), None);
    }
}
