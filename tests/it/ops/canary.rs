//! Secrets stay secret: a canary in a row's env and auth token, the
//! registry token and the database password appear in none of berth run's
//! logs (JSON and pretty), `/metrics`, the rows' status columns, the
//! events, or `berth status`, `events` and `plan` output.

use std::time::Duration;

use serde_json::json;

use super::{berth, env_with};
use crate::controller::World;
use crate::harness;
use crate::harness::process::{free_port, get};

/// The database URL with a password (the test cluster trusts every
/// connection, so the password is sent and never checked).
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (user, host) = rest.split_once('@').unwrap();
    format!("{scheme}://{user}:{password}@{host}")
}

#[tokio::test]
async fn secrets_appear_in_no_log_metric_row_event_or_command_output() {
    let mut w = World::new().await;
    let canary = format!("canary-env-{}", harness::unique());
    let auth = format!("canary-auth-{}", harness::unique());
    let token = format!("canary-token-{}", harness::unique());
    let password = format!("canary-dbpw-{}", harness::unique());
    let secrets = [&canary, &auth, &token, &password];
    let port = free_port().to_string();
    let db_url = with_password(&w.db.url, &password);
    let base = env_with(
        &w,
        &[
            ("DATABASE_URL", db_url.as_str()),
            ("GHCR_USER", "canary-bot"),
            ("GHCR_TOKEN", token.as_str()),
            ("BERTH_LISTEN", &format!("127.0.0.1:{port}")),
            ("RUST_LOG", "debug"),
        ],
    );
    let settings = |format: &str| {
        let mut env = base.clone();
        env.retain(|(k, _)| k != "BERTH_LOG_FORMAT");
        env.push(("BERTH_LOG_FORMAT".to_string(), format.to_string()));
        env
    };
    let mut seen: Vec<(String, String)> = Vec::new();

    // JSON logs: a create, an invalid row, an image that is not there, an
    // env edit that replaces the container.
    w.berth = Some(harness::process::Berth::start(&settings("json")));
    let good = w.insert(json!({"CANARY": canary})).await;
    sqlx::query("UPDATE workspaces SET auth_token = $2 WHERE id = $1")
        .bind(good.0)
        .bind(&auth)
        .execute(&w.pool)
        .await
        .unwrap();
    let bad = w.insert(json!({"BAD=KEY": canary})).await;
    let missing = w.insert(json!({"CANARY": canary})).await;
    let image = format!("{}/berth-test/no-such-image:v1", harness::env().registry);
    sqlx::query("UPDATE workspaces SET image = $2 WHERE id = $1")
        .bind(missing.0)
        .bind(&image)
        .execute(&w.pool)
        .await
        .unwrap();
    let first = w
        .wait_row(good, 60, "online", |r| {
            r.is("online", None) && r.converged()
        })
        .await;
    w.wait_row(bad, 30, "invalid", |r| r.is("failed", Some("invalid_spec")))
        .await;
    w.wait_row(missing, 60, "image not found", |r| {
        r.status_reason.as_deref() == Some("image_not_found")
    })
    .await;
    w.exec(
        &format!("UPDATE workspaces SET env = '{{\"CANARY\": \"{canary}\", \"MORE\": \"{canary}\"}}' WHERE id = $1"),
        good,
    )
    .await;
    // Replaced, or the replace undone: either way its steps were logged.
    let edited = w
        .wait_row(good, 60, "replaced or rolled back", |r| {
            r.converged()
                && (r.is("online", None) && r.container_id != first.container_id
                    || r.is("online", Some("rolled_back")))
        })
        .await;
    let metrics = get(port.parse().unwrap(), "/metrics").await;
    assert!(metrics.contains("berth_reconcile_total"), "{metrics}");
    // The create reached online, and the env edit too unless it was
    // rolled back: one convergence each.
    let reached = if edited.is("online", None) { 2.0 } else { 1.0 };
    let converged: f64 = metrics
        .lines()
        .find(|l| l.starts_with("berth_time_to_converge_seconds_count"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no convergence count:\n{metrics}"));
    assert!(converged >= reached, "convergences counted: {converged}");
    super::dashboards::check_live(&metrics);
    seen.push(("/metrics (json run)".into(), metrics));
    let berth_json = w.berth.take().unwrap();
    let log = std::fs::read_to_string(&berth_json.log).unwrap();
    berth_json.kill().await;
    assert!(log.lines().count() > 20, "too little logged:\n{log}");
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
    }
    assert!(
        log.contains(&format!("\"workspace\":\"{good}\"")),
        "no span carries the workspace"
    );
    seen.push(("berth run log (json)".into(), log));

    // Pretty logs: a restart and a stop.
    w.berth = Some(harness::process::Berth::start(&settings("pretty")));
    w.exec(
        "UPDATE workspaces SET restart_epoch = 1 WHERE id = $1",
        good,
    )
    .await;
    w.poll(30, "the restart", Duration::from_millis(200), || async {
        (w.count_events(good, "restart").await >= 1).then_some(())
    })
    .await;
    w.exec(
        "UPDATE workspaces SET desired_state = 'stopped' WHERE id = $1",
        good,
    )
    .await;
    w.wait_row(good, 30, "stopped", |r| {
        r.is("stopped", None) && r.converged()
    })
    .await;
    seen.push((
        "/metrics (pretty run)".into(),
        get(port.parse().unwrap(), "/metrics").await,
    ));
    let berth_pretty = w.berth.take().unwrap();
    let log = std::fs::read_to_string(&berth_pretty.log).unwrap();
    berth_pretty.kill().await;
    assert!(
        log.contains("reconcile") && !log.starts_with('{'),
        "not pretty:\n{log}"
    );
    seen.push(("berth run log (pretty)".into(), log));

    // What the rows and the trail hold, and what the commands print.
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' | ', status, status_reason, last_error, container_id, url,
                runtime_image_digest, runtime_image_id, rollout::text) FROM workspaces",
    )
    .fetch_all(&w.pool)
    .await
    .unwrap();
    seen.push(("status columns".into(), rows.join("\n")));
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' | ', action, reason, detail::text, instance) FROM workspace_events",
    )
    .fetch_all(&w.pool)
    .await
    .unwrap();
    assert!(events.len() > 5, "{events:?}");
    seen.push(("workspace_events".into(), events.join("\n")));
    let env = settings("json");
    for args in [
        vec!["status", "--json"],
        vec!["status"],
        vec!["events", &good.to_string(), "--json"],
        vec!["events", &bad.to_string()],
        vec!["plan", "--json"],
        vec!["config"],
    ] {
        let (code, out, err) = berth(&args, &env).await;
        assert_eq!(code, 0, "{args:?}: {err}");
        seen.push((format!("berth {args:?}"), format!("{out}\n{err}")));
    }

    for (what, text) in &seen {
        for secret in secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{what} shows the secret {secret}:\n{text}"
            );
        }
    }
}
