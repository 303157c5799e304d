//! Local-build mode through `berth run`: rows on runtimes whose template
//! repositories the test makes, on the real engine and database.

use std::time::{Duration, Instant};

use berth::model::WorkspaceId;
use serde_json::json;

use super::{
    Templates, add_runtime, broken_dockerfile, count, good_dockerfile, image_ids, insert_on, log,
    slow_dockerfile, start_local,
};
use crate::controller::{World, running};

const BUILT: &str = "local build: image built";
const CLONING: &str = "local build: cloning";

/// The image reference and image id of the workspace's container.
async fn image_of(w: &World, id: WorkspaceId) -> (String, String) {
    let c = w.container(id).await.expect("a container");
    let reference = c.config.and_then(|c| c.image).unwrap_or_default();
    (reference, c.image.unwrap_or_default())
}

/// Waits until any of `ids` has a running container; how long it took.
async fn first_running(w: &World, ids: &[WorkspaceId], since: Instant) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for id in ids {
            if running(w.container(*id).await.as_ref()) {
                return since.elapsed();
            }
        }
        assert!(Instant::now() < deadline, "no container running in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn ten_workspaces_start_from_one_build_and_a_restart_rebuilds_nothing() {
    let mut t = Templates::new();
    let mut w = World::new().await;
    let rt = t.runtime();
    let head = t.repo(&rt, &good_dockerfile());
    add_runtime(&w, &rt).await;
    start_local(&mut w, &t, &[("BERTH_PROVISION_TIMEOUT", "3m")]);
    let started = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(insert_on(&w, &rt).await);
    }
    let first_build = first_running(&w, &ids, started).await;
    for id in &ids {
        w.wait_row(*id, 120, "online", |r| {
            r.is("online", None) && r.converged()
        })
        .await;
    }
    let all_online = started.elapsed();
    let text = log(&w);
    assert_eq!(count(&text, BUILT), 1, "one build for ten workspaces");
    assert_eq!(count(&text, CLONING), 1);
    let want = format!("{}:{}", Templates::repository(&rt), &head[..12]);
    let (_, image_id) = image_of(&w, ids[0]).await;
    let mut containers = Vec::new();
    for id in &ids {
        let (reference, image) = image_of(&w, *id).await;
        assert_eq!((reference, &image), (want.clone(), &image_id));
        let row = w.row(*id).await;
        assert_eq!(row.runtime_image_id.as_ref(), Some(&image_id));
        assert_eq!(
            row.runtime_image_digest, None,
            "a built image has no digest"
        );
        containers.push(row.container_id);
    }

    let started = Instant::now();
    let eleventh = insert_on(&w, &rt).await;
    let cache_hit = first_running(&w, &[eleventh], started).await;
    w.wait_row(eleventh, 60, "online", |r| r.is("online", None))
        .await;
    ids.push(eleventh);
    containers.push(w.row(eleventh).await.container_id);

    w.berth.take().expect("berth runs").kill().await;
    start_local(&mut w, &t, &[("BERTH_PROVISION_TIMEOUT", "3m")]);
    // The new berth takes the host lease once the killed one's expires.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let started = Instant::now();
    let twelfth = insert_on(&w, &rt).await;
    let after_restart = first_running(&w, &[twelfth], started).await;
    w.wait_row(twelfth, 60, "online", |r| r.is("online", None))
        .await;
    let text = log(&w);
    assert_eq!(count(&text, BUILT), 0, "a restart rebuilds nothing");
    assert_eq!(count(&text, CLONING), 0, "and clones nothing");
    assert_eq!(image_of(&w, twelfth).await.1, image_id);
    for (id, before) in ids.iter().zip(&containers) {
        assert_eq!(
            &w.row(*id).await.container_id,
            before,
            "untouched by the restart"
        );
    }
    assert_eq!(image_ids(&w.scope.docker, &rt).await.len(), 1);
    eprintln!(
        "berth run timings: first build (row to first container running) {first_build:?}, \
         ten online {all_online:?}, cache hit (row to running) {cache_hit:?}, \
         cache hit after a restart {after_restart:?}"
    );
}

