//! Local-build mode (DESIGN §1.3): with no registry, a runtime's image is
//! built from its template repository `<prefix><runtime>` and reused until
//! the source changes.
//!
//! The cache key is the repository's HEAD commit, asked of the remote
//! without cloning, and the hash of the Dockerfile built from it. The image
//! is tagged `<repository>:<commit12>` — what containers are created from —
//! and `<repository>:latest` for people; labels on it record the runtime,
//! the commit, the Dockerfile hash and the platform. An image whose labels
//! match means no clone and no build. The checked-out source of the last
//! commit built stays under `<cache>/<runtime>/<commit>/`; when it is there,
//! its Dockerfile must hash to the image's label for the image to count.
//!
//! One ensure per runtime runs at a time: callers for a runtime queue on
//! its lock, and the answer (an image or a failure) of the ensure that
//! finishes while a caller waits is that caller's answer too, so many
//! waiting workspaces cause one HEAD check and at most one build. A caller
//! that arrives when no ensure runs asks HEAD afresh: every ensure that
//! starts after a commit sees it.

mod cache;
mod engine;
mod git;
mod ignore;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::SecretUrl;
use crate::docker::DockerError;
use crate::model::{ImageRef, Platform, Secret};

use super::image::repository;
use super::{ActError, EnsuredImage, Executor};
use cache::prune_contexts;
use engine::{BuildRequest, context_tar, dockerfile_hash};
use git::Remote;

/// Labels berth puts on the images it builds.
pub const LABEL_BUILD_RUNTIME: &str = "berth.build.runtime";
pub const LABEL_BUILD_COMMIT: &str = "berth.build.commit";
pub const LABEL_BUILD_DOCKERFILE: &str = "berth.build.dockerfile";
pub const LABEL_BUILD_PLATFORM: &str = "berth.build.platform";

/// `BERTH_BUILD_PROGRESS_TIMEOUT`'s default: a RUN step may print nothing
/// for minutes.
pub const DEFAULT_PROGRESS_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// `BERTH_BUILD_TIMEOUT`'s default: a cold build takes up to 25 minutes
/// (longer under emulation).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(45 * 60);

/// Local-build mode's sources and cache.
#[derive(Clone, Debug)]
pub struct BuildSettings {
    /// `MOLECULE_LOCAL_TEMPLATE_REPO_PREFIX`.
    pub repo_prefix: SecretUrl,
    /// `MOLECULE_LOCAL_BUILD_CACHE`: checked-out sources, per runtime.
    pub cache_dir: PathBuf,
    /// `MOLECULE_GITEA_TOKEN`: authenticates http(s) fetches.
    pub gitea_token: Option<Secret<String>>,
    /// `BERTH_BUILD_PROGRESS_TIMEOUT`: a HEAD check with no answer, or an
    /// engine build with no output, for this long fails.
    pub progress_timeout: Duration,
    /// `BERTH_BUILD_TIMEOUT`: the most the clone and the engine build of
    /// one commit may take together.
    pub timeout: Duration,
}

