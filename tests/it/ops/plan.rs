//! `berth plan` on a prepared host: exactly the pending actions with their
//! reasons, and nothing on the daemon or in the database changes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use berth::model::WorkspaceId;
use bollard::query_parameters::{EventsOptionsBuilder, ListVolumesOptionsBuilder};
use futures::StreamExt;
use serde_json::{Value, json};

use super::{berth, env_with};
use crate::controller::World;

/// (id, state, started at) of every container berth made for the host,
/// and the names of its volumes.
async fn daemon_state(w: &World) -> (BTreeMap<String, (String, String)>, Vec<String>) {
    let filters = HashMap::from([("label".to_string(), vec![format!("berth.host={}", w.host)])]);
    let containers = w.host_containers().await;
    let opts = ListVolumesOptionsBuilder::new().filters(&filters).build();
    let mut volumes: Vec<String> = w
        .scope
        .docker
        .list_volumes(Some(opts))
        .await
        .unwrap()
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    volumes.sort();
    (containers, volumes)
}

/// The engine's events between `since` and `until` (unix seconds) for
/// this host's containers and for volumes named after `ids`, but for the
/// health checks' execs.
async fn events_between(w: &World, since: i64, until: i64, ids: &[WorkspaceId]) -> Vec<String> {
    let mut seen = Vec::new();
    let containers = HashMap::from([("label".to_string(), vec![format!("berth.host={}", w.host)])]);
    let volumes = HashMap::from([("type".to_string(), vec!["volume".to_string()])]);
    for filters in [containers, volumes] {
        let opts = EventsOptionsBuilder::new()
            .since(&since.to_string())
            .until(&until.to_string())
            .filters(&filters)
            .build();
        let mut stream = w.scope.docker.events(Some(opts));
        while let Some(Ok(e)) = stream.next().await {
            let action = e.action.clone().unwrap_or_default();
            // The images' health checks run execs on their own.
            if action.starts_with("exec_") || action.starts_with("health_status") {
                continue;
            }
            let actor = e.actor.and_then(|a| a.id).unwrap_or_default();
            let ours = ids.iter().any(|id| actor.starts_with(&id.container_name()));
            if e.typ == Some(bollard::models::EventMessageTypeEnum::CONTAINER) || ours {
                seen.push(format!("{:?} {:?} {actor}", e.typ, e.action));
            }
        }
    }
    seen
}

