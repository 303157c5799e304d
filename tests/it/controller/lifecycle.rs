//! A workspace's life: created, changed, stopped, started, removed, and
//! what happens to it by hand meanwhile.

use std::time::Duration;

use berth::model::{LABEL_HOST, LABEL_WORKSPACE};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::{World, running};
use crate::harness::process::{Berth, free_port, get};

#[tokio::test]
async fn a_row_goes_online_and_an_env_edit_replaces_it_keeping_volume_bytes() {
    let mut w = World::new().await;
    w.start(&[]);
    let id = w.insert(json!({"GREETING": "hello"})).await;
    let row = w
        .wait_row(id, 60, "online", |r| r.is("online", None) && r.converged())
        .await;
    assert!(
        row.url
            .as_deref()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:")),
        "{row:?}"
    );
    assert_eq!(row.runtime_image_digest.as_deref(), Some(w.v1.as_str()));
    let first = w.container(id).await.unwrap();
    assert_eq!(row.runtime_image_id, first.image);
    assert_eq!(row.container_id.as_deref(), first.id.as_deref());
    let env = first.config.as_ref().unwrap().env.clone().unwrap();
    assert!(env.contains(&"GREETING=hello".to_string()), "{env:?}");
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM workspace_events WHERE workspace_id = $1")
            .bind(id.0)
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert!(events >= 4, "expected the create's events, found {events}");
    // The workspace network is berth's, labelled for this host.
    let network = w
        .scope
        .docker
        .inspect_network(
            &format!("bn-{}", w.host),
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .unwrap();
    let labels = network.labels.unwrap_or_default();
    assert_eq!(labels.get(LABEL_HOST), Some(&w.host), "{labels:?}");
    assert_eq!(
        labels.get(berth::model::LABEL_MANAGED).map(String::as_str),
        Some("true")
    );

    w.sh(id, "echo precious > /workspace/keep && cat /workspace/keep")
        .await;
    w.exec(
        "UPDATE workspaces SET env = '{\"GREETING\": \"bye\"}' WHERE id = $1",
        id,
    )
    .await;
    let row = w
        .wait_row(id, 60, "replaced and online", |r| {
            r.is("online", None) && r.converged() && r.container_id != first.id
        })
        .await;
    let second = w.container(id).await.unwrap();
    assert_eq!(row.container_id.as_deref(), second.id.as_deref());
    let env = second.config.as_ref().unwrap().env.clone().unwrap();
    assert!(env.contains(&"GREETING=bye".to_string()), "{env:?}");
    assert_eq!(w.sh(id, "cat /workspace/keep").await.trim(), "precious");
    // The old container is gone, not left beside the new one.
    let prev = w
        .scope
        .docker
        .inspect_container(
            &id.prev_container_name(),
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await;
    assert!(prev.is_err(), "the -prev container was left behind");
}

#[tokio::test]
async fn a_session_epoch_bump_starts_a_fresh_session_volume_and_keeps_the_workspace() {
    let mut w = World::new().await;
    sqlx::query("UPDATE runtimes SET session_volume = true WHERE name = 'agent'")
        .execute(&w.pool)
        .await
        .unwrap();
    w.start(&[]);
    let id = w.insert(json!({})).await;
    let first = w
        .wait_row(id, 60, "online", |r| r.is("online", None) && r.converged())
        .await;
    w.sh(
        id,
        "echo old > /root/.claude/sessions/s && echo kept > /workspace/keep",
    )
    .await;
    let volume = |name: String| {
        let docker = w.scope.docker.clone();
        async move { docker.inspect_volume(&name).await.ok() }
    };
    let before = volume(id.sessions_volume())
        .await
        .expect("a session volume");
    let labels = before.labels.clone();
    assert_eq!(labels.get(LABEL_HOST), Some(&w.host), "{labels:?}");
    assert_eq!(
        labels.get(LABEL_WORKSPACE).map(String::as_str),
        Some(id.to_string().as_str())
    );

    w.exec(
        "UPDATE workspaces SET session_epoch = session_epoch + 1 WHERE id = $1",
        id,
    )
    .await;
    w.wait_row(id, 60, "replaced", |r| {
        r.is("online", None) && r.converged() && r.container_id != first.container_id
    })
    .await;
    assert_eq!(w.sh(id, "ls /root/.claude/sessions").await.trim(), "");
    assert_eq!(w.sh(id, "cat /workspace/keep").await.trim(), "kept");
    let after = volume(id.sessions_volume())
        .await
        .expect("a session volume");
    assert_eq!(after.labels.get(LABEL_HOST), Some(&w.host));
    // Once: the passes after the replace see the new volume's epoch, so
    // the fresh session is not discarded again (a full relist is 30 s away).
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(
        w.count_events(id, "create").await,
        2,
        "created, then replaced once"
    );
    assert_eq!(
        w.count_events(id, "remove_volume").await,
        1,
        "one session discarded"
    );
}

#[tokio::test]
async fn stopped_keeps_the_container_running_starts_it_again_and_removed_deletes_everything() {
    let mut w = World::new().await;
    w.start(&[]);
    let id = w.insert(json!({})).await;
    w.wait_row(id, 60, "online", |r| r.is("online", None)).await;
    let created = w.container(id).await.unwrap().id;

    w.exec(
        "UPDATE workspaces SET desired_state = 'stopped' WHERE id = $1",
        id,
    )
    .await;
    w.wait_row(id, 30, "stopped", |r| {
        r.is("stopped", None) && r.converged()
    })
    .await;
    let c = w
        .container(id)
        .await
        .expect("a stopped workspace keeps its container");
    assert_eq!(c.state.unwrap().running, Some(false));
    for name in [id.configs_volume(), id.workspace_volume()] {
        assert!(
            w.scope.docker.inspect_volume(&name).await.is_ok(),
            "a stopped workspace keeps its volume {name}"
        );
    }

    w.exec(
        "UPDATE workspaces SET desired_state = 'running' WHERE id = $1",
        id,
    )
    .await;
    w.wait_row(id, 30, "online again", |r| {
        r.is("online", None) && r.converged()
    })
    .await;
    let c = w.container(id).await.unwrap();
    assert_eq!(c.id, created, "the same container starts again");
    assert_eq!(c.state.unwrap().running, Some(true));

    w.exec(
        "UPDATE workspaces SET desired_state = 'removed' WHERE id = $1",
        id,
    )
    .await;
    let row = w
        .wait_row(id, 30, "removed", |r| r.is("removed", None))
        .await;
    assert_eq!(row.container_id, None);
    assert!(w.container(id).await.is_none());
    let volumes = w
        .scope
        .docker
        .list_volumes(None::<bollard::query_parameters::ListVolumesOptions>)
        .await
        .unwrap();
    let names: Vec<String> = volumes
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    for name in id.volume_names() {
        assert!(!names.contains(&name), "volume {name} survived removal");
    }
}

#[tokio::test]
async fn an_invalid_row_fails_while_the_others_converge() {
    let mut w = World::new().await;
    w.start(&[]);
    let bad = w.insert(json!({"BAD=KEY": "x"})).await;
    let good = w.insert(json!({"OK": "1"})).await;
    let row = w
        .wait_row(bad, 30, "invalid", |r| r.is("failed", Some("invalid_spec")))
        .await;
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains("BAD=KEY")),
        "{row:?}"
    );
    w.wait_row(good, 60, "good online", |r| r.is("online", None))
        .await;
    assert!(w.container(bad).await.is_none());
    // The refusal is on the trail once, however many passes see it; a new
    // cause is a new entry; the fix adds none.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(w.count_events(bad, "status").await, 1);
    let (reason, error): (String, String) = sqlx::query_as(
        "SELECT reason, detail->>'error' FROM workspace_events
         WHERE workspace_id = $1 AND action = 'status'",
    )
    .bind(bad.0)
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(reason, "failed/invalid_spec");
    assert!(error.contains("BAD=KEY"), "{error}");
    w.exec(
        r#"UPDATE workspaces SET env = '{"": "x"}' WHERE id = $1"#,
        bad,
    )
    .await;
    w.wait_row(bad, 30, "a new cause", |r| {
        r.last_error
            .as_deref()
            .is_some_and(|e| !e.contains("BAD=KEY"))
    })
    .await;
    w.exec("UPDATE workspaces SET env = '{}' WHERE id = $1", bad)
        .await;
    w.wait_row(bad, 60, "fixed", |r| r.is("online", None)).await;
    assert_eq!(w.count_events(bad, "status").await, 2);

    // An invalid edit of a serving workspace blocks the change; the
    // container of its last spec serves on, untouched, at its URL.
    let before = w.row(good).await;
    let serving = before.container_id.clone();
    assert!(before.url.is_some(), "{before:?}");
    w.exec(
        r#"UPDATE workspaces SET env = '{"BAD=KEY": "y"}' WHERE id = $1"#,
        good,
    )
    .await;
    let row = w
        .wait_row(good, 30, "change blocked", |r| {
            r.is("degraded", Some("change_blocked"))
        })
        .await;
    let error = row.last_error.unwrap_or_default();
    assert!(
        error.contains("BAD=KEY") && error.contains("serves on"),
        "{error}"
    );
    assert_eq!(row.container_id, serving);
    assert_eq!(row.url, before.url, "the platform still reaches it");
    assert!(running(w.container(good).await.as_ref()));
    // Each blocked edit is on the trail, the second with its own cause,
    // however many passes see them.
    let blocked = w
        .count_events_like(good, "status", "degraded/change_blocked")
        .await;
    assert_eq!(blocked, 1);
    w.exec(
        r#"UPDATE workspaces SET env = '{"": "z"}' WHERE id = $1"#,
        good,
    )
    .await;
    w.wait_row(good, 30, "blocked anew", |r| {
        r.is("degraded", Some("change_blocked"))
            && r.last_error
                .as_deref()
                .is_some_and(|e| !e.contains("BAD=KEY"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let blocked = w
        .count_events_like(good, "status", "degraded/change_blocked")
        .await;
    assert_eq!(blocked, 2);
    assert_eq!(w.row(good).await.container_id, serving);

    // Stopped by hand while the change is blocked, that container is
    // started again: it is the workspace's, whatever its row asks.
    w.stop_by_hand(good).await;
    w.wait_container(good, 30, "the last spec's container started again", running)
        .await;
    let row = w
        .wait_row(good, 30, "blocked, serving again", |r| {
            r.is("degraded", Some("change_blocked"))
        })
        .await;
    assert_eq!(
        row.container_id, serving,
        "the same container, not a new one"
    );
    assert_eq!(w.count_events(good, "start").await, 1);
}

#[tokio::test]
async fn a_paused_rows_container_is_left_alone_even_when_removed_by_hand() {
    let mut w = World::new().await;
    w.start(&[]);
    let id = w.insert(json!({})).await;
    w.wait_row(id, 60, "online", |r| r.is("online", None)).await;
    w.exec("UPDATE workspaces SET paused = true WHERE id = $1", id)
        .await;
    w.wait_row(id, 30, "paused", |r| r.is("paused", None)).await;
    w.remove_by_hand(id).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        w.container(id).await.is_none(),
        "berth acted on a paused workspace"
    );
    // Left alone, but not shown as there.
    w.wait_row(id, 30, "paused without a container", |r| {
        r.is("paused", None) && r.container_id.is_none()
    })
    .await;

    w.exec("UPDATE workspaces SET paused = false WHERE id = $1", id)
        .await;
    w.wait_row(id, 60, "online after unpause", |r| r.is("online", None))
        .await;
}

#[tokio::test]
async fn a_container_removed_or_stopped_by_hand_comes_back() {
    let mut w = World::new().await;
    w.start(&[]);
    let id = w.insert(json!({})).await;
    w.wait_row(id, 60, "online", |r| r.is("online", None)).await;
    let first = w.container(id).await.unwrap().id;

    w.stop_by_hand(id).await;
    let c = w
        .wait_container(id, 30, "started again", running)
        .await
        .unwrap();
    assert_eq!(c.id, first, "a stopped container is started, not replaced");

    w.remove_by_hand(id).await;
    let c = w
        .wait_container(id, 60, "recreated", running)
        .await
        .unwrap();
    assert_ne!(c.id, first);
    w.wait_row(id, 60, "online", |r| {
        r.is("online", None) && r.container_id == c.id
    })
    .await;
}

#[tokio::test]
async fn a_container_detached_from_its_network_by_hand_is_joined_again_and_answers() {
    let mut w = World::new().await;
    w.start(&[]);
    let id = w.insert(json!({})).await;
    w.wait_row(id, 60, "online", |r| r.is("online", None)).await;
    let first = w.container(id).await.unwrap().id;
    let network = format!("bn-{}", w.host);
    crate::act::docker_cli(&["network", "disconnect", &network, &id.container_name()]).await;
    let c = w
        .wait_container(id, 30, "on its network again", |c| {
            c.and_then(|c| c.network_settings.as_ref())
                .and_then(|n| n.networks.as_ref())
                .is_some_and(|n| n.contains_key(&network))
        })
        .await
        .unwrap();
    assert_eq!(c.id, first, "joined again, not replaced");
    // On the trail once the step's record lands, just after the engine's
    // answer.
    w.poll(
        10,
        "the connect on the trail",
        Duration::from_millis(100),
        || async { (w.count_events(id, "connect").await == 1).then_some(()) },
    )
    .await;
    // Its port is published anew: the row's URL names it and answers.
    let port: u16 = c
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.as_ref())
        .and_then(|p| p.get("8000/tcp").cloned().flatten())
        .and_then(|b| b.first().and_then(|b| b.host_port.clone()))
        .and_then(|p| p.parse().ok())
        .expect("port 8000 published again");
    let suffix = format!(":{port}");
    w.wait_row(id, 30, "the URL on the new port", |r| {
        r.url.as_deref().is_some_and(|u| u.ends_with(&suffix))
    })
    .await;
    let answer = crate::harness::process::get(port, "/variant").await;
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.contains(" 200 "),
        "{answer}"
    );
}

#[tokio::test]
async fn berth_killed_and_started_again_adopts_every_container() {
    let mut w = World::new().await;
    w.start(&[]);
    let a = w.insert(json!({})).await;
    let b = w.insert(json!({"X": "y"})).await;
    for id in [a, b] {
        w.wait_row(id, 60, "online", |r| r.is("online", None) && r.converged())
            .await;
    }
    let before: Vec<(Option<String>, Option<String>)> = {
        let mut v = Vec::new();
        for id in [a, b] {
            let c = w.container(id).await.unwrap();
            v.push((c.id.clone(), c.state.unwrap().started_at));
        }
        v
    };
    let (pool, host) = (w.pool.clone(), w.host.clone());
    let epoch = || async {
        sqlx::query_scalar::<_, i64>("SELECT epoch FROM host_leases WHERE host = $1")
            .bind(&host)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let old_epoch = epoch().await;
    w.berth.take().unwrap().kill().await;
    w.start(&[]);
    // The new instance holds the host, then passes over every key for two
    // resyncs.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while epoch().await == old_epoch {
        assert!(
            std::time::Instant::now() < deadline,
            "the new berth never took the lease"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(7)).await;
    for (id, (cid, started)) in [a, b].into_iter().zip(before) {
        let c = w.container(id).await.unwrap();
        assert_eq!(c.id, cid, "recreated");
        assert_eq!(c.state.unwrap().started_at, started, "restarted");
        assert!(w.row(id).await.is("online", None));
    }
    // And it acts: a change to one row is carried out, the other is left.
    let a_container = w.container(a).await.unwrap().id;
    w.exec(
        r#"UPDATE workspaces SET env = '{"X": "z"}' WHERE id = $1"#,
        b,
    )
    .await;
    let old_b = w.row(b).await.container_id;
    w.wait_row(b, 60, "b replaced by the new berth", |r| {
        r.is("online", None) && r.converged() && r.container_id != old_b
    })
    .await;
    assert_eq!(w.container(a).await.unwrap().id, a_container);
}

#[tokio::test]
async fn a_pin_change_replaces_onto_the_new_digest() {
    let mut w = World::new().await;
    w.start(&[]);
    let id = w.insert(json!({})).await;
    let row = w
        .wait_row(id, 60, "online on v1", |r| r.is("online", None))
        .await;
    assert_eq!(row.runtime_image_digest.as_deref(), Some(w.v1.as_str()));
    sqlx::query("UPDATE runtime_image_pins SET digest = $1 WHERE template_name = 'agent'")
        .bind(&w.v2)
        .execute(&w.pool)
        .await
        .unwrap();
    let v2 = w.v2.clone();
    w.wait_row(id, 60, "online on v2", |r| {
        r.is("online", None) && r.runtime_image_digest.as_deref() == Some(v2.as_str())
    })
    .await;
    assert_eq!(w.sh(id, "cat /www/variant").await.trim(), "v2");
}

async fn holder(w: &World) -> Option<String> {
    sqlx::query_scalar("SELECT holder FROM host_leases WHERE host = $1 AND renewed_at > now() - interval '3 seconds'")
        .bind(&w.host)
        .fetch_optional(&w.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn sigterm_drains_releases_the_lease_and_leaves_containers_running() {
    let mut w = World::new().await;
    // berth talks to systemd: READY once running, WATCHDOG at half the
    // watchdog interval while its loop turns, STOPPING on the way out.
    let socket_path = std::env::temp_dir().join(format!("berth-notify-{}", w.host));
    let socket = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let notes = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(30), socket.recv(&mut buf)).await
        {
            seen.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
            if seen.last().is_some_and(|m| m.contains("STOPPING=1")) {
                break;
            }
        }
        seen
    });
    let notify_socket = socket_path.display().to_string();
    w.start(&[
        ("NOTIFY_SOCKET", notify_socket.as_str()),
        ("WATCHDOG_USEC", "1000000"),
    ]);
    let id = w.insert(json!({})).await;
    w.wait_row(id, 60, "online", |r| r.is("online", None)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut berth = w.berth.take().unwrap();
    let pid = berth.pid();
    assert!(
        holder(&w)
            .await
            .is_some_and(|h| h.contains(&format!(":{pid}:")))
    );
    berth.signal("TERM").await;
    assert_eq!(
        berth.wait(Duration::from_secs(20)).await,
        Some(0),
        "{}",
        berth.tail()
    );
    // Released: its renewal time is set to the infinite past, so a
    // standby takes over at once rather than after the term.
    let released: bool =
        sqlx::query_scalar("SELECT renewed_at = '-infinity' FROM host_leases WHERE host = $1")
            .bind(&w.host)
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert!(released, "the lease was not released");
    assert!(
        running(w.container(id).await.as_ref()),
        "the container must outlive berth"
    );
    let seen = notes.await.unwrap();
    let _ = std::fs::remove_file(&socket_path);
    assert_eq!(
        seen.first().map(String::as_str),
        Some("READY=1"),
        "{seen:?}"
    );
    let pings = seen.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(pings >= 3, "{pings} watchdog pings: {seen:?}");
    assert!(
        seen.last().is_some_and(|m| m.contains("STOPPING=1")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn no_more_than_the_concurrency_limit_of_passes_act_at_once() {
    let mut w = World::new().await;
    w.start(&[("BERTH_CONCURRENCY", "2")]);
    let mut tx = w.pool.begin().await.unwrap();
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO workspaces (name, runtime, host, config_files)
         SELECT 'c' || n, 'agent', $1, '{\"config.yaml\": \"name: c\\n\"}'
           FROM generate_series(1, 6) n RETURNING id",
    )
    .bind(&w.host)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    for id in &ids {
        w.wait_row(berth::model::WorkspaceId(*id), 90, "online", |r| {
            r.is("online", None)
        })
        .await;
    }
    // Each create pass, from berth's log: from the start of its first
    // action to the end of its last (a part of the whole pass).
    let log = std::fs::read_to_string(&w.berth.as_ref().unwrap().log).unwrap();
    let mut windows: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for line in log.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let action = v["action"].as_str().unwrap_or_default();
        if v["message"] != "action" || !action.ends_with("(create: no container)") {
            continue;
        }
        let at = chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap())
            .unwrap()
            .timestamp_micros() as f64
            / 1e6;
        let took = v["took_ms"].as_f64().unwrap_or_default() / 1e3;
        let e = windows
            .entry(v["workspace"].as_str().unwrap().to_string())
            .or_insert((at - took, at));
        e.0 = e.0.min(at - took);
        e.1 = e.1.max(at);
    }
    assert_eq!(windows.len(), ids.len(), "{windows:?}");
    let most = super::most_at_once(&windows.values().copied().collect::<Vec<_>>());
    assert!(most <= 2, "{most} passes acted at once: {windows:?}");
    assert!(most == 2, "the passes ran one at a time: {windows:?}");
}

/// Sets the workspace's env to V=`v` (keeping it deaf to SIGTERM) and
/// returns the running berth once the replace is under way: its image step
/// and preflight are on the trail, the stop of the old container is next
/// (the trail takes each step before the next one starts).
async fn replace_slowly(w: &mut World, id: berth::model::WorkspaceId, v: &str) -> Berth {
    let preflights = w.count_events(id, "preflight").await;
    w.exec(
        &format!(
            "UPDATE workspaces SET env = '{{\"AGENT_IGNORE_TERM\": \"1\", \"V\": \"{v}\"}}' WHERE id = $1"
        ),
        id,
    )
    .await;
    w.poll(
        30,
        "the replace's preflight on the trail",
        Duration::from_millis(100),
        || async { (w.count_events(id, "preflight").await > preflights).then_some(()) },
    )
    .await;
    w.berth.take().unwrap()
}

#[tokio::test]
async fn sigterm_lets_a_pass_in_flight_finish_and_a_second_signal_exits_at_once() {
    let mut w = World::new().await;
    // The container ignores SIGTERM, so each stop of it takes the whole
    // stop timeout: a replace is in flight for seconds.
    let slow = [
        ("BERTH_STOP_TIMEOUT", "6s"),
        ("BERTH_SHUTDOWN_GRACE", "30s"),
    ];
    w.start(&slow);
    let id = w.insert(json!({"AGENT_IGNORE_TERM": "1"})).await;
    let first = w
        .wait_row(id, 60, "online", |r| r.is("online", None) && r.converged())
        .await;
    let mut berth = replace_slowly(&mut w, id, "2").await;
    let signalled = std::time::Instant::now();
    berth.signal("TERM").await;
    assert_eq!(
        berth.wait(Duration::from_secs(40)).await,
        Some(0),
        "{}",
        berth.tail()
    );
    let drained = signalled.elapsed();
    // The pass went on through the stop (about 6 s) to the new container.
    assert!(
        drained >= Duration::from_secs(3),
        "exited after {drained:?}"
    );
    let log = std::fs::read_to_string(&berth.log).unwrap();
    assert!(
        log.contains("start new container (recreate: env changed)"),
        "{log}"
    );
    let new = w.container(id).await.expect("the new container");
    assert_ne!(new.id, first.container_id, "the replace was cut short");
    assert!(running(Some(&new)));
    // Each event has the time of its own step: the stop took the stop
    // timeout after the image step.
    let (ensured, stopped): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "SELECT (SELECT max(at) FROM workspace_events WHERE workspace_id = $1 AND action = 'ensure_image'),
                (SELECT max(at) FROM workspace_events WHERE workspace_id = $1 AND action = 'stop')",
    )
    .bind(id.0)
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert!(
        stopped - ensured >= chrono::TimeDelta::seconds(3),
        "image step at {ensured}, stop at {stopped}"
    );

    // A second signal does not wait for the pass.
    w.start(&slow);
    w.wait_row(id, 60, "online on V=2", |r| {
        r.is("online", None) && r.converged()
    })
    .await;
    let mut berth = replace_slowly(&mut w, id, "3").await;
    let signalled = std::time::Instant::now();
    berth.signal("TERM").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    berth.signal("TERM").await;
    assert_eq!(
        berth.wait(Duration::from_secs(10)).await,
        Some(1),
        "{}",
        berth.tail()
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(6),
        "the second signal waited {:?}",
        signalled.elapsed()
    );
    // The cut pass left its trail up to the step it was in.
    let (action, reason): (String, String) = sqlx::query_as(
        "SELECT action, reason FROM workspace_events WHERE workspace_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(id.0)
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(
        (action.as_str(), reason.as_str()),
        ("preflight", "recreate: env changed")
    );
    // The next berth repairs whatever the cut pass left.
    w.start(&[]);
    w.wait_row(id, 90, "online on V=3", |r| {
        r.is("online", None) && r.converged()
    })
    .await;
    assert_eq!(w.sh(id, "grep ^V= /tmp/agent.env").await.trim(), "V=3");
}

#[tokio::test]
async fn a_step_abandoned_when_the_shutdown_grace_ends_is_on_the_trail_as_cut_short() {
    let mut w = World::new().await;
    // The stop of a container deaf to SIGTERM takes 8 s; the grace 1 s.
    w.start(&[("BERTH_STOP_TIMEOUT", "8s"), ("BERTH_SHUTDOWN_GRACE", "1s")]);
    let id = w.insert(json!({"AGENT_IGNORE_TERM": "1"})).await;
    w.wait_row(id, 60, "online", |r| r.is("online", None) && r.converged())
        .await;
    let mut berth = replace_slowly(&mut w, id, "2").await;
    // The stop is under way (it takes 8 s).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    berth.signal("TERM").await;
    assert_eq!(
        berth.wait(Duration::from_secs(20)).await,
        Some(0),
        "{}",
        berth.tail()
    );
    let log = std::fs::read_to_string(&berth.log).unwrap();
    assert!(log.contains("abandoning passes in flight"), "{log}");
    // The stop went out and berth did not see it end: the trail says so.
    let cut: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT action, detail FROM workspace_events
          WHERE workspace_id = $1 AND (detail->>'cut_short')::boolean",
    )
    .bind(id.0)
    .fetch_all(&w.pool)
    .await
    .unwrap();
    assert_eq!(cut.len(), 1, "{cut:?}\n{log}");
    assert_eq!(cut[0].0, "stop", "{cut:?}");
    assert!(
        cut[0].1["error"]
            .as_str()
            .is_some_and(|e| e.contains("not known")),
        "{cut:?}"
    );
    // The next berth goes on from what it finds.
    w.start(&[]);
    w.wait_row(id, 90, "online on V=2", |r| {
        r.is("online", None) && r.converged()
    })
    .await;
}

#[tokio::test]
async fn a_second_berth_for_the_host_stays_passive_and_takes_over_when_the_first_dies() {
    let mut w = World::new().await;
    let (a_port, b_port) = (free_port(), free_port());
    w.start(&[("BERTH_LISTEN", &format!("127.0.0.1:{a_port}"))]);
    let first = w.insert(json!({})).await;
    w.wait_row(first, 60, "online", |r| r.is("online", None))
        .await;
    let a = w.berth.take().unwrap();
    // The standby binds every interface, which berth warns about.
    let b = Berth::start(&with_listen(&w.env(), "0.0.0.0", b_port));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let held = holder(&w).await.unwrap_or_default();
    assert!(held.contains(&format!(":{}:", a.pid())), "holder {held}");
    // The standby is alive but not ready, and says it does not lead.
    assert!(is_ok(&get(b_port, "/healthz").await));
    assert!(
        !is_ok(&get(b_port, "/readyz").await),
        "the standby is ready"
    );
    let standby = get(b_port, "/metrics").await;
    assert!(standby.contains("\nberth_leader 0"));
    // The standby counts no rows and queues nothing: sums over both
    // instances count each row once.
    assert!(!standby.contains("berth_workspaces{"), "{standby}");
    assert!(standby.contains("\nberth_workqueue_depth 0"), "{standby}");
    assert!(is_ok(&get(a_port, "/readyz").await), "{}", a.tail());
    let leader = get(a_port, "/metrics").await;
    assert!(leader.contains("\nberth_leader 1"));
    assert!(
        leader.contains("berth_workspaces{status=\"online\"} 1"),
        "{leader}"
    );
    let standby_log = std::fs::read_to_string(&b.log).unwrap();
    assert!(
        standby_log.contains("reachable beyond this machine"),
        "no warning for 0.0.0.0:\n{standby_log}"
    );
    assert_eq!(
        standby_log
            .matches("standby: another instance holds")
            .count(),
        1,
        "it says once that it stands by:\n{standby_log}"
    );
    assert!(
        !standby_log.contains("\"message\":\"action\""),
        "the standby acted:\n{standby_log}"
    );

    let b_pid = b.pid();
    a.kill().await;
    w.berth = Some(b);
    let second = w.insert(json!({})).await;
    w.wait_row(second, 60, "converged by the standby", |r| {
        r.is("online", None)
    })
    .await;
    let held = holder(&w).await.unwrap_or_default();
    assert!(held.contains(&format!(":{b_pid}:")), "holder {held}");
    assert!(w.row(first).await.is("online", None));
    assert!(is_ok(&get(b_port, "/readyz").await));
    assert!(get(b_port, "/metrics").await.contains("\nberth_leader 1"));
}

fn with_listen(env: &[(String, String)], ip: &str, port: u16) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.retain(|(k, _)| k != "BERTH_LISTEN");
    env.push(("BERTH_LISTEN".into(), format!("{ip}:{port}")));
    env
}