impl BuildSettings {
    /// The settings with the default deadlines of `BERTH_BUILD_PROGRESS_TIMEOUT`
    /// and `BERTH_BUILD_TIMEOUT`.
    pub fn new(
        repo_prefix: SecretUrl,
        cache_dir: PathBuf,
        gitea_token: Option<Secret<String>>,
    ) -> Self {
        BuildSettings {
            repo_prefix,
            cache_dir,
            gitea_token,
            progress_timeout: DEFAULT_PROGRESS_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// What the executor's local builds have done since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildCounts {
    /// `git ls-remote` calls.
    pub head_checks: u64,
    pub clones: u64,
    /// Builds started on the engine.
    pub builds: u64,
}

/// One runtime's lock, its last answer, and how many answers it has had.
#[derive(Debug, Default)]
struct Slot {
    /// The last answer and its sequence number.
    last: tokio::sync::Mutex<Option<(u64, Result<EnsuredImage, ActError>)>>,
    /// Answers given so far; read without the lock on arrival.
    answered: AtomicU64,
}

/// Per-runtime locks with the last answer, and counters.
#[derive(Debug, Default)]
pub(super) struct Builds {
    runtimes: Mutex<HashMap<String, Arc<Slot>>>,
    head_checks: AtomicU64,
    clones: AtomicU64,
    builds: AtomicU64,
    /// Callers parked behind another caller's check or build of the same
    /// runtime: they do no work, so the controller does not count them
    /// against its concurrency.
    parked: AtomicUsize,
    /// Signalled when a caller parks, so the controller can start other
    /// work in the slot it no longer needs.
    parked_changed: tokio::sync::Notify,
}

/// Counts a parked caller for as long as it lives (an aborted pass
/// included).
struct Parked<'a>(&'a Builds);

impl<'a> Parked<'a> {
    fn new(builds: &'a Builds) -> Self {
        builds.parked.fetch_add(1, Ordering::SeqCst);
        builds.parked_changed.notify_one();
        Parked(builds)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.parked.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Builds {
    fn slot(&self, runtime: &str) -> Arc<Slot> {
        let mut map = self
            .runtimes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(runtime.to_string()).or_default().clone()
    }
}

/// A build of `image` that could not make it, and why.
fn build_failed(image: &ImageRef, message: String) -> ActError {
    ActError::BuildFailed {
        image: image.to_string(),
        message,
    }
}

/// Runtime names go into a URL, a path and an image name: lower-case
/// letters, digits, `.`, `_` and `-`, starting with a letter or digit.
fn valid_runtime(name: &str) -> bool {
    name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && !name.contains("..")
}

impl Executor {
    /// What the local builds have done so far.
    pub fn build_counts(&self) -> BuildCounts {
        let b = &self.builds;
        BuildCounts {
            head_checks: b.head_checks.load(Ordering::Relaxed),
            clones: b.clones.load(Ordering::Relaxed),
            builds: b.builds.load(Ordering::Relaxed),
        }
    }

    /// Passes parked behind another pass's check or build of the same
    /// runtime now.
    pub fn parked_on_builds(&self) -> usize {
        self.builds.parked.load(Ordering::SeqCst)
    }

    /// Resolves when a pass parks behind a build (at once if one parked
    /// since the last call).
    pub async fn pass_parked(&self) {
        self.builds.parked_changed.notified().await;
    }

    /// The image of `runtime`'s template repository at its HEAD, built if
    /// no image matches; `image` names the repository it is tagged in.
    pub(super) async fn ensure_built(
        &self,
        image: &ImageRef,
        runtime: &str,
        platform: Option<&Platform>,
    ) -> Result<EnsuredImage, ActError> {
        let failed = |message: String| build_failed(image, message);
        let crate::act::Images::LocalBuild(settings) = &self.settings.images else {
            return Err(failed(
                "local-build mode is off (MOLECULE_IMAGE_REGISTRY is set)".into(),
            ));
        };
        if !valid_runtime(runtime) {
            return Err(failed(format!(
                "runtime name {runtime:?} cannot name a template repository"
            )));
        }
        let slot = self.builds.slot(runtime);
        let arrived = slot.answered.load(Ordering::SeqCst);
        let mut last = match slot.last.try_lock() {
            Ok(last) => last,
            Err(_) => {
                let _parked = Parked::new(&self.builds);
                slot.last.lock().await
            }
        };
        if let Some((seq, result)) = last.as_ref()
            && *seq > arrived
        {
            // Made while this caller waited: shared, not asked again.
            return result.clone();
        }
        let result = self
            .build_or_reuse(settings, image, runtime, platform)
            .await;
        let seq = slot.answered.fetch_add(1, Ordering::SeqCst) + 1;
        *last = Some((seq, result.clone()));
        result
    }

    async fn build_or_reuse(
        &self,
        settings: &BuildSettings,
        image: &ImageRef,
        runtime: &str,
        platform: Option<&Platform>,
    ) -> Result<EnsuredImage, ActError> {
        let failed = |message: String| build_failed(image, message);
        let repo = repository(image);
        let remote = Remote::new(
            &settings.repo_prefix,
            runtime,
            settings.gitea_token.as_ref(),
        );
        self.builds.head_checks.fetch_add(1, Ordering::Relaxed);
        let head = remote
            .head(settings.progress_timeout)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let runtime_dir = settings.cache_dir.join(runtime);
        let tag = format!("{repo}:{}", &head[..12]);
        if let Some(id) = self
            .matching_image(&tag, &head, &runtime_dir.join(&head), platform)
            .await?
        {
            tracing::debug!(runtime, commit = &head[..12], "local build: image present");
            self.point_latest(repo, &tag, &id).await?;
            return Ok(local(tag, id));
        }

        let deadline = tokio::time::Instant::now() + settings.timeout;
        let (commit, context) = match self
            .checkout(&remote, &runtime_dir, &head, settings.timeout)
            .await
        {
            Ok(found) => found,
            Err(message) => return Err(failed(message)),
        };
        let tag = format!("{repo}:{}", &commit[..12]);
        let dockerfile = match tokio::fs::read(context.join("Dockerfile")).await {
            Ok(bytes) => bytes,
            Err(e) => {
                let message = format!("commit {}: no Dockerfile at the root: {e}", &commit[..12]);
                return Err(failed(message));
            }
        };
        let mut labels = HashMap::from([
            (LABEL_BUILD_RUNTIME.to_string(), runtime.to_string()),
            (LABEL_BUILD_COMMIT.to_string(), commit.clone()),
            (
                LABEL_BUILD_DOCKERFILE.to_string(),
                dockerfile_hash(&dockerfile),
            ),
        ]);
        if let Some(p) = platform {
            labels.insert(LABEL_BUILD_PLATFORM.to_string(), p.0.clone());
        }
        let dir = context.clone();
        let tar = tokio::task::spawn_blocking(move || context_tar(&dir))
            .await
            .map_err(|e| failed(format!("packing the build context: {e}")))?
            .map_err(|e| failed(format!("packing the build context: {e}")))?;
        self.builds.builds.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        tracing::info!(
            runtime,
            commit = &commit[..12],
            context_bytes = tar.len(),
            "local build: building"
        );
        let request = BuildRequest {
            tag: &tag,
            labels,
            platform,
            context: tar,
            progress_timeout: settings.progress_timeout,
            deadline,
            timeout: settings.timeout,
        };
        self.run_build(request).await.map_err(|e| match e {
            ActError::BuildFailed { message, .. } => failed(format!(
                "commit {}: {}",
                &commit[..12],
                remote.mask(&message)
            )),
            other => other,
        })?;
        let id = self.local_id(&tag).await?.ok_or_else(|| {
            failed(format!(
                "the build of commit {} left no image",
                &commit[..12]
            ))
        })?;
        tracing::info!(runtime, commit = &commit[..12], image_id = %id, took_ms = started.elapsed().as_millis() as u64, "local build: image built");
        self.point_latest(repo, &tag, &id).await?;
        prune_contexts(&runtime_dir, &commit).await;
        Ok(local(tag, id))
    }

    /// The id of the image `tag` names when it was built from `commit` for
    /// `platform` and, when the commit's source is kept in `context`, from
    /// its Dockerfile.
    async fn matching_image(
        &self,
        tag: &str,
        commit: &str,
        context: &Path,
        platform: Option<&Platform>,
    ) -> Result<Option<String>, ActError> {
        let info = match self.docker.inspect_image(tag).await {
            Ok(info) => info,
            Err(e) => {
                return match DockerError::from(e) {
                    DockerError::NotFound { .. } => Ok(None),
                    other => Err(ActError::docker("inspect image", other)),
                };
            }
        };
        let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
        let label = |key: &str| labels.get(key).map(String::as_str);
        if label(LABEL_BUILD_COMMIT) != Some(commit)
            || label(LABEL_BUILD_PLATFORM) != platform.map(|p| p.0.as_str())
        {
            return Ok(None);
        }
        if let Ok(bytes) = tokio::fs::read(context.join("Dockerfile")).await
            && label(LABEL_BUILD_DOCKERFILE) != Some(dockerfile_hash(&bytes).as_str())
        {
            return Ok(None);
        }
        Ok(info.id)
    }

    /// Tags image `id` (named by `tag`) as `<repo>:latest` unless it is.
    async fn point_latest(&self, repo: &str, tag: &str, id: &str) -> Result<(), ActError> {
        let latest = format!("{repo}:latest");
        if self.local_id(&latest).await?.as_deref() == Some(id) {
            return Ok(());
        }
        let opts = bollard::query_parameters::TagImageOptionsBuilder::new()
            .repo(repo)
            .tag("latest")
            .build();
        self.docker
            .tag_image(tag, Some(opts))
            .await
            .map_err(|e| ActError::docker("tag image", e))
    }
}

fn local(reference: String, id: String) -> EnsuredImage {
    EnsuredImage {
        reference,
        digest: None,
        id,
        pulled: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A template repository that accepts connections and never answers:
    /// the HEAD check gives up after the build's progress timeout, whatever
    /// the pull deadlines say.
    #[tokio::test]
    async fn the_head_check_gives_up_after_the_build_progress_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let cache = tempfile::tempdir().unwrap();
        let prefix = SecretUrl::new(&format!("http://127.0.0.1:{port}/tpl-"));
        let mut build = BuildSettings::new(prefix, cache.path().to_path_buf(), None);
        build.progress_timeout = std::time::Duration::from_secs(1);
        let mut settings = crate::act::tests::settings();
        settings.pull_progress_timeout = std::time::Duration::from_secs(600);
        settings.pull_timeout = std::time::Duration::from_secs(600);
        settings.images = crate::act::Images::LocalBuild(build);
        let docker = bollard::Docker::connect_with_local_defaults().expect("a client");
        let exec = Executor::new(docker, settings);
        let image = ImageRef::parse("molecule-local/workspace-template-lb:latest").unwrap();

        let waited = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            exec.ensure_built(&image, "lb", None),
        )
        .await;
        silent.abort();
        let err = waited.expect("the HEAD check gave up").unwrap_err();
        assert!(matches!(err, ActError::BuildFailed { .. }), "{err}");
        assert!(err.to_string().contains("no answer within 1s"), "{err}");
        assert_eq!(exec.build_counts().clones, 0);
    }

    #[test]
    fn runtime_names_cannot_escape_a_path_or_url() {
        for ok in ["codex", "claude-code", "gemini-cli", "a.b_c", "lb1"] {
            assert!(valid_runtime(ok), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/b",
            "-x",
            ".x",
            "A",
            "a..b",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(!valid_runtime(bad), "{bad}");
        }
    }
}