fn actions(plan: &Value, id: WorkspaceId) -> &Vec<Value> {
    let ws = plan["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == id.to_string())
        .unwrap_or_else(|| panic!("{id} missing from the plan:\n{plan:#}"));
    ws["actions"].as_array().unwrap()
}

#[tokio::test]
async fn plan_lists_exactly_the_pending_actions_with_reasons_and_changes_nothing() {
    let mut w = World::new().await;
    sqlx::query(
        "INSERT INTO runtime_image_pins (template_name, ring, digest) VALUES ('agent', 'canary', $1)",
    )
    .bind(&w.v1)
    .execute(&w.pool)
    .await
    .unwrap();
    let changed = w.insert(json!({})).await;
    w.exec(
        "UPDATE workspaces SET ring = 'canary' WHERE id = $1",
        changed,
    )
    .await;
    let orphan = w.insert(json!({})).await;
    let removed = w.insert(json!({})).await;
    w.start(&[]);
    for id in [changed, orphan, removed] {
        w.wait_row(id, 60, "online", |r| r.is("online", None) && r.converged())
            .await;
    }
    w.berth.take().unwrap().kill().await;

    // The host as the operator finds it: a pin moved, a row deleted, a row
    // without a container, a row that cannot make a spec.
    sqlx::query("UPDATE runtime_image_pins SET digest = $1 WHERE ring = 'canary'")
        .bind(&w.v2)
        .execute(&w.pool)
        .await
        .unwrap();
    w.exec("DELETE FROM workspaces WHERE id = $1", orphan).await;
    w.exec(
        "UPDATE workspaces SET desired_state = 'removed' WHERE id = $1",
        removed,
    )
    .await;
    let removed_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT desired_changed_at FROM workspaces WHERE id = $1")
            .bind(removed.0)
            .fetch_one(&w.pool)
            .await
            .unwrap();
    let missing = w.insert(json!({})).await;
    let invalid = w.insert(json!({"BAD=KEY": "x"})).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let before = daemon_state(&w).await;
    let rows_before: Vec<(String, Option<String>, i64)> = rows(&w).await;
    let lease_before = lease(&w).await;
    let events_before = event_count(&w).await;
    let since = chrono::Utc::now().timestamp() - 1;

    let env = env_with(&w, &[("BERTH_ORPHAN_GRACE", "1s")]);
    let (code, out, err) = berth(&["plan", "--json", "--detailed-exitcode"], &env).await;
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    let plan = super::json(&out, &err);
    let (code, text, err) = berth(&["plan"], &env).await;
    assert_eq!(code, 0, "{err}");

    let pending: Vec<&str> = plan["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| !w["actions"].as_array().unwrap().is_empty() || !w["status"].is_null())
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    let mut expected: Vec<String> = [changed, orphan, missing, invalid, removed]
        .iter()
        .map(|id| id.to_string())
        .collect();
    expected.sort();
    let mut pending: Vec<String> = pending.into_iter().map(String::from).collect();
    pending.sort();
    assert_eq!(pending, expected, "{plan:#}");

    let recreate = format!("recreate: digest {}… → {}…", &w.v1[..19], &w.v2[..19]);
    let replace = actions(&plan, changed);
    let ops: Vec<&str> = replace.iter().map(|a| a["op"].as_str().unwrap()).collect();
    assert_eq!(
        ops,
        [
            "ensure_image",
            "preflight",
            "stop",
            "rename",
            "ensure_volume",
            "ensure_volume",
            "create",
            "write_files",
            "start",
            "wait_ready",
            "remove_container",
        ],
        "the replace"
    );
    assert!(
        replace.iter().all(|a| a["reason"] == recreate.as_str()),
        "{replace:#?}"
    );
    assert!(text.contains(&recreate), "{text}");

    let gone = actions(&plan, orphan);
    assert_eq!(gone.len(), 1, "{gone:#?}");
    assert_eq!(gone[0]["op"], "remove_container");
    let reason = gone[0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("remove orphan: no row for "), "{reason}");

    let create = actions(&plan, missing);
    let ops: Vec<&str> = create.iter().map(|a| a["op"].as_str().unwrap()).collect();
    assert_eq!(
        ops,
        [
            "ensure_image",
            "ensure_volume",
            "ensure_volume",
            "create",
            "write_files",
            "start",
            "wait_ready",
        ],
        "the create"
    );
    assert!(create.iter().all(|a| a["reason"] == "create: no container"));

    // A removed row's volumes go once the hold has run from its change
    // (a running berth counts from its first sight: then or later).
    let ws = plan["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == removed.to_string())
        .unwrap();
    let go_at = (removed_at + chrono::TimeDelta::seconds(10)).format("%H:%M:%S UTC");
    let detail = ws["status"]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("the volumes go at {go_at}")),
        "{ws:#}"
    );

    assert!(actions(&plan, invalid).is_empty());
    let ws = plan["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == invalid.to_string())
        .unwrap();
    assert_eq!(ws["status"]["to"], "failed/invalid_spec");
    assert!(ws["status"]["detail"].as_str().unwrap().contains("BAD=KEY"));

    // Nothing changed: containers (ids, states, start times), volumes,
    // engine events, rows, lease, audit trail.
    assert_eq!(daemon_state(&w).await, before);
    let until = chrono::Utc::now().timestamp() + 1;
    let ids = [changed, orphan, missing, invalid, removed];
    let events = events_between(&w, since, until, &ids).await;
    assert!(events.is_empty(), "plan made engine events: {events:?}");
    assert_eq!(rows(&w).await, rows_before);
    assert_eq!(lease(&w).await, lease_before);
    assert_eq!(event_count(&w).await, events_before);
}

async fn rows(w: &World) -> Vec<(String, Option<String>, i64)> {
    sqlx::query_as(
        "SELECT id::text, status, coalesce(observed_generation, 0) FROM workspaces ORDER BY id",
    )
    .fetch_all(&w.pool)
    .await
    .unwrap()
}

async fn lease(w: &World) -> Option<(String, i64, chrono::DateTime<chrono::Utc>)> {
    sqlx::query_as("SELECT holder, epoch, renewed_at FROM host_leases WHERE host = $1")
        .bind(&w.host)
        .fetch_optional(&w.pool)
        .await
        .unwrap()
}

async fn event_count(w: &World) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM workspace_events")
        .fetch_one(&w.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn plan_exits_69_without_an_engine_and_65_without_a_schema() {
    let db = crate::harness::TestDb::migrated().await;
    let env = vec![
        ("DATABASE_URL".to_string(), db.url.clone()),
        (
            "DOCKER_HOST".to_string(),
            "unix:///nonexistent/docker.sock".to_string(),
        ),
    ];
    let (code, out, err) = berth(&["plan"], &env).await;
    assert_eq!(code, 69, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("Docker Engine"), "{err}");
    assert!(
        err.contains("unix:///nonexistent/docker.sock"),
        "the error names the endpoint: {err}"
    );

    let empty = crate::harness::TestDb::empty().await;
    let env = vec![("DATABASE_URL".to_string(), empty.url.clone())];
    let (code, _, err) = berth(&["plan"], &env).await;
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("berth migrate"), "{err}");
}

#[tokio::test]
async fn plan_for_a_host_without_rows_names_the_hosts_that_have_some() {
    let w = World::new().await;
    w.insert(json!({})).await;
    w.insert(json!({})).await;
    let typo = format!("{}-typo", w.host);
    let env = env_with(&w, &[("BERTH_HOST_ID", &typo)]);
    let (code, out, err) = berth(&["plan"], &env).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!("no workspace rows for host {typo:?}")),
        "{out}"
    );
    assert!(out.contains(&format!("{:?} (2)", w.host)), "{out}");
    assert!(
        out.contains(&format!(
            "no container on this engine is berth's for host {typo:?} either"
        )),
        "{out}"
    );
    assert!(!out.contains("every workspace is in line"), "{out}");
    let (_, json, _) = berth(&["plan", "--json"], &env).await;
    let view: Value = serde_json::from_str(&json).unwrap();
    assert!(
        view["no_rows"]
            .as_str()
            .is_some_and(|s| s.contains(&w.host)),
        "{view}"
    );
    assert_eq!(view["host_containers"], 0, "{view}");
    // berth run says it too, in its log.
    let run = crate::harness::process::Berth::start(&env);
    crate::controller::wait_logged(&run, "no workspace rows for host", 30).await;
    run.kill().await;
}