/// Whether an HTTP answer's status is 200.
fn is_ok(answer: &str) -> bool {
    answer
        .lines()
        .next()
        .is_some_and(|status| status.split(' ').nth(1) == Some("200"))
}

#[tokio::test]
async fn a_row_set_to_removed_and_back_at_once_keeps_its_volumes_and_data() {
    let mut w = World::new().await;
    w.start(&[]);
    let id = w.insert(json!({})).await;
    w.wait_row(id, 60, "online", |r| r.is("online", None)).await;
    w.sh(id, "echo precious > /workspace/keep").await;
    // Set in a transaction that stays open longer than the hold: the row's
    // time of change is the transaction's start, and the hold still runs
    // from when berth sees the commit.
    let mut tx = w.pool.begin().await.unwrap();
    sqlx::query("UPDATE workspaces SET desired_state = 'removed' WHERE id = $1")
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    tx.commit().await.unwrap();
    w.wait_container(id, 30, "container removed", |c| c.is_none())
        .await;
    let row = w
        .wait_row(id, 10, "volumes held", |r| r.is("stopped", None))
        .await;
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains("the volumes go at")),
        "{row:?}"
    );
    w.exec(
        "UPDATE workspaces SET desired_state = 'running' WHERE id = $1",
        id,
    )
    .await;
    w.wait_row(id, 60, "online again", |r| r.is("online", None))
        .await;
    assert_eq!(w.sh(id, "cat /workspace/keep").await.trim(), "precious");
}