#[tokio::test]
async fn a_new_commit_builds_once_and_replaces_each_workspace_once() {
    let mut t = Templates::new();
    let mut w = World::new().await;
    let rt = t.runtime();
    t.repo(&rt, &good_dockerfile());
    add_runtime(&w, &rt).await;
    start_local(&mut w, &t, &[("BERTH_PROVISION_TIMEOUT", "3m")]);
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(insert_on(&w, &rt).await);
    }
    let mut before = Vec::new();
    for id in &ids {
        let row = w
            .wait_row(*id, 120, "online", |r| {
                r.is("online", None) && r.converged()
            })
            .await;
        before.push(row.container_id);
    }

    let old_image = image_of(&w, ids[0]).await;
    let new_head = t.commit(&rt, "version", "2\n");
    // A workspace created after the commit runs the image its runtime's
    // workspaces run: one image per runtime until a refresh moves it.
    let late = insert_on(&w, &rt).await;
    w.wait_row(late, 120, "online", |r| {
        r.is("online", None) && r.converged()
    })
    .await;
    assert_eq!(
        image_of(&w, late).await,
        old_image,
        "no build for a new row"
    );
    assert_eq!(count(&log(&w), BUILT), 1);
    ids.push(late);
    before.push(w.row(late).await.container_id);

    let started = Instant::now();
    let mut env = w.env();
    env.retain(|(k, _)| k != "MOLECULE_IMAGE_REGISTRY");
    env.push(("MOLECULE_IMAGE_REGISTRY".into(), String::new()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (code, out, err) = crate::harness::berth(&["refresh", &rt], &env).await;
    assert_eq!(code, 0, "refresh: {out}\n{err}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let want = format!("{}:{}", Templates::repository(&rt), &new_head[..12]);
    let (rebuild, new_image) = 'found: loop {
        for id in &ids {
            if let Some(c) = w.container(*id).await
                && running(Some(&c))
                && c.config.as_ref().and_then(|c| c.image.as_deref()) == Some(want.as_str())
            {
                break 'found (started.elapsed(), c.image.unwrap_or_default());
            }
        }
        assert!(Instant::now() < deadline, "nothing runs the new build");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (id, old) in ids.iter().zip(&before) {
        w.wait_row(*id, 180, "replaced onto the new image", |r| {
            r.is("online", None)
                && r.runtime_image_id.as_ref() == Some(&new_image)
                && &r.container_id != old
        })
        .await;
    }
    let all_replaced = started.elapsed();
    // Two more resyncs change nothing.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let text = log(&w);
    assert_eq!(count(&text, BUILT), 2, "one build per commit");
    assert_eq!(count(&text, CLONING), 2);
    for id in &ids {
        assert_eq!(
            w.count_events(*id, "create").await,
            2,
            "created, then replaced once"
        );
        assert_eq!(image_of(&w, *id).await, (want.clone(), new_image.clone()));
    }
    // The build is berth's: recorded, so image retention may remove it
    // once nothing uses it.
    let record: Option<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT reference, made, runtime FROM host_images WHERE host = $1 AND image_id = $2",
    )
    .bind(&w.host)
    .bind(&new_image)
    .fetch_optional(&w.pool)
    .await
    .unwrap();
    assert_eq!(
        record,
        Some((want.clone(), "built".into(), Some(rt.clone())))
    );
    eprintln!(
        "berth run timings: rebuild after a commit (refresh to the first container on it) {rebuild:?}, \
         five workspaces replaced {all_replaced:?}"
    );
}

#[tokio::test]
async fn a_missing_repository_and_a_broken_dockerfile_fail_loudly_and_alone() {
    let mut t = Templates::new();
    let mut w = World::new().await;
    let (ok, missing, broken) = (t.runtime(), t.runtime(), t.runtime());
    let stranger = t.runtime();
    t.repo(&ok, &good_dockerfile());
    t.repo(&broken, &broken_dockerfile());
    t.repo(&stranger, &good_dockerfile());
    for rt in [&ok, &missing, &broken] {
        add_runtime(&w, rt).await;
    }
    let since = chrono::Utc::now().timestamp();
    start_local(&mut w, &t, &[("BERTH_PROVISION_TIMEOUT", "5m")]);
    let good = insert_on(&w, &ok).await;
    let lost = insert_on(&w, &missing).await;
    let bad = insert_on(&w, &broken).await;
    let outsider = insert_on(&w, &stranger).await;

    w.wait_row(good, 90, "online", |r| r.is("online", None))
        .await;
    let row = w
        .wait_row(lost, 60, "image_build_failed", |r| {
            r.is("provisioning", Some("image_build_failed"))
        })
        .await;
    let cause = row.last_error.unwrap_or_default();
    assert!(
        cause.contains("ls-remote") && cause.contains(&format!("tpl-{missing}")),
        "{cause}"
    );
    let row = w
        .wait_row(bad, 60, "image_build_failed", |r| {
            r.is("provisioning", Some("image_build_failed"))
        })
        .await;
    let cause = row.last_error.unwrap_or_default();
    assert!(cause.contains("missing dependency libfoo"), "{cause}");
    assert!(w.container(lost).await.is_none() && w.container(bad).await.is_none());
    // Only runtimes in the catalogue are built, whatever repositories exist.
    w.wait_row(outsider, 30, "invalid_spec", |r| {
        r.is("failed", Some("invalid_spec"))
    })
    .await;
    assert!(
        !log(&w).contains(&stranger),
        "nothing fetched for {stranger}"
    );
    assert!(image_ids(&w.scope.docker, &stranger).await.is_empty());

    let until = chrono::Utc::now().timestamp() + 1;
    let pulls = image_events(&w, since, until, "pull").await;
    assert!(
        !pulls
            .iter()
            .any(|p| p.contains(&missing) || p.contains(&broken)),
        "nothing pulled for the failed runtimes: {pulls:?}"
    );

    // Fixed at the source: the retry builds the new commit.
    t.commit(&broken, "Dockerfile", &good_dockerfile());
    w.wait_row(bad, 120, "online after the fix", |r| r.is("online", None))
        .await;
    assert_eq!(w.row(good).await.status.as_deref(), Some("online"));
}

/// Names of the image events with `action` between the two times.
async fn image_events(w: &World, since: i64, until: i64, action: &str) -> Vec<String> {
    use bollard::query_parameters::EventsOptionsBuilder;
    use futures::StreamExt;
    let filters = std::collections::HashMap::from([
        ("type".to_string(), vec!["image".to_string()]),
        ("event".to_string(), vec![action.to_string()]),
    ]);
    let opts = EventsOptionsBuilder::new()
        .since(&since.to_string())
        .until(&until.to_string())
        .filters(&filters)
        .build();
    let events: Vec<_> = w.scope.docker.events(Some(opts)).collect().await;
    events
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| format!("{:?}", e.actor))
        .collect()
}

