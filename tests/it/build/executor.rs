//! The executor's local builds, called directly: one build for many
//! waiting callers, no clone and no build while HEAD stays, one build per
//! new commit, and failures that say why.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth::act::{ActError, BuildCounts, BuildSettings, Executor, ExecutorSettings, Images};
use berth::config::SecretUrl;
use berth::model::{ImageRef, ImageSource, Platform};

use super::{Templates, broken_dockerfile, good_dockerfile, image_ids};
use crate::harness::docker;

pub fn executor(docker: &bollard::Docker, t: &Templates) -> Executor {
    executor_with(docker, t, Duration::from_secs(60), Duration::from_secs(120))
}

/// An executor whose builds have these deadlines; its pull deadlines are
/// longer than any test, so only the build's own can end a build.
fn executor_with(
    docker: &bollard::Docker,
    t: &Templates,
    progress: Duration,
    total: Duration,
) -> Executor {
    let mut build = BuildSettings::new(SecretUrl::new(&t.prefix), t.cache.clone(), None);
    build.progress_timeout = progress;
    build.timeout = total;
    let settings = ExecutorSettings {
        host_id: "default".into(),
        registry_auth: None,
        docker_config: None,
        pull_progress_timeout: Duration::from_secs(600),
        pull_timeout: Duration::from_secs(600),
        network_labels: BTreeMap::new(),
        images: Images::LocalBuild(build),
        workspace_roots: Vec::new(),
    };
    Executor::new(docker.clone(), settings)
}

/// The planner's placeholder for `runtime` and its source.
pub fn placeholder(runtime: &str) -> (ImageRef, ImageSource) {
    let image = ImageRef::parse(&format!("{}:latest", Templates::repository(runtime))).unwrap();
    let source = ImageSource::LocalBuild {
        runtime: runtime.into(),
    };
    (image, source)
}

fn counts(head_checks: u64, clones: u64, builds: u64) -> BuildCounts {
    BuildCounts {
        head_checks,
        clones,
        builds,
    }
}

async fn labels(
    docker: &bollard::Docker,
    reference: &str,
) -> std::collections::HashMap<String, String> {
    let info = docker.inspect_image(reference).await.unwrap();
    info.config.and_then(|c| c.labels).unwrap_or_default()
}

#[tokio::test]
async fn ten_waiting_callers_share_one_build_and_a_new_commit_builds_once_more() {
    let docker = docker::docker().await;
    let mut t = Templates::new();
    let rt = t.runtime();
    let head = t.repo(&rt, &good_dockerfile());
    let (image, source) = placeholder(&rt);

    let exec = executor(&docker, &t);
    let started = Instant::now();
    let calls = (0..10).map(|_| exec.ensure_image(&image, &source, None));
    let results = futures::future::join_all(calls).await;
    let first_build = started.elapsed();
    let ensured: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    assert!(ensured.iter().all(|e| e == &ensured[0]), "{ensured:?}");
    let first = ensured[0].clone();
    assert_eq!(
        exec.build_counts(),
        counts(1, 1, 1),
        "one HEAD check, clone, build"
    );
    let repo = Templates::repository(&rt);
    assert_eq!(first.reference, format!("{repo}:{}", &head[..12]));
    assert_eq!(first.digest, None, "a local build has no manifest digest");
    assert!(!first.pulled);
    let tagged = docker
        .inspect_image(&format!("{repo}:latest"))
        .await
        .unwrap();
    assert_eq!(
        tagged.id.as_deref(),
        Some(first.id.as_str()),
        ":latest for people"
    );
    let l = labels(&docker, &first.reference).await;
    assert_eq!(l.get("berth.build.commit"), Some(&head));
    assert_eq!(l.get("berth.build.runtime"), Some(&rt));
    assert!(
        l.get("berth.build.dockerfile")
            .is_some_and(|h| h.starts_with("sha256:"))
    );
    assert!(
        t.cache.join(&rt).join(&head).join("Dockerfile").is_file(),
        "context kept"
    );

    // A fresh executor (a restarted berth) asks HEAD and finds the image.
    let again = executor(&docker, &t);
    let started = Instant::now();
    let hit = again.ensure_image(&image, &source, None).await.unwrap();
    let cache_hit = started.elapsed();
    assert_eq!(hit, first);
    assert_eq!(again.build_counts(), counts(1, 0, 0), "no clone, no build");

    let new_head = t.commit(&rt, "version", "2\n");
    let started = Instant::now();
    let rebuilt = again.ensure_image(&image, &source, None).await.unwrap();
    let rebuild = started.elapsed();
    assert_ne!(rebuilt.id, first.id, "a new HEAD is a new image");
    assert_eq!(rebuilt.reference, format!("{repo}:{}", &new_head[..12]));
    assert_eq!(again.build_counts(), counts(2, 1, 1));
    let tagged = docker
        .inspect_image(&format!("{repo}:latest"))
        .await
        .unwrap();
    assert_eq!(tagged.id.as_deref(), Some(rebuilt.id.as_str()));
    assert_eq!(
        image_ids(&docker, &rt).await.len(),
        2,
        "the old commit's image stays"
    );
    let kept: Vec<_> = std::fs::read_dir(t.cache.join(&rt))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept, [new_head], "only the newest source is kept");
    eprintln!(
        "executor timings: first build (10 callers) {first_build:?}, cache hit {cache_hit:?}, rebuild after a commit {rebuild:?}"
    );
}

