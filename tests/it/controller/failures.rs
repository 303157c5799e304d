//! What goes wrong: crash loops, images that never become ready, a replace
//! onto such an image, orphans, the Go provisioner's leftovers, a lost
//! listening session.

use std::collections::HashMap;
use std::time::Duration;

use berth::model::{LABEL_HOST, LABEL_MANAGED, WorkspaceId};
use bollard::models::{ContainerCreateBody, HostConfig, VolumeCreateRequest};
use bollard::query_parameters::{CreateContainerOptionsBuilder, ListVolumesOptions};
use serde_json::json;

use super::{World, running};

#[tokio::test]
async fn an_image_that_exits_after_a_second_is_a_crash_loop() {
    let mut w = World::new().await;
    w.start(&[("BERTH_CRASH_LOOP_RESTARTS", "3")]);
    let id = w.insert(json!({"AGENT_EXIT_AFTER": "1"})).await;
    let row = w
        .wait_row(id, 90, "crash_loop", |r| {
            r.is("degraded", Some("crash_loop"))
        })
        .await;
    assert!(row.last_error.is_some(), "{row:?}");
    let trail: Vec<String> = sqlx::query_scalar(
        "SELECT reason FROM workspace_events WHERE workspace_id = $1 AND action = 'status'",
    )
    .bind(id.0)
    .fetch_all(&w.pool)
    .await
    .unwrap();
    assert!(
        trail.contains(&"degraded/crash_loop".to_string()),
        "{trail:?}"
    );
}

#[tokio::test]
async fn an_image_that_never_becomes_ready_is_a_provision_timeout_naming_the_phase() {
    let mut w = World::new().await;
    w.start(&[("BERTH_PROVISION_TIMEOUT", "8s")]);
    let id = w.insert(json!({"AGENT_NEVER_READY": "1"})).await;
    let row = w
        .wait_row(id, 60, "provision_timeout", |r| {
            r.is("failed", Some("provision_timeout"))
        })
        .await;
    let error = row.last_error.unwrap_or_default();
    assert!(error.contains("readiness"), "{error}");
}

#[tokio::test]
async fn a_create_the_engine_refuses_leaves_no_undo_of_a_container_never_made_on_the_trail() {
    let mut w = World::new().await;
    // Below the engine's minimum memory limit: every create is refused.
    w.start(&[("TIER2_MEMORY_MB", "4")]);
    let id = w.insert(json!({})).await;
    w.wait_row(id, 60, "the create refused", |r| {
        r.last_error
            .as_deref()
            .is_some_and(|e| e.contains("create"))
    })
    .await;
    let trail: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, reason FROM workspace_events WHERE workspace_id = $1 ORDER BY id",
    )
    .bind(id.0)
    .fetch_all(&w.pool)
    .await
    .unwrap();
    assert!(
        trail.iter().any(|(a, _)| a == "create"),
        "the create was tried: {trail:?}"
    );
    // No container was made, so none was removed.
    assert!(
        !trail.iter().any(|(a, _)| a == "remove_container"),
        "{trail:?}"
    );
    assert!(w.container(id).await.is_none());
}

#[tokio::test]
async fn an_emptied_configs_volume_is_config_missing_not_a_crash_loop() {
    let mut w = World::new().await;
    w.start(&[("BERTH_PROVISION_TIMEOUT", "20s")]);
    let id = w.insert(json!({})).await;
    let other = w.insert(json!({})).await;
    w.wait_row(id, 60, "online", |r| r.is("online", None)).await;
    let serving = w
        .wait_row(other, 60, "online", |r| r.is("online", None))
        .await
        .container_id;

    // The row stops carrying a config.yaml, the volume loses its copy and
    // the container goes: the one berth makes would find none.
    w.exec(
        "UPDATE workspaces SET config_files = '{}' WHERE id = $1",
        id,
    )
    .await;
    w.sh(id, "rm /configs/config.yaml").await;
    w.remove_by_hand(id).await;
    let row = w
        .wait_row(id, 60, "config_missing", |r| {
            r.is("failed", Some("config_missing"))
        })
        .await;
    let error = row.last_error.unwrap_or_default();
    assert!(error.contains(&id.configs_volume()), "{error}");
    assert!(
        !running(w.container(id).await.as_ref()),
        "a container without config.yaml is never started"
    );
    let kept = w.row(other).await;
    assert!(kept.is("online", None));
    assert_eq!(
        kept.container_id, serving,
        "the other workspace is untouched"
    );
    // Past the provision timeout the cause stays the reason.
    tokio::time::sleep(Duration::from_secs(22)).await;
    let row = w.row(id).await;
    assert!(row.is("failed", Some("config_missing")), "{row:?}");
}

