//! Ensure image against the run's local registry: resolve, pull by digest
//! once, typed errors that touch nothing.

use berth::act::ActError;
use berth::model::{ImageRef, ImageSource, Reason};

use super::{Fixture, docker_cli};

fn image(text: &str) -> ImageRef {
    ImageRef::parse(text).unwrap()
}

/// Pushes local image `source` as `target` (test code may use the CLI).
async fn push_as(source: &str, target: &str) {
    docker_cli(&["tag", source, target]).await;
    docker_cli(&["push", target]).await;
}

/// Removes the local references a test made (images carry no scope label).
async fn forget(references: &[&str]) {
    for r in references {
        let _ = tokio::process::Command::new("docker")
            .args(["rmi", r])
            .output()
            .await;
    }
}

#[tokio::test]
async fn an_image_is_pulled_by_digest_once_then_found_locally() {
    let f = Fixture::new().await;
    let plain = f
        .exec
        .ensure_image(&image(&f.agent("plain")), &ImageSource::Explicit, None)
        .await
        .unwrap();
    // A repository of this test's own, so the local store cannot have it.
    let repo = format!("{}/berth-test/pull-{}", f.registry, f.scope.test);
    let tagged = format!("{repo}:t");
    push_as(&plain.id, &tagged).await;
    let digest = f.exec.resolve(&image(&tagged)).await.unwrap();
    assert_eq!(
        digest,
        plain.digest.clone().unwrap(),
        "same content, same manifest"
    );
    forget(&[&tagged, &format!("{repo}@{digest}")]).await;

    let pinned = image(&format!("{repo}@{digest}"));
    let source = ImageSource::Pinned {
        ring: "stable".into(),
    };
    let first = f.exec.ensure_image(&pinned, &source, None).await.unwrap();
    assert!(first.pulled);
    assert_eq!(first.reference, pinned.as_str());
    assert_eq!(first.digest.as_ref(), Some(&digest));
    assert_eq!(first.id, plain.id);
    let again = f.exec.ensure_image(&pinned, &source, None).await.unwrap();
    assert!(!again.pulled, "already local: no pull");
    assert_eq!(again.id, first.id);
    forget(&[pinned.as_str()]).await;
}

#[tokio::test]
async fn a_missing_digest_or_tag_is_image_not_found_and_pulls_nothing() {
    let f = Fixture::new().await;
    let repo = format!("{}/berth-test/agent", f.registry);
    let missing_digest = image(&format!("{repo}@sha256:{}", "0".repeat(64)));
    let missing_tag = image(&format!("{repo}:no-such-{}", f.scope.test));
    for (missing, source) in [
        (
            &missing_digest,
            ImageSource::Pinned {
                ring: "stable".into(),
            },
        ),
        (&missing_tag, ImageSource::Tag),
        (&missing_tag, ImageSource::Explicit),
    ] {
        let err = f
            .exec
            .ensure_image(missing, &source, None)
            .await
            .unwrap_err();
        assert!(matches!(err, ActError::ImageNotFound { .. }), "{err}");
        assert_eq!(err.reason(), Some(Reason::ImageNotFound));
        assert!(!err.is_transient());
        let local = f.scope.docker.inspect_image(missing.as_str()).await;
        assert!(local.is_err(), "{missing} must not be local");
    }
}

#[tokio::test]
async fn a_re_pushed_moving_tag_resolves_to_the_new_digest() {
    let f = Fixture::new().await;
    let ensure = |text: String| {
        let exec = f.exec.clone();
        async move {
            exec.ensure_image(&image(&text), &ImageSource::Tag, None)
                .await
                .unwrap()
        }
    };
    let v1 = ensure(f.agent("v1")).await;
    let v2 = ensure(f.agent("v2")).await;
    let moving = format!("{}/berth-test/moving-{}:latest", f.registry, f.scope.test);

    push_as(&v1.id, &moving).await;
    let first = ensure(moving.clone()).await;
    assert_eq!(first.digest, v1.digest);
    let digest = first.digest.as_ref().unwrap();
    assert_eq!(
        first.reference,
        format!("{moving}@{digest}"),
        "tag kept, digest decides"
    );
    assert_eq!(first.id, v1.id);
    let unchanged = ensure(moving.clone()).await;
    assert!(!unchanged.pulled, "an unchanged tag costs no pull");

    push_as(&v2.id, &moving).await;
    let moved = ensure(moving.clone()).await;
    assert_eq!(moved.digest, v2.digest, "the tag's new digest");
    assert_eq!(moved.id, v2.id);
    assert_ne!(moved.digest, first.digest);

    // A container created from what was ensured before the tag moved runs
    // the image of that digest, not the tag's new one.
    let spec = f.spec(&f.row().with_image(&moving));
    // Its volumes made first, labelled: a create alone would have the
    // engine make them unlabelled, and no cleanup would find them.
    for v in &spec.volumes {
        f.exec.ensure_volume(v).await.unwrap();
    }
    let id = f.exec.create(&spec, &first).await.unwrap();
    assert_eq!(f.inspect(&id).await.image.unwrap(), v1.id);
    f.exec.remove(&id).await.unwrap();
    let repo = moving.trim_end_matches(":latest");
    let by_digest = |e: &berth::act::EnsuredImage| format!("{repo}@{}", e.digest.as_ref().unwrap());
    forget(&[&moving, &by_digest(&first), &by_digest(&moved)]).await;
}