#[tokio::test]
async fn a_changed_dockerfile_in_the_kept_source_is_not_the_image_built_before() {
    let docker = docker::docker().await;
    let mut t = Templates::new();
    let rt = t.runtime();
    let head = t.repo(&rt, &good_dockerfile());
    let (image, source) = placeholder(&rt);
    let exec = executor(&docker, &t);
    let first = exec.ensure_image(&image, &source, None).await.unwrap();
    let kept = t.cache.join(&rt).join(&head).join("Dockerfile");
    let edited = format!("{}LABEL edited=yes\n", good_dockerfile());
    std::fs::write(&kept, edited).unwrap();
    let second = exec.ensure_image(&image, &source, None).await.unwrap();
    assert_ne!(second.id, first.id);
    assert_eq!(
        exec.build_counts(),
        counts(2, 1, 2),
        "rebuilt from the kept source"
    );
    let third = exec.ensure_image(&image, &source, None).await.unwrap();
    assert_eq!(third, second);
    assert_eq!(exec.build_counts().builds, 2);
}

fn build_failure(result: Result<berth::act::EnsuredImage, ActError>) -> String {
    match result {
        Err(e @ ActError::BuildFailed { .. }) => {
            assert_eq!(e.reason(), Some(berth::model::Reason::ImageBuildFailed));
            e.to_string()
        }
        other => panic!("expected a build failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_repository_a_failing_dockerfile_and_a_stall_are_build_failures() {
    let docker = docker::docker().await;
    let mut t = Templates::new();
    let exec = executor(&docker, &t);

    let missing = t.runtime();
    let (image, source) = placeholder(&missing);
    let message = build_failure(exec.ensure_image(&image, &source, None).await);
    assert!(message.contains("ls-remote"), "{message}");
    assert!(message.contains(&format!("tpl-{missing}")), "{message}");
    assert_eq!(exec.build_counts(), counts(1, 0, 0));

    let broken = t.runtime();
    t.repo(&broken, &broken_dockerfile());
    let (image, source) = placeholder(&broken);
    let message = build_failure(exec.ensure_image(&image, &source, None).await);
    assert!(message.contains("missing dependency libfoo"), "{message}");
    assert!(message.contains("non-zero code: 3"), "{message}");
    assert!(image_ids(&docker, &broken).await.is_empty());

    let stalls = t.runtime();
    let run = crate::harness::env().run_id;
    let stalling = format!(
        "FROM scratch\nLABEL berth.test-run={run}\nCOPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"sleep\", \"30\"]\n"
    );
    t.repo(&stalls, &stalling);
    let (image, source) = placeholder(&stalls);
    let second = Duration::from_secs(1);
    let impatient = executor_with(&docker, &t, 3 * second, 120 * second);
    let started = Instant::now();
    let message = build_failure(impatient.ensure_image(&image, &source, None).await);
    assert!(message.contains("no build output for 3s"), "{message}");
    assert!(started.elapsed() < 20 * second, "the deadline held");
    let hurried = executor_with(&docker, &t, 60 * second, 3 * second);
    let started = Instant::now();
    let message = build_failure(hurried.ensure_image(&image, &source, None).await);
    assert!(
        message.contains("the clone and build took longer than 3s"),
        "{message}"
    );
    assert!(started.elapsed() < 20 * second, "the deadline held");

    let bare = t.runtime();
    t.repo(&bare, "");
    std::fs::remove_file(t.repo_dir(&bare).join("Dockerfile")).unwrap();
    t.commit(&bare, "version", "2\n");
    let (image, source) = placeholder(&bare);
    let message = build_failure(exec.ensure_image(&image, &source, None).await);
    assert!(message.contains("no Dockerfile"), "{message}");
}

#[tokio::test]
async fn the_configured_platform_reaches_the_build_and_the_image() {
    let docker = docker::docker().await;
    let mut t = Templates::new();
    let rt = t.runtime();
    t.repo(&rt, &good_dockerfile());
    let (image, source) = placeholder(&rt);
    let exec = executor(&docker, &t);
    let platform = Platform("linux/amd64".into());
    let built = exec
        .ensure_image(&image, &source, Some(&platform))
        .await
        .unwrap();
    let info = docker.inspect_image(&built.reference).await.unwrap();
    assert_eq!(info.architecture.as_deref(), Some("amd64"));
    let l = labels(&docker, &built.reference).await;
    assert_eq!(
        l.get("berth.build.platform").map(String::as_str),
        Some("linux/amd64")
    );
    // Without a platform the image built for one does not count.
    exec.ensure_image(&image, &source, None).await.unwrap();
    assert_eq!(exec.build_counts().builds, 2);
}

#[tokio::test]
async fn in_registry_mode_a_local_build_source_is_refused_not_built() {
    let docker = docker::docker().await;
    let mut t = Templates::new();
    let rt = t.runtime();
    t.repo(&rt, &good_dockerfile());
    let exec = Executor::new(
        docker.clone(),
        ExecutorSettings {
            host_id: "default".into(),
            images: Images::Registry {
                prefix: "127.0.0.1:1/x".into(),
            },
            registry_auth: None,
            docker_config: None,
            pull_progress_timeout: Duration::from_secs(5),
            pull_timeout: Duration::from_secs(5),
            network_labels: BTreeMap::new(),
            workspace_roots: Vec::new(),
        },
    );
    let (image, source) = placeholder(&rt);
    let message = build_failure(exec.ensure_image(&image, &source, None).await);
    assert!(message.contains("MOLECULE_IMAGE_REGISTRY"), "{message}");
    assert_eq!(exec.build_counts(), counts(0, 0, 0));
    assert!(image_ids(&docker, &rt).await.is_empty());
}