#[tokio::test]
async fn a_replace_whose_host_directory_no_longer_resolves_never_stops_the_old_container() {
    let mut w = World::new().await;
    let roots = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let real = roots.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = roots.path().join("ws");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    w.start(&[("BERTH_WORKSPACE_ROOTS", roots.path().to_str().unwrap())]);
    let id = w.insert(json!({})).await;
    sqlx::query(
        "UPDATE workspaces SET workspace_dir = $2, workspace_access = 'read_write' WHERE id = $1",
    )
    .bind(id.0)
    .bind(link.to_str().unwrap())
    .execute(&w.pool)
    .await
    .unwrap();
    w.wait_row(id, 90, "online with its directory", |r| {
        r.is("online", None) && r.converged()
    })
    .await;
    let before = w.container(id).await.unwrap();

    // The directory now leads out of the roots, and the row changes.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();
    w.exec(
        "UPDATE workspaces SET env = '{\"V\": \"2\"}' WHERE id = $1",
        id,
    )
    .await;
    let row = w
        .wait_row(id, 60, "change_blocked", |r| {
            r.is("degraded", Some("change_blocked"))
        })
        .await;
    let error = row.last_error.unwrap_or_default();
    assert!(error.contains("host directory"), "{error}");
    let after = w.container(id).await.unwrap();
    assert_eq!(after.id, before.id);
    assert_eq!(
        after.state.as_ref().and_then(|s| s.started_at.clone()),
        before.state.as_ref().and_then(|s| s.started_at.clone()),
        "the old container was never stopped"
    );
}

/// Inserts a running workspace of runtime `agent` binding `dir`.
async fn insert_with_dir(w: &World, dir: &std::path::Path, access: &str) -> WorkspaceId {
    let id: uuid::Uuid = sqlx::query_scalar(
        r#"INSERT INTO workspaces (name, runtime, host, config_files, workspace_dir, workspace_access)
           VALUES ('t', 'agent', $1, '{"config.yaml": "name: t\n"}', $2, $3) RETURNING id"#,
    )
    .bind(&w.host)
    .bind(dir.to_str().unwrap())
    .bind(access)
    .fetch_one(&w.pool)
    .await
    .unwrap();
    WorkspaceId(id)
}

#[tokio::test]
async fn a_directory_reached_through_a_link_into_an_older_writable_one_is_refused() {
    let mut w = World::new().await;
    let roots = tempfile::tempdir().unwrap();
    let theirs = roots.path().join("ok");
    std::fs::create_dir_all(theirs.join("sub")).unwrap();
    let link = roots.path().join("sublink");
    std::os::unix::fs::symlink(theirs.join("sub"), &link).unwrap();
    w.start(&[("BERTH_WORKSPACE_ROOTS", roots.path().to_str().unwrap())]);
    let older = insert_with_dir(&w, &theirs, "read_write").await;
    w.wait_row(older, 60, "online", |r| r.is("online", None))
        .await;
    // By its text the link lies beside the older directory, not inside.
    let younger = insert_with_dir(&w, &link, "read_only").await;
    let row = w
        .wait_row(younger, 60, "refused", |r| {
            r.is("failed", Some("invalid_spec"))
        })
        .await;
    let error = row.last_error.unwrap_or_default();
    assert!(
        error.contains("read-write workspace_dir of the older workspace")
            && error.contains(&older.to_string()),
        "{error}"
    );
    assert!(w.container(younger).await.is_none());
    assert!(w.row(older).await.is("online", None));
}

