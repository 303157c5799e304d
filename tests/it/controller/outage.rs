//! A database outage: berth changes nothing while it lasts, converges
//! soon after, and the trail keeps the steps taken as it began.

use std::time::Duration;

use serde_json::json;

use super::{World, running};
use crate::harness::proxy::TcpProxy;

/// berth started with its database reached through a proxy a test can cut.
async fn behind_a_proxy(w: &mut World, extra: &[(&str, &str)]) -> TcpProxy {
    let proxy = TcpProxy::start(w.db.addr().parse().unwrap()).await;
    let proxied = w.db.url_via(proxy.addr);
    let mut env = vec![("DATABASE_URL", proxied.as_str())];
    env.extend_from_slice(extra);
    w.start(&env);
    proxy
}

#[tokio::test]
async fn a_database_outage_stops_every_mutation_until_it_is_over() {
    let mut w = World::new().await;
    let proxy = behind_a_proxy(&mut w, &[]).await;
    let id = w.insert(json!({})).await;
    w.wait_row(id, 60, "online", |r| r.is("online", None)).await;

    let other = w.insert(json!({})).await;
    w.wait_row(other, 60, "online", |r| r.is("online", None))
        .await;

    proxy.down();
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.stop_by_hand(id).await;
    // Thirty seconds without the database: the daemon's list of this
    // host's containers, with their states and start times, does not move.
    let during = w.host_containers().await;
    assert_eq!(during.len(), 2, "{during:?}");
    // The snapshot holds the stop: a start berth made before it would
    // leave nothing to watch for.
    let stopped = w.container(id).await.and_then(|c| c.id).unwrap();
    let state = &during[&stopped].0;
    assert!(state.contains("EXITED"), "{state}");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        w.host_containers().await,
        during,
        "berth changed containers while the database was away"
    );

    proxy.up();
    let back = std::time::Instant::now();
    w.wait_container(id, 30, "started after the outage", running)
        .await;
    // One resync is 3 s here (the session's reconnect backoff is capped
    // at it); the start itself takes a moment on a loaded engine.
    let took = back.elapsed();
    println!("converged {took:?} after the database came back");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[tokio::test]
async fn a_step_taken_as_the_database_goes_away_is_on_the_trail_once_it_is_back() {
    let mut w = World::new().await;
    // The agent ignores SIGTERM: a replace's stop takes the whole stop
    // timeout, and the database goes away while it runs.
    let proxy = behind_a_proxy(&mut w, &[("BERTH_STOP_TIMEOUT", "6s")]).await;
    let id = w.insert(json!({"AGENT_IGNORE_TERM": "1"})).await;
    w.wait_row(id, 60, "online", |r| r.is("online", None) && r.converged())
        .await;
    // The steps before the stop are on record as the stop begins.
    begin_replace(&w, id).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cut = chrono::Utc::now();
    proxy.down();
    // The stop ends (SIGKILL at 6 s) while the database is away.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let back = chrono::Utc::now();
    proxy.up();
    let stops = w
        .poll(
            30,
            "the stop recorded",
            Duration::from_millis(300),
            || async {
                let at: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
                    "SELECT at FROM workspace_events
                  WHERE workspace_id = $1 AND action = 'stop' AND reason LIKE 'recreate:%'",
                )
                .bind(id.0)
                .fetch_all(&w.pool)
                .await
                .unwrap();
                (!at.is_empty()).then_some(at)
            },
        )
        .await;
    assert!(
        stops.iter().any(|at| *at > cut && *at < back),
        "the stop that ended during the outage keeps its time: {stops:?} (cut {cut}, back {back})"
    );
    w.wait_row(id, 60, "online after the replace", |r| {
        r.is("online", None) && r.converged()
    })
    .await;
}

