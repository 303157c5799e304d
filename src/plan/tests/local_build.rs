//! Local-build mode in the rules: the built image's id is the identity, a
//! new one is a stop-first replace reported as `building`, an unknown one
//! is no change, and a failed build leaves the old container serving.

use super::*;
use crate::model::{ImageSource, LABEL_IMAGE_ID, Reason, ResolvedImage, Status};
use crate::plan::Phase;

fn local() -> Settings {
    Settings {
        registry_prefix: None,
        ..Settings::test()
    }
}

fn known(id: &str) -> ResolvedImage {
    ResolvedImage {
        digest: None,
        id: Some(id.into()),
    }
}

/// The row's container, running the first build of its runtime.
fn serving_first_build(r: &WorkspaceRow, s: &Settings) -> ObservedContainer {
    let mut c = container_for(&built(r, s), "c1");
    c.labels
        .insert(LABEL_IMAGE_ID.into(), "sha256:built-first".into());
    c
}

#[test]
fn a_new_build_of_the_runtime_replaces_its_containers_as_building() {
    let s = local();
    let r = row(1);
    let spec = built(&r, &s);
    assert!(matches!(spec.image_source, ImageSource::LocalBuild { .. }));
    let cs = [serving_first_build(&r, &s)];
    let mut f = facts_for(&s, &r, &cs, &[]);

    f.image = ResolvedImage::default();
    assert!(
        plan_at(&f, t0()).actions.is_empty(),
        "an image not ensured since berth started is no change"
    );
    f.image = known("sha256:built-first");
    assert!(plan_at(&f, t0()).actions.is_empty(), "same build: nothing");

    f.image = known("sha256:built-after-a-commit");
    let p = plan_at(&f, t0());
    assert_eq!(
        &ops(&p)[..4],
        ["ensure_image", "preflight", "stop", "rename"]
    );
    assert!(
        whys(&p)[0].contains("image id sha256:built"),
        "{:?}",
        whys(&p)
    );
    // The build is made already: the pass makes the container.
    assert_eq!(reason(&p), Some(Reason::Creating));
    assert!(p.restore.is_some(), "the old container is the way back");
}

#[test]
fn a_failed_build_leaves_the_old_container_serving_as_change_blocked() {
    let s = local();
    let r = row(1);
    let cs = [serving_first_build(&r, &s)];
    let mut f = facts_for(&s, &r, &cs, &[]);
    f.image = known("sha256:built-after-a-commit");
    f.memory.failure = Some(failure(
        Reason::ImageBuildFailed,
        Phase::Build,
        "local build failed: step 3 returned a non-zero code: 1",
        &built(&r, &s).hash,
    ));
    let p = plan_at(&f, t0());
    assert!(p.actions.is_empty(), "nothing touched while backing off");
    assert_eq!(reason(&p), Some(Reason::ChangeBlocked));
    let detail = p.status.and_then(|s| s.detail).unwrap_or_default();
    assert!(detail.contains("non-zero code"), "{detail}");
}

#[test]
fn a_failed_build_of_a_missing_container_says_image_build_failed() {
    let s = local();
    let r = row(1);
    let mut f = facts_for(&s, &r, &[], &[]);
    f.memory.failure = Some(failure(
        Reason::ImageBuildFailed,
        Phase::Build,
        "ls-remote: repository not found",
        &built(&r, &s).hash,
    ));
    let p = plan_at(&f, t0());
    assert!(p.actions.is_empty());
    assert_eq!(reason(&p), Some(Reason::ImageBuildFailed));
    assert_eq!(
        p.status.as_ref().map(|s| s.status),
        Some(crate::model::Status::Provisioning)
    );
}

#[test]
fn a_failed_refresh_shows_on_the_rows_that_keep_serving_and_touches_nothing() {
    let s = local();
    let r = row(1);
    let cs = [serving_first_build(&r, &s)];
    let mut f = facts_for(&s, &r, &cs, &[]);
    f.image = known("sha256:built-first");
    assert_eq!(
        plan_at(&f, t0()).status.map(|s| s.status),
        Some(Status::Online)
    );

    // A registry that did not answer says nothing of a change: online,
    // with why in last_error.
    f.refresh_failure = Some(crate::plan::RefreshFailure {
        message: "registry unreachable".into(),
        blocks_change: false,
    });
    let p = plan_at(&f, t0());
    assert!(p.actions.is_empty());
    let status = p.status.unwrap();
    assert_eq!((status.status, status.reason), (Status::Online, None));
    assert!(
        status
            .detail
            .unwrap_or_default()
            .contains("registry unreachable")
    );

    // A commit that does not build blocks the wanted change.
    f.refresh_failure = Some(crate::plan::RefreshFailure {
        message: "local build failed: missing dependency libfoo".into(),
        blocks_change: true,
    });
    let p = plan_at(&f, t0());
    assert!(p.actions.is_empty(), "the running container is left alone");
    assert_eq!(reason(&p), Some(Reason::ChangeBlocked));
    let status = p.status.unwrap();
    assert_eq!(status.status, Status::Degraded);
    let detail = status.detail.unwrap_or_default();
    assert!(
        detail.contains("missing dependency libfoo") && detail.contains("keeps serving"),
        "{detail}"
    );
}