#[tokio::test]
async fn a_replace_onto_an_image_that_never_becomes_ready_rolls_back() {
    let mut w = World::new().await;
    w.start(&[]);
    let id = w.insert(json!({})).await;
    let row = w
        .wait_row(id, 60, "online", |r| r.is("online", None) && r.converged())
        .await;
    // A short deadline only for the change (a loaded machine may need
    // longer for the first start).
    w.berth.take().unwrap().kill().await;
    w.start(&[("BERTH_PROVISION_TIMEOUT", "8s")]);
    let serving = row.container_id.clone();
    w.sh(id, "echo precious > /workspace/keep").await;

    w.exec(
        "UPDATE workspaces SET env = '{\"AGENT_NEVER_READY\": \"1\"}' WHERE id = $1",
        id,
    )
    .await;
    let row = w
        .wait_row(id, 90, "rolled back", |r| {
            r.is("online", Some("rolled_back"))
        })
        .await;
    assert_eq!(
        row.container_id, serving,
        "the previous container serves again"
    );
    let c = w.container(id).await.unwrap();
    assert_eq!(c.id, serving);
    assert!(running(Some(&c)));
    assert_eq!(w.sh(id, "cat /workspace/keep").await.trim(), "precious");
    // It is not tried again until the row changes.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(w.container(id).await.unwrap().id, serving);
    // The trail says why the change was undone: on the status event and
    // on each step that put the previous container back.
    let statuses: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT reason, detail->>'error' FROM workspace_events
         WHERE workspace_id = $1 AND action = 'status' ORDER BY id",
    )
    .bind(id.0)
    .fetch_all(&w.pool)
    .await
    .unwrap();
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    let causes: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT detail->>'cause' FROM workspace_events
         WHERE workspace_id = $1 AND reason LIKE 'restore:%'",
    )
    .bind(id.0)
    .fetch_all(&w.pool)
    .await
    .unwrap();
    assert!(!causes.is_empty());
    for cause in causes {
        let cause = cause.unwrap_or_default();
        assert!(cause.contains("not ready by"), "{cause}");
    }

    // A berth started anew takes the rollback up from the trail: the
    // undone change is not tried again (which would stop the serving
    // container once more) before the row changes.
    w.berth.take().unwrap().kill().await;
    let stops = w.count_events(id, "stop").await;
    w.start(&[("BERTH_PROVISION_TIMEOUT", "8s")]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(w.count_events(id, "stop").await, stops, "tried again");
    assert_eq!(w.container(id).await.unwrap().id, serving);
    let row = w
        .wait_row(id, 10, "still rolled back", |r| {
            r.is("online", Some("rolled_back"))
        })
        .await;
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains("not ready by")),
        "{row:?}"
    );
    // An env edit undone is no failure of the pin the row follows: the
    // restarted berth halts nothing.
    let halts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM runtime_image_pin_history WHERE halt")
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert_eq!(halts, 0);
    // `berth plan` reads the rollback from the trail too: no recreate.
    let env = crate::ops::env_with(&w, &[]);
    let (code, out, err) = crate::ops::berth(&["plan", "--json"], &env).await;
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).expect("plan JSON");
    // A workspace with nothing to do and its status shown is not listed.
    let listed = plan["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id.to_string());
    assert!(listed.is_none(), "{listed:#?}");
}