#[tokio::test]
async fn with_a_registry_nothing_is_built() {
    let t = Templates::new();
    let mut w = World::new().await;
    t.repo("agent", &good_dockerfile());
    let cache = t.cache.display().to_string();
    w.start(&[
        ("MOLECULE_LOCAL_TEMPLATE_REPO_PREFIX", t.prefix.as_str()),
        ("MOLECULE_LOCAL_BUILD_CACHE", cache.as_str()),
    ]);
    let id = w.insert(json!({})).await;
    let row = w.wait_row(id, 60, "online", |r| r.is("online", None)).await;
    assert_eq!(row.runtime_image_digest.as_deref(), Some(w.v1.as_str()));
    assert!(!t.cache.exists(), "no source fetched");
    assert!(image_ids(&w.scope.docker, "agent").await.is_empty());
    assert_eq!(count(&log(&w), "local build"), 0);
}

#[tokio::test]
async fn a_row_says_building_while_its_image_builds() {
    let mut t = Templates::new();
    let mut w = World::new().await;
    let rt = t.runtime();
    let run = crate::harness::env().run_id;
    // A build that takes a few seconds, then yields the good image.
    let slow = format!(
        "FROM scratch\n\
         COPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"sleep\", \"6\"]\n\
         COPY version /version\n\
         LABEL {}={run}\n\
         ENTRYPOINT [\"/bin/busybox\", \"sh\", \"-c\", \"trap 'exit 0' TERM; while :; do /bin/busybox sleep 1 & wait $!; done\"]\n",
        crate::harness::docker::RUN_LABEL
    );
    t.repo(&rt, &slow);
    add_runtime(&w, &rt).await;
    start_local(&mut w, &t, &[("BERTH_PROVISION_TIMEOUT", "5m")]);
    let id = insert_on(&w, &rt).await;
    w.wait_row(id, 30, "building", |r| {
        r.is("provisioning", Some("building"))
    })
    .await;
    assert!(
        w.container(id).await.is_none(),
        "the row said building after the build"
    );
    w.wait_row(id, 120, "online", |r| r.is("online", None))
        .await;
}