#[tokio::test]
async fn an_unreachable_registry_is_transient() {
    let f = Fixture::new().await;
    let unreachable = image("127.0.0.1:1/berth-test/agent:v1");
    let err = f
        .exec
        .ensure_image(&unreachable, &ImageSource::Tag, None)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(err.reason(), None);
    assert_eq!(err.kind(), "transient");
}

#[tokio::test]
async fn the_local_override_only_looks_in_the_local_store() {
    let f = Fixture::new().await;
    let tag = f.agent("plain");
    f.exec
        .ensure_image(&image(&tag), &ImageSource::Explicit, None)
        .await
        .unwrap();
    let local = f.scope.docker.inspect_image(&tag).await;
    let missing = image(&format!(
        "{}/berth-test/none-{}:latest",
        f.registry, f.scope.test
    ));
    let err = f
        .exec
        .ensure_image(&missing, &ImageSource::LocalOnly, None)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(Reason::ImageNotFound));
    if local.is_ok() {
        let found = f
            .exec
            .ensure_image(&image(&tag), &ImageSource::LocalOnly, None)
            .await
            .unwrap();
        assert_eq!((found.pulled, found.digest), (false, None));
        assert_eq!(found.reference, tag);
    }
}

/// A registry that accepts connections and never answers.
async fn silent_registry() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (format!("127.0.0.1:{port}"), task)
}

#[tokio::test]
async fn a_pull_is_abandoned_at_its_progress_and_total_deadlines() {
    let f = Fixture::new().await;
    let (registry, task) = silent_registry().await;
    let stuck = image(&format!("{registry}/berth-test/agent:v1"));
    let digest = berth::model::Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
    let second = std::time::Duration::from_secs(1);
    for (progress, total, what) in [
        (second, 10 * second, "pull without progress"),
        (10 * second, second, "pull"),
    ] {
        let mut settings = f.exec_settings();
        settings.pull_progress_timeout = progress;
        settings.pull_timeout = total;
        let exec = berth::act::Executor::new(f.scope.docker.clone(), settings);
        let started = std::time::Instant::now();
        let err = exec.pull(&stuck, &digest, None).await.unwrap_err();
        assert!(started.elapsed() < 5 * second, "{:?}", started.elapsed());
        match &err {
            ActError::Timeout { what: w, after } => assert_eq!((*w, *after), (what, second)),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(err.is_transient());
    }
    task.abort();
}

#[tokio::test]
async fn a_pull_of_a_missing_manifest_is_image_not_found() {
    let f = Fixture::new().await;
    let agent = image(&f.agent("v1"));
    let missing = berth::model::Digest::parse(&format!("sha256:{}", "b".repeat(64))).unwrap();
    let err = f.exec.pull(&agent, &missing, None).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::ImageNotFound), "{err:?}");
}

#[tokio::test]
async fn the_configured_platform_reaches_create() {
    let f = Fixture::new().await;
    let (native, foreign) = match std::env::consts::ARCH {
        "aarch64" => ("linux/arm64", "linux/amd64"),
        _ => ("linux/amd64", "linux/arm64"),
    };
    let mut spec = f.spec(&f.row());
    let image = f
        .exec
        .ensure_image(&spec.image, &spec.image_source, None)
        .await
        .unwrap();
    spec.platform = Some(berth::model::Platform(foreign.into()));
    let err = f.exec.create(&spec, &image).await.unwrap_err();
    assert!(err.to_string().contains(foreign), "{err}");
    spec.platform = Some(berth::model::Platform(native.into()));
    for v in &spec.volumes {
        f.exec.ensure_volume(v).await.unwrap();
    }
    f.exec.create(&spec, &image).await.unwrap();
}

#[tokio::test]
async fn a_tags_known_digest_the_registry_lost_is_digest_gone() {
    let f = Fixture::new().await;
    let tag = image(&f.agent("v1"));
    let lost = berth::model::Digest::parse(&format!("sha256:{}", "d".repeat(64))).unwrap();
    let known = berth::model::ResolvedImage {
        digest: Some(lost.clone()),
        id: None,
    };
    for source in [ImageSource::Tag, ImageSource::Explicit] {
        let err = f
            .exec
            .ensure_known(&tag, &source, None, &known)
            .await
            .unwrap_err();
        match &err {
            ActError::DigestGone { image, digest, .. } => {
                assert_eq!((image.as_str(), digest), (tag.as_str(), &lost));
            }
            other => panic!("expected the digest gone, got {other:?}"),
        }
        assert_eq!(err.reason(), Some(Reason::ImageNotFound));
        assert!(!err.is_transient());
        assert!(err.to_string().contains("resolved again"), "{err}");
    }
}