#[tokio::test]
async fn a_deleted_rows_container_goes_after_the_grace_period_and_its_volumes_stay() {
    let mut w = World::new().await;
    w.start(&[("BERTH_ORPHAN_GRACE", "6s")]);
    let id = w.insert(json!({})).await;
    w.wait_row(id, 60, "online", |r| r.is("online", None)).await;
    w.exec("DELETE FROM workspaces WHERE id = $1", id).await;
    let deleted = std::time::Instant::now();
    w.wait_container(id, 60, "orphan removed", |c| c.is_none())
        .await;
    assert!(
        deleted.elapsed() >= Duration::from_secs(5),
        "removed {:?} after the row went, before the grace period",
        deleted.elapsed()
    );
    let volumes = w
        .scope
        .docker
        .list_volumes(None::<ListVolumesOptions>)
        .await
        .unwrap()
        .volumes
        .unwrap_or_default();
    let names: Vec<String> = volumes.into_iter().map(|v| v.name).collect();
    assert!(
        names.contains(&id.configs_volume()),
        "the orphan's volumes must stay"
    );
    assert!(names.contains(&id.workspace_volume()));
    // The kept volumes are reported once, not at every pass: the key is
    // planned again at each resync.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        w.count_events_like(id, "note", "volumes kept%").await,
        1,
        "one note for the kept volumes"
    );
    // Nor again by a restarted berth: the trail has said it.
    w.berth.take().unwrap().kill().await;
    w.start(&[("BERTH_ORPHAN_GRACE", "6s")]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        w.count_events_like(id, "note", "volumes kept%").await,
        1,
        "the restarted berth noted the kept volumes again"
    );
}