#[tokio::test]
async fn a_step_taken_under_a_lease_lost_meanwhile_is_on_the_trail_marked_late() {
    let mut w = World::new().await;
    let proxy = behind_a_proxy(&mut w, &[("BERTH_STOP_TIMEOUT", "8s")]).await;
    let id = w.insert(json!({"AGENT_IGNORE_TERM": "1"})).await;
    w.wait_row(id, 60, "online", |r| r.is("online", None) && r.converged())
        .await;
    // A second instance on the same host, reaching the database directly:
    // it takes the host when the first one's lease lapses.
    let mut env = w.env();
    env.retain(|(k, _)| k != "BERTH_STOP_TIMEOUT");
    env.push(("BERTH_STOP_TIMEOUT".into(), "8s".into()));
    let _standby = crate::harness::process::Berth::start(&env);
    tokio::time::sleep(Duration::from_secs(2)).await;
    begin_replace(&w, id).await;
    // The first instance's stop (SIGKILL at 8 s) ends after its lease
    // (3 s) lapsed and the second one took the host.
    proxy.down();
    tokio::time::sleep(Duration::from_secs(10)).await;
    proxy.up();
    let late = w
        .poll(
            60,
            "the late stop recorded",
            Duration::from_millis(300),
            || async {
                let late: Option<(i64, String)> = sqlx::query_as(
                    "SELECT epoch, instance FROM workspace_events
                  WHERE workspace_id = $1 AND action = 'stop'
                    AND (detail->>'recorded_late')::boolean",
                )
                .bind(id.0)
                .fetch_optional(&w.pool)
                .await
                .unwrap();
                late
            },
        )
        .await;
    let (epoch, instance): (i64, String) =
        sqlx::query_as("SELECT epoch, holder FROM host_leases WHERE host = $1")
            .bind(&w.host)
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert!(
        late.0 < epoch,
        "recorded under the epoch it was taken in: {late:?}"
    );
    assert_ne!(late.1, instance, "recorded as the instance that took it");
    w.wait_row(id, 60, "online after the replace", |r| {
        r.is("online", None) && r.converged()
    })
    .await;
}

#[tokio::test]
async fn half_open_database_connections_cost_seconds_not_the_acquire_timeout_each() {
    let mut w = World::new().await;
    let proxy = behind_a_proxy(&mut w, &[("BERTH_CONCURRENCY", "8")]).await;
    let first = w.insert(json!({})).await;
    w.wait_row(first, 60, "online", |r| r.is("online", None))
        .await;
    // Every connection berth holds (its pool of twelve, its session) goes
    // silent; new ones pass. Each idle one costing the pool's ten-second
    // acquire timeout made a new row wait well over a minute.
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.freeze();
    let frozen = std::time::Instant::now();
    let second = w.insert(json!({})).await;
    w.wait_row(second, 90, "online", |r| r.is("online", None))
        .await;
    let took = frozen.elapsed();
    assert!(
        took < Duration::from_secs(25),
        "a new row waited {took:?} behind half-open connections"
    );
}

/// Changes the row of an agent that ignores SIGTERM and waits until its
/// replace's preflight is on record: the stop that follows takes the whole
/// stop timeout.
async fn begin_replace(w: &World, id: berth::model::WorkspaceId) {
    w.exec(
        r#"UPDATE workspaces SET env = '{"AGENT_IGNORE_TERM": "1", "V": "2"}' WHERE id = $1"#,
        id,
    )
    .await;
    w.poll(
        30,
        "the replace's preflight recorded",
        Duration::from_millis(100),
        || async { (w.count_events(id, "preflight").await > 0).then_some(()) },
    )
    .await;
}

/// An operator's `ALTER TABLE workspaces` holds the table's exclusive
/// lock for a minute: berth's reads of it wait, but its control loop (the
/// watchdog's and `/healthz`'s sign of life) keeps turning, and berth
/// converges once the lock is gone.
#[tokio::test]
async fn a_table_locked_for_a_minute_does_not_stall_the_control_loop() {
    let mut w = World::new().await;
    let port = crate::harness::process::free_port();
    w.start(&[("BERTH_LISTEN", &format!("127.0.0.1:{port}"))]);
    let id = w.insert(json!({})).await;
    w.wait_row(id, 60, "online", |r| r.is("online", None)).await;
    let mut lock = w.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE workspaces IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    // Past `/healthz`'s 30 s: a loop waiting on the lock says it stalled.
    let locked = std::time::Instant::now();
    while locked.elapsed() < Duration::from_secs(40) {
        let answer = crate::harness::process::get(port, "/healthz").await;
        assert!(
            answer.lines().next().is_some_and(|l| l.contains(" 200 ")),
            "{:?} into the lock: {answer}",
            locked.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    lock.rollback().await.unwrap();
    w.exec(
        r#"UPDATE workspaces SET env = '{"V": "2"}' WHERE id = $1"#,
        id,
    )
    .await;
    w.wait_row(id, 90, "online on the edit", |r| {
        r.is("online", None) && r.converged()
    })
    .await;
}