#[tokio::test]
async fn berth_refresh_builds_a_new_commit_once_and_an_unchanged_repository_not_at_all() {
    let mut t = Templates::new();
    let mut w = World::new().await;
    let rt = t.runtime();
    t.repo(&rt, &good_dockerfile());
    add_runtime(&w, &rt).await;
    start_local(
        &mut w,
        &t,
        &[
            ("BERTH_PROVISION_TIMEOUT", "3m"),
            ("BERTH_PIN_DEBOUNCE", "0s"),
            ("BERTH_ROLLOUT_MAX_PARALLEL", "2"),
        ],
    );
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(insert_on(&w, &rt).await);
    }
    let mut before = Vec::new();
    for id in &ids {
        let row = w
            .wait_row(*id, 120, "online", |r| {
                r.is("online", None) && r.converged()
            })
            .await;
        before.push((row.container_id, row.runtime_image_id));
    }
    let mut env = w.env();
    env.retain(|(k, _)| k != "MOLECULE_IMAGE_REGISTRY");
    env.push(("MOLECULE_IMAGE_REGISTRY".into(), String::new()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let refresh = || async {
        let (code, out, err) = crate::harness::berth(&["refresh", &rt], &env).await;
        assert_eq!(code, 0, "refresh: {out}\n{err}");
        assert!(out.contains("3 workspace(s)"), "{out}");
        let rows = out
            .lines()
            .filter(|l| l.contains(&rt) && l.contains(" build "))
            .count();
        assert_eq!(rows, 3, "each workspace listed with source build:\n{out}");
    };
    let w = &w;
    let refreshed = |n: usize| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while count(&log(w), "refreshed") < n {
            assert!(Instant::now() < deadline, "no refresh answer:\n{}", log(w));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };

    // An unchanged repository: its HEAD is asked, nothing is cloned or
    // built, nothing replaced.
    refresh().await;
    refreshed(1).await;
    let text = log(w);
    assert_eq!(count(&text, "refreshed: unchanged"), 1, "{text}");
    assert_eq!((count(&text, CLONING), count(&text, BUILT)), (1, 1));

    // A new commit: one build, each workspace replaced once.
    let new_head = t.commit(&rt, "version", "2\n");
    refresh().await;
    refreshed(2).await;
    for (id, (old_container, old_image)) in ids.iter().zip(&before) {
        w.wait_row(*id, 180, "replaced onto the new build", |r| {
            r.is("online", None)
                && r.converged()
                && r.runtime_image_id.is_some()
                && &r.runtime_image_id != old_image
                && &r.container_id != old_container
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let text = log(w);
    assert_eq!(
        (count(&text, CLONING), count(&text, BUILT)),
        (2, 2),
        "one build per commit"
    );
    let want = format!("{}:{}", Templates::repository(&rt), &new_head[..12]);
    for id in &ids {
        assert_eq!(
            w.count_events(*id, "create").await,
            2,
            "created, then replaced once"
        );
        assert_eq!(image_of(w, *id).await.0, want);
    }

    // A commit that does not build: the rows say so, the containers are
    // not touched.
    let serving: Vec<_> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(w.row(*id).await.container_id);
        }
        v
    };
    t.commit(&rt, "Dockerfile", &broken_dockerfile());
    refresh().await;
    for (id, container) in ids.iter().zip(&serving) {
        let row = w
            .wait_row(*id, 120, "change_blocked by the failed build", |r| {
                r.is("degraded", Some("change_blocked"))
            })
            .await;
        let error = row.last_error.unwrap_or_default();
        assert!(
            error.contains("missing dependency libfoo") && error.contains("keeps serving"),
            "{error}"
        );
        assert_eq!(&row.container_id, container, "the container was touched");
        assert!(crate::controller::running(w.container(*id).await.as_ref()));
    }
    // Fixed at the source: the next refresh builds it and the rows are
    // online again.
    t.commit(&rt, "Dockerfile", &good_dockerfile());
    refresh().await;
    for id in &ids {
        w.wait_row(*id, 180, "online after the fix", |r| {
            r.is("online", None) && r.converged()
        })
        .await;
    }
}

#[tokio::test]
async fn a_build_longer_than_the_provision_timeout_does_not_time_the_workspaces_out() {
    let mut t = Templates::new();
    let mut w = World::new().await;
    let rt = t.runtime();
    t.repo(&rt, &slow_dockerfile(18));
    add_runtime(&w, &rt).await;
    // The build (18 s) outlasts the provision timeout (12 s): the timeout
    // counts provisioning, and a build has deadlines of its own.
    start_local(&mut w, &t, &[("BERTH_PROVISION_TIMEOUT", "12s")]);
    let ids = [insert_on(&w, &rt).await, insert_on(&w, &rt).await];
    for id in ids {
        let row = w
            .wait_row(id, 90, "online, or given up", |r| {
                r.is("online", None) || r.is("failed", Some("provision_timeout"))
            })
            .await;
        assert!(
            row.is("online", None),
            "timed out behind the build: {:?}",
            row.last_error
        );
    }
}