#[tokio::test]
async fn the_go_provisioners_container_is_replaced_once_and_its_volumes_keep_their_bytes() {
    let mut w = World::new().await;
    let id = WorkspaceId(uuid::Uuid::new_v4());
    let managed = HashMap::from([(LABEL_MANAGED.to_string(), "true".to_string())]);
    // The Go way: managed-labelled configs volume, an unlabelled workspace
    // volume made by the bind, a container with only the managed label.
    for (name, labels) in [
        (id.configs_volume(), Some(managed.clone())),
        (id.workspace_volume(), None),
    ] {
        w.scope.named_volumes.push(name.clone());
        let req = VolumeCreateRequest {
            name: Some(name),
            labels,
            ..Default::default()
        };
        w.scope.docker.create_volume(req).await.unwrap();
    }
    let image = format!(
        "{}/berth-test/agent@{}",
        crate::harness::env().registry,
        w.v1
    );
    crate::harness::docker::pull(&w.scope.docker, &image).await;
    w.scope.named_containers.push(id.container_name());
    let body = ContainerCreateBody {
        image: Some(image),
        labels: Some(managed.clone()),
        host_config: Some(HostConfig {
            binds: Some(vec![
                format!("{}:/configs", id.configs_volume()),
                format!("{}:/workspace", id.workspace_volume()),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let opts = CreateContainerOptionsBuilder::new()
        .name(&id.container_name())
        .build();
    let legacy = w
        .scope
        .docker
        .create_container(Some(opts), body)
        .await
        .unwrap()
        .id;
    w.scope.docker.start_container(&legacy, None).await.unwrap();
    w.sh(
        id,
        "echo go-data > /workspace/keep && echo 'name: go' > /configs/config.yaml",
    )
    .await;

    sqlx::query(
        "INSERT INTO workspaces (id, name, runtime, host) VALUES ($1, 'legacy', 'agent', $2)",
    )
    .bind(id.0)
    .bind(&w.host)
    .execute(&w.pool)
    .await
    .unwrap();
    w.start(&[]);
    let row = w
        .wait_row(id, 90, "adopted", |r| r.is("online", None) && r.converged())
        .await;
    assert_ne!(
        row.container_id.as_deref(),
        Some(legacy.as_str()),
        "replaced once"
    );
    let c = w.container(id).await.unwrap();
    let labels = c.config.unwrap().labels.unwrap();
    assert_eq!(labels.get(LABEL_HOST), Some(&w.host));
    assert_eq!(w.sh(id, "cat /workspace/keep").await.trim(), "go-data");
    let first = c.id;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        w.container(id).await.unwrap().id,
        first,
        "replaced more than once"
    );
}

#[tokio::test]
async fn a_change_made_while_the_listening_session_is_gone_is_not_missed() {
    let mut w = World::new().await;
    // No periodic resync or relist, and no readiness deadline requeue,
    // within the test: only the reread after the session is back can see
    // the change.
    w.start(&[
        ("BERTH_RESYNC_INTERVAL", "10m"),
        ("BERTH_PROVISION_TIMEOUT", "10m"),
    ]);
    let id = w.insert(json!({})).await;
    let first = w
        .wait_row(id, 60, "online", |r| r.is("online", None) && r.converged())
        .await;
    // End berth's listening session and change the row in the same
    // transaction, once that backend is gone: the notification reaches
    // nobody.
    let mut tx = w.pool.begin().await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
          WHERE datname = current_database() AND application_name LIKE 'berth-session%'",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert_eq!(ended, [true], "one listening session");
    sqlx::query("UPDATE workspaces SET env = '{\"NEW\": \"1\"}' WHERE id = $1")
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let row = w
        .wait_row(id, 60, "replaced after the session came back", |r| {
            r.is("online", None) && r.converged() && r.container_id != first.container_id
        })
        .await;
    assert_eq!(row.generation, 2);
    assert_eq!(w.sh(id, "grep ^NEW= /tmp/agent.env").await.trim(), "NEW=1");
}

/// `host:port` of a postgres URL.
#[tokio::test]
async fn two_hosts_on_one_daemon_and_database_each_converge_only_their_own_rows() {
    let mut w = World::new().await;
    let other_host = w.scope.host();
    w.start(&[]);
    let mut other_env = w.env();
    for (k, v) in other_env.iter_mut() {
        // Two processes creating one network race (API 1.41 accepts two
        // networks of one name): each host gets its own here.
        match k.as_str() {
            "BERTH_HOST_ID" => *v = other_host.clone(),
            "BERTH_NETWORK" => *v = format!("bn-{other_host}"),
            _ => {}
        }
    }
    let other = crate::harness::process::Berth::start(&other_env);
    let mine = w.insert(json!({})).await;
    let theirs: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO workspaces (name, runtime, host, config_files)
         VALUES ('o', 'agent', $1, '{\"config.yaml\": \"name: o\\n\"}') RETURNING id",
    )
    .bind(&other_host)
    .fetch_one(&w.pool)
    .await
    .unwrap();
    let theirs = WorkspaceId(theirs);
    w.wait_row(mine, 60, "mine online", |r| r.is("online", None))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !w.row(theirs).await.is("online", None) {
        assert!(
            std::time::Instant::now() < deadline,
            "theirs not online: {:?}\nits berth:\n{}",
            w.row(theirs).await,
            other.tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Past the orphan grace and two resyncs, where a berth that took the
    // other host's container for an orphan would have removed it, each
    // container is still the one its own berth started.
    let pairs = [(mine, w.host.clone()), (theirs, other_host.clone())];
    let first = each_on_its_host(&w, &pairs).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        each_on_its_host(&w, &pairs).await,
        first,
        "a container was replaced or restarted"
    );
}

/// Checks that each workspace's container and trail are its host's
/// alone; the containers' ids and start times.
async fn each_on_its_host(
    w: &World,
    pairs: &[(WorkspaceId, String)],
) -> Vec<(Option<String>, Option<String>)> {
    let mut containers = Vec::new();
    for (id, host) in pairs {
        let c = w.container(*id).await.unwrap();
        let labels = c.config.unwrap().labels.unwrap();
        assert_eq!(labels.get(LABEL_HOST), Some(host));
        let hosts: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT host FROM workspace_events WHERE workspace_id = $1",
        )
        .bind(id.0)
        .fetch_all(&w.pool)
        .await
        .unwrap();
        assert_eq!(hosts, vec![host.clone()], "another host acted on {id}");
        containers.push((c.id, c.state.and_then(|s| s.started_at)));
    }
    containers
}

#[tokio::test]
async fn rows_deleted_en_masse_trip_the_delete_guard_and_every_container_stays() {
    let mut w = World::new().await;
    // max(5, 10%) of 12 workspaces: 5 removals a pass at most.
    w.start(&[("BERTH_ORPHAN_GRACE", "4s")]);
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(w.insert(json!({})).await);
    }
    for id in &ids {
        w.wait_row(*id, 120, "online", |r| r.is("online", None))
            .await;
    }
    let before: Vec<_> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(w.container(*id).await.unwrap().id);
        }
        v
    };
    sqlx::query("CREATE TABLE kept_rows AS SELECT * FROM workspaces WHERE host = $1")
        .bind(&w.host)
        .execute(&w.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM workspaces WHERE host = $1")
        .bind(&w.host)
        .execute(&w.pool)
        .await
        .unwrap();
    super::wait_logged(w.berth.as_ref().unwrap(), "delete guard", 30).await;
    // Well past the grace: the guard still holds every orphan back.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut kept = 0;
    for id in &ids {
        kept += usize::from(w.container(*id).await.is_some());
    }
    assert_eq!(
        kept,
        ids.len(),
        "the guard let orphans go one batch at a time"
    );
    // Said once, with what to do, not at every round it holds.
    let log = std::fs::read_to_string(&w.berth.as_ref().unwrap().log).unwrap();
    let said: Vec<&str> = log.lines().filter(|l| l.contains("delete guard")).collect();
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(said[0].contains("desired_state = 'removed'"), "{}", said[0]);
    // `berth status` has no rows to show, and says what holds them.
    let (code, out, err) = crate::harness::berth(&["status"], &[("DATABASE_URL", &w.db.url)]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "host {}: the delete guard withheld the removal of 12 workspace(s) without a row",
            w.host
        )),
        "{out}"
    );

    // Rows put back part way: the five still missing are within the limit,
    // but the guard that tripped holds them until every row is back.
    let pool = w.pool.clone();
    let put_back = |ids: Vec<uuid::Uuid>| {
        let pool = pool.clone();
        async move {
            sqlx::query("INSERT INTO workspaces SELECT * FROM kept_rows WHERE id = ANY($1)")
                .bind(ids)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    put_back(ids[..7].iter().map(|id| id.0).collect()).await;
    super::wait_logged(w.berth.as_ref().unwrap(), "delete guard holds", 30).await;
    // The seven back leave the hold on the trail: status counts five.
    super::wait_logged(w.berth.as_ref().unwrap(), "leave its hold", 30).await;
    let (code, out, err) = crate::harness::berth(&["status"], &[("DATABASE_URL", &w.db.url)]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "host {}: the delete guard withheld the removal of 5 workspace(s) without a row",
            w.host
        )),
        "{out}"
    );
    // A berth that takes over takes the latch up from the trail.
    w.berth.take().unwrap().kill().await;
    w.start(&[("BERTH_ORPHAN_GRACE", "4s")]);
    super::wait_logged(w.berth.as_ref().unwrap(), "it holds them still", 30).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    for (id, was) in ids.iter().zip(&before) {
        assert_eq!(
            w.container(*id).await.and_then(|c| c.id).as_ref(),
            was.as_ref(),
            "{id}: removed or replaced while the guard held\n{}",
            std::fs::read_to_string(&w.berth.as_ref().unwrap().log).unwrap_or_default()
        );
    }
    put_back(ids[7..].iter().map(|id| id.0).collect()).await;
    super::wait_logged(w.berth.as_ref().unwrap(), "delete guard released", 30).await;
    for (id, was) in ids.iter().zip(&before) {
        w.wait_row(*id, 30, "online with its row back", |r| {
            r.is("online", None) && r.converged()
        })
        .await;
        assert_eq!(
            w.container(*id).await.and_then(|c| c.id).as_ref(),
            was.as_ref()
        );
    }
}

#[tokio::test]
async fn a_limit_raised_above_the_tripped_one_lets_the_removals_go_and_says_why() {
    let mut w = World::new().await;
    w.start(&[("BERTH_ORPHAN_GRACE", "3s"), ("BERTH_DELETE_GUARD", "1")]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(w.insert(json!({})).await);
    }
    for id in &ids {
        w.wait_row(*id, 90, "online", |r| r.is("online", None))
            .await;
    }
    sqlx::query("DELETE FROM workspaces WHERE host = $1")
        .bind(&w.host)
        .execute(&w.pool)
        .await
        .unwrap();
    super::wait_logged(w.berth.as_ref().unwrap(), "exceed the limit", 30).await;
    for id in &ids {
        assert!(
            w.container(*id).await.is_some(),
            "{id} removed under the guard"
        );
    }
    // The operator's word that the rows went on purpose: one run with a
    // higher limit.
    w.berth.take().unwrap().kill().await;
    w.start(&[("BERTH_ORPHAN_GRACE", "3s"), ("BERTH_DELETE_GUARD", "10")]);
    super::wait_logged(
        w.berth.as_ref().unwrap(),
        "above the 1 it tripped under",
        30,
    )
    .await;
    for id in &ids {
        w.poll(
            30,
            "the orphan removed",
            Duration::from_millis(300),
            || async { w.container(*id).await.is_none().then_some(()) },
        )
        .await;
        let said: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workspace_events WHERE workspace_id = $1
                AND detail->>'delete_guard' = 'released' AND reason LIKE '%limit is 10 now%'",
        )
        .bind(id.0)
        .fetch_one(&w.pool)
        .await
        .unwrap();
        assert_eq!(said, 1, "{id}: the release and why are on its trail");
    }
    let (code, out, err) = crate::harness::berth(&["status"], &[("DATABASE_URL", &w.db.url)]).await;
    assert_eq!(code, 0, "{err}");
    // The rows are gone: no table, and no guard line once it let go
    // (a guard that holds shows without rows, see ops::status).
    assert!(out.contains("no workspaces match"), "{out}");
    assert!(!out.contains("delete guard"), "{out}");
}

#[tokio::test]
async fn times_written_out_of_range_are_read_as_the_ends_of_the_range_and_stop_nothing() {
    let mut w = World::new().await;
    let odd = w.insert(json!({})).await;
    let plain = w.insert(json!({})).await;
    // The agent writes the heartbeat; anyone may insert a creation time or
    // a trail entry: none of them is within the date type's range.
    w.exec(
        "UPDATE workspaces SET last_heartbeat_at = 'infinity', created_at = '-infinity',
                restart_requested_at = '294000-01-01' WHERE id = $1",
        odd,
    )
    .await;
    // Pins are read by every host: a pin inserted with its own time, and a
    // history entry marked stable by hand.
    w.exec(
        "INSERT INTO runtime_image_pins (template_name, ring, digest, updated_at)
         SELECT 'agent', 'odd', digest, 'infinity' FROM runtime_image_pins
          WHERE template_name = 'agent' AND ring = 'stable' AND $1::uuid IS NOT NULL",
        odd,
    )
    .await;
    w.exec(
        "UPDATE runtime_image_pin_history SET stable_at = 'infinity'
          WHERE template_name = 'agent' AND $1::uuid IS NOT NULL",
        odd,
    )
    .await;
    w.exec(
        "INSERT INTO workspace_events (workspace_id, at, action, reason, host, instance, epoch)
         SELECT id, 'infinity', 'note', 'written by hand', host, 'hand', 0
           FROM workspaces WHERE id = $1",
        odd,
    )
    .await;
    w.start(&[]);
    for id in [odd, plain] {
        w.wait_row(id, 60, "online", |r| r.is("online", None)).await;
    }
    let berth = w.berth.as_mut().unwrap();
    assert_eq!(
        berth.wait(Duration::from_millis(500)).await,
        None,
        "berth runs on: {}",
        berth.tail()
    );
    let env = w.env();
    for args in [
        vec!["status", "--json"],
        vec!["events", &odd.to_string()],
        vec!["plan"],
    ] {
        let (code, out, err) = crate::ops::berth(&args, &env).await;
        assert_eq!(code, 0, "berth {args:?}: {out}{err}");
    }
    let (_, out, _) = crate::ops::berth(&["events", &odd.to_string()], &env).await;
    assert!(out.contains("written by hand"), "{out}");
    // The stable-marked entry is the one a rollback of ring `odd` (pinned
    // to the same digest as stable, then moved on) goes back to.
    let (code, out, err) =
        crate::ops::berth(&["pin", "agent", &w.v2, "--ring", "odd", "--yes"], &env).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = crate::ops::berth(
        &["rollback", "agent", "--ring", "odd", "--yes", "--json"],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&w.v1), "{out}");
}
