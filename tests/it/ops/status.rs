//! `berth status` and `berth events` on prepared rows, and the help and
//! usage errors of every operator command.

use sqlx::PgPool;

use super::{berth, json};
use crate::harness::TestDb;

async fn row(
    pool: &PgPool,
    name: &str,
    host: &str,
    runtime: &str,
    status: Option<(&str, Option<&str>)>,
) -> uuid::Uuid {
    let id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO workspaces (name, runtime, host, env) VALUES ($1, $2, $3, '{\"K\": \"v\"}') RETURNING id",
    )
    .bind(name)
    .bind(runtime)
    .bind(host)
    .fetch_one(pool)
    .await
    .unwrap();
    if let Some((status, reason)) = status {
        sqlx::query(
            "UPDATE workspaces SET status = $2, status_reason = $3, status_changed_at = now(),
                    observed_generation = generation, last_error = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(reason)
        .bind(reason.map(|r| format!("because {r}")))
        .execute(pool)
        .await
        .unwrap();
    }
    id
}

fn ids(value: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = value
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn sorted(list: &[uuid::Uuid]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|i| i.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn status_filters_by_host_status_and_runtime() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let a = row(&pool, "alpha", "h1", "langgraph", Some(("online", None))).await;
    let b = row(
        &pool,
        "beta",
        "h1",
        "codex",
        Some(("failed", Some("invalid_spec"))),
    )
    .await;
    let c = row(&pool, "gamma", "h2", "langgraph", None).await;
    // Pinned to c, then to e.
    for (sql, d) in [
        (
            "INSERT INTO runtime_image_pins (template_name, ring, digest) VALUES ('langgraph', 'stable', $1)",
            'c',
        ),
        (
            "UPDATE runtime_image_pins SET digest = $1 WHERE template_name = 'langgraph'",
            'e',
        ),
    ] {
        sqlx::query(sql)
            .bind(format!("sha256:{}", d.to_string().repeat(64)))
            .execute(&pool)
            .await
            .unwrap();
    }
    let env = vec![("DATABASE_URL".to_string(), db.url.clone())];

    let cases: [(&[&str], Vec<uuid::Uuid>); 5] = [
        (&[], vec![a, b, c]),
        (&["--host", "h1"], vec![a, b]),
        (&["--status", "failed"], vec![b]),
        (&["--runtime", "langgraph"], vec![a, c]),
        (&["--host", "h2", "--runtime", "codex"], vec![]),
    ];
    for (filters, want) in cases {
        let mut args = vec!["status", "--json"];
        args.extend_from_slice(filters);
        let (code, out, err) = berth(&args, &env).await;
        assert_eq!(code, 0, "{args:?}: {err}");
        assert_eq!(
            ids(&json(&out, &err)["workspaces"]),
            sorted(&want),
            "{args:?}"
        );
    }

    let (code, out, err) = berth(&["status", "--json", "--host", "h1"], &env).await;
    assert_eq!(code, 0, "{err}");
    let shown = json(&out, &err);
    // With the rows, whether a berth holds their host (none does here).
    assert_eq!(shown["hosts"][0]["host"], "h1", "{shown:#}");
    assert_eq!(shown["hosts"][0]["held"], false, "{shown:#}");
    assert!(shown["halts"].is_array() && shown["delete_guard"].is_array());
    let rows = &shown["workspaces"];
    let beta = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "beta")
        .unwrap();
    assert_eq!(beta["status_reason"], "invalid_spec");
    assert_eq!(beta["last_error"], "because invalid_spec");
    assert_eq!(beta["pending"], true, "failed is short of running");
    let converged = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "alpha");
    assert_eq!(converged.unwrap()["pending"], false, "{rows:#}");
    assert!(
        !out.contains("\"K\"") && !out.contains("\"env\""),
        "status shows env:\n{out}"
    );

    // Alpha runs an older digest than its pin wants, changed status two
    // hours ago and restarted three times.
    sqlx::query(
        "UPDATE workspaces SET runtime_image_digest = $2, restart_count = 3,
                status_changed_at = now() - interval '2 hours 5 minutes' WHERE id = $1",
    )
    .bind(a)
    .bind(format!("sha256:{}", "d".repeat(64)))
    .execute(&pool)
    .await
    .unwrap();
    let (_, out, err) = berth(&["status", "--json", "--runtime", "langgraph"], &env).await;
    let rows = json(&out, &err)["workspaces"].clone();
    let alpha = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "alpha")
        .unwrap();
    assert_eq!(
        alpha["runtime_image_digest"],
        format!("sha256:{}", "d".repeat(64))
    );
    assert_eq!(alpha["wanted_digest"], format!("sha256:{}", "e".repeat(64)));
    assert_eq!(alpha["restart_count"], 3);
    assert_eq!(alpha["desired_state"], "running");
    // What the table's `*` says, for a script: alpha's digest is behind
    // its pin.
    assert_eq!(alpha["pending"], true, "{rows:#}");

    let (code, out, err) = berth(&["status"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("WORKSPACE"), "{out}");
    let line = out.lines().find(|l| l.contains(" alpha ")).unwrap();
    let cells: Vec<&str> = line.split_whitespace().collect();
    for cell in [
        "running",
        "online",
        "sha256:dddddddddddd",
        "sha256:eeeeeeeeeeee",
        "2h",
        "3",
    ] {
        assert!(
            cells.contains(&cell),
            "{cell} missing from alpha's line:\n{line}"
        );
    }
    for shown in [
        "alpha",
        "failed/invalid_spec",
        "sha256:eeeeeeeeeeee",
        "(tag)",
        "3 workspace(s)",
    ] {
        assert!(out.contains(shown), "{shown} missing:\n{out}");
    }
    // Under the table, whether a berth holds each host: h1's lease is
    // fresh, h2's was released by a clean stop.
    sqlx::query(
        "INSERT INTO host_leases (host, holder, epoch, renewed_at)
         VALUES ('h1', 'vm1:1', 1, now()), ('h2', 'vm2:2', 1, '-infinity')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (_, out, _) = berth(&["status"], &env).await;
    assert!(out.contains("host h1: held by berth vm1:1"), "{out}");
    assert!(
        out.contains("host h2: NO berth holds it (vm2:2 stopped and released it)"),
        "a released lease reads as such:\n{out}"
    );
    // A halt berth wrote back shows too, though its rows look fine again.
    let halted = berth::desired::halt_pin(
        &pool,
        "langgraph",
        "stable",
        &format!("sha256:{}", "e".repeat(64)),
        Some(&format!("sha256:{}", "c".repeat(64))),
        "halted by berth on host h1: 1 of 1 replaces onto sha256:eeeeeeeeeeee failed readiness",
    )
    .await
    .unwrap();
    assert_eq!(halted, berth::desired::PinHalted::PutBack);
    let (_, out, _) = berth(&["status"], &env).await;
    let halt = out
        .lines()
        .find(|l| l.starts_with("pin langgraph/stable: rollout onto sha256:eeeeeeeeeeee halted "))
        .unwrap_or_else(|| panic!("no halt line:\n{out}"));
    assert!(
        halt.contains("ago, back to sha256:cccccccccccc (halted by berth on host h1: 1 of 1"),
        "{halt}"
    );
    // A later pin of the ring that rolls out fully makes the halt history.
    let moved_on = format!("sha256:{}", "f".repeat(64));
    sqlx::query("UPDATE runtime_image_pins SET digest = $1 WHERE template_name = 'langgraph' AND ring = 'stable'")
        .bind(&moved_on)
        .execute(&pool)
        .await
        .unwrap();
    let (_, out, _) = berth(&["status"], &env).await;
    assert!(
        out.contains("rollout onto sha256:eeeeeeeeeeee halted "),
        "a rollout under way: the halt still shows\n{out}"
    );
    berth::desired::mark_stable(&pool, "langgraph", "stable", &moved_on)
        .await
        .unwrap();
    let (_, out, _) = berth(&["status"], &env).await;
    assert!(!out.contains("halted"), "the ring moved on:\n{out}");

    let (code, _, err) = berth(&["status", "--status", "sleeping"], &env).await;
    assert_eq!(code, 64);
    assert!(
        err.contains("sleeping") && err.contains("provisioning"),
        "{err}"
    );
}

async fn event(pool: &PgPool, id: uuid::Uuid, action: &str, secs_ago: i64) {
    sqlx::query(
        "INSERT INTO workspace_events (workspace_id, at, action, reason, host, instance, epoch)
         VALUES ($1, now() - $3 * interval '1 second', $2, 'why ' || $2, 'h1', 'test', 1)",
    )
    .bind(id)
    .bind(action)
    .bind(secs_ago as f64)
    .execute(pool)
    .await
    .unwrap();
}

/// A delete guard note on `host`'s trail: a hold (`reason` starting
/// `delete guard:`, detail with its limit) or a release.
async fn guard_note(pool: &PgPool, host: &str, id: uuid::Uuid, released: bool, secs_ago: i64) {
    let (reason, detail) = if released {
        (
            "delete guard released: none of the removals it withheld is wanted any more",
            serde_json::json!({"delete_guard": "released"}),
        )
    } else {
        (
            "delete guard: 3 orphan removals over the limit of 1; none made.",
            serde_json::json!({"delete_guard": {"limit": 1}}),
        )
    };
    sqlx::query(
        "INSERT INTO workspace_events (workspace_id, at, action, reason, detail, host, instance, epoch)
         VALUES ($1, now() - $2 * interval '1 second', 'note', $3, $4, $5, 'test', 1)",
    )
    .bind(id)
    .bind(secs_ago as f64)
    .bind(reason)
    .bind(detail)
    .bind(host)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn status_names_a_delete_guard_that_holds_and_not_one_released_since() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let env = vec![("DATABASE_URL".to_string(), db.url.clone())];
    let gone: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::new_v4()).collect();
    // h1 held three and let go since; h2 let go, then held one again; h3
    // holds two.
    for id in &gone {
        guard_note(&pool, "h1", *id, false, 600).await;
        guard_note(&pool, "h1", *id, true, 300).await;
        guard_note(&pool, "h2", *id, false, 1200).await;
        guard_note(&pool, "h2", *id, true, 900).await;
    }
    guard_note(&pool, "h2", gone[0], false, 120).await;
    guard_note(&pool, "h3", gone[1], false, 60).await;
    guard_note(&pool, "h3", gone[2], false, 60).await;

    let (code, out, err) = berth(&["status"], &env).await;
    assert_eq!(code, 0, "{err}");
    let guard: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("the delete guard withheld"))
        .collect();
    assert_eq!(guard.len(), 2, "{out}");
    assert!(
        guard[0].starts_with("host h3: the delete guard withheld the removal of 2 workspace(s)"),
        "{out}"
    );
    assert!(
        guard[1].starts_with("host h2: the delete guard withheld the removal of 1 workspace(s)"),
        "{out}"
    );
    // Filtered by host: the host's own guard, no other's.
    let (code, out, err) = berth(&["status", "--host", "h3"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("host h3: the delete guard withheld"), "{out}");
    assert!(!out.contains("host h2: the delete guard"), "{out}");
    let (code, out, err) = berth(&["status", "--host", "h1"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("delete guard"), "{out}");
}

#[tokio::test]
async fn events_find_a_workspace_by_id_container_or_name_and_list_an_ambiguous_name() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let one = row(&pool, "solo", "h1", "langgraph", None).await;
    let twin_a = row(&pool, "twin", "h1", "langgraph", None).await;
    let twin_b = row(&pool, "twin", "h2", "codex", None).await;
    event(&pool, one, "create", 30).await;
    event(&pool, one, "start", 20).await;
    event(&pool, one, "stop", 10).await;
    let env = vec![("DATABASE_URL".to_string(), db.url.clone())];

    let container = berth::model::WorkspaceId(one).container_name();
    for key in ["solo", one.to_string().as_str(), container.as_str()] {
        let (code, out, err) = berth(&["events", key, "--json"], &env).await;
        assert_eq!(code, 0, "{key}: {err}");
        let view = json(&out, &err);
        assert_eq!(view["workspace"], one.to_string());
        let actions: Vec<&str> = view["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["create", "start", "stop"], "{key}");
    }
    let (code, out, _) = berth(&["events", "solo", "--limit", "2"], &env).await;
    assert_eq!(code, 0);
    assert!(!out.contains("create") && out.contains("why stop"), "{out}");
    for bad in ["0", "-1"] {
        let (code, out, err) = berth(&["events", "solo", &format!("--limit={bad}")], &env).await;
        assert_eq!(code, 64, "--limit {bad}:\n{out}");
        assert!(err.contains("--limit") && err.contains(bad), "{err}");
    }

    // A row without events, and an id that names nothing: nothing is
    // claimed to have been pruned.
    row(&pool, "quiet", "h1", "langgraph", None).await;
    let (code, out, err) = berth(&["events", "quiet"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no events recorded for \"quiet\""), "{out}");
    assert!(!out.contains("the trail is pruned"), "{out}");
    let stranger = uuid::Uuid::new_v4();
    let (code, out, err) = berth(&["events", &stranger.to_string()], &env).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains(&format!(
            "no workspace row has the id {stranger} and no events name it"
        )),
        "{err}"
    );

    let (code, out, err) = berth(&["events", "twin"], &env).await;
    assert_eq!(code, 64, "{out}");
    for id in [twin_a, twin_b] {
        assert!(
            err.contains(&id.to_string()),
            "candidate {id} missing:\n{err}"
        );
    }

    // The trail outlives its row.
    sqlx::query("DELETE FROM workspaces WHERE id = $1")
        .bind(one)
        .execute(&pool)
        .await
        .unwrap();
    let (code, out, err) = berth(&["events", &one.to_string()], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("(row gone)") && out.contains("why stop"),
        "{out}"
    );

    let (code, _, err) = berth(&["events", "nobody"], &env).await;
    assert_eq!(code, 1);
    assert!(err.contains("nobody"), "{err}");
}

#[tokio::test]
async fn events_find_a_deleted_workspace_by_its_container_name() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let env = vec![("DATABASE_URL".to_string(), db.url.clone())];
    let gone: uuid::Uuid = "5a1e0000-0000-4000-8000-000000000001".parse().unwrap();
    // Two deleted workspaces whose container names were the same.
    let twin_a: uuid::Uuid = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
    let twin_b: uuid::Uuid = "0f8fad5b-d9cc-469f-a165-70867728950e".parse().unwrap();
    event(&pool, gone, "create", 30).await;
    event(&pool, gone, "remove", 10).await;
    event(&pool, twin_a, "create", 20).await;
    event(&pool, twin_b, "create", 15).await;
    // A row whose id starts otherwise is no candidate.
    row(&pool, "other", "h1", "langgraph", None).await;

    let container = berth::model::WorkspaceId(gone).container_name();
    let (code, out, err) = berth(&["events", &container, "--json"], &env).await;
    assert_eq!(code, 0, "{err}");
    let view = json(&out, &err);
    assert_eq!(view["workspace"], gone.to_string());
    assert_eq!(view["name"], serde_json::Value::Null);
    assert_eq!(view["events"].as_array().unwrap().len(), 2, "{view:#}");
    let (code, out, err) = berth(
        &["events", &container.to_uppercase().replace("WS-", "ws-")],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("(row gone)") && out.contains("why remove"),
        "{out}"
    );
    // The 12 characters `berth status` shows find it as well.
    let id12 = container.trim_start_matches("ws-");
    let (code, out, err) = berth(&["events", id12, "--json"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out, &err)["workspace"], gone.to_string());

    let (code, out, err) = berth(&["events", "ws-0f8fad5b-d9c"], &env).await;
    assert_eq!(code, 64, "{out}");
    for id in [twin_a, twin_b] {
        assert!(
            err.contains(&id.to_string()),
            "candidate {id} missing:\n{err}"
        );
    }

    let (code, _, err) = berth(&["events", "ws-ffffffff-fff"], &env).await;
    assert_eq!(code, 1);
    assert!(err.contains("ws-ffffffff-fff"), "{err}");
}

#[tokio::test]
async fn every_operator_command_documents_its_flags_and_a_bad_flag_is_exit_64() {
    let env = [(
        "DATABASE_URL".to_string(),
        "postgres://u@127.0.0.1:1/x".to_string(),
    )];
    let cases: [(&str, &[&str]); 8] = [
        ("run", &[]),
        ("migrate", &[]),
        ("refresh", &["--json"]),
        ("plan", &["--json", "--detailed-exitcode"]),
        ("status", &["--host", "--status", "--runtime", "--json"]),
        ("events", &["--limit", "--json"]),
        ("pin", &["--ring", "--note", "--by", "--yes", "--json"]),
        (
            "rollback",
            &["--to", "--ring", "--note", "--by", "--yes", "--json"],
        ),
    ];
    for (command, flags) in cases {
        let (code, out, err) = berth(&[command, "--help"], &env).await;
        assert_eq!(code, 0, "{command}: {err}");
        for flag in flags.iter().chain(&["--database-url", "--host-id"]) {
            assert!(out.contains(flag), "{command} --help lacks {flag}:\n{out}");
        }
        for text in ["DATABASE_URL", "BERTH_HOST_ID", "Exit codes", "64"] {
            assert!(out.contains(text), "{command} --help lacks {text}");
        }
        let (code, _, err) = berth(&[command, "--no-such-flag"], &env).await;
        assert_eq!(code, 64, "{command}");
        assert!(err.contains("--no-such-flag"), "{command}: {err}");
    }
    // Every command's help names every setting: its flag and its variable.
    for command in [
        "run", "migrate", "config", "plan", "status", "events", "pin", "rollback", "refresh",
    ] {
        let (code, out, _) = berth(&[command, "--help"], &env).await;
        assert_eq!(code, 0, "{command}");
        for setting in berth::config::SETTINGS {
            let flag = format!("--{}", berth::config::flag_name(setting.env));
            assert!(
                out.contains(setting.env) && out.contains(&flag),
                "{command} --help lacks {} / {flag}",
                setting.env
            );
        }
    }
    // An unreachable database is exit 69, with the reason.
    let (code, _, err) = berth(&["status"], &env).await;
    assert_eq!(code, 69, "{err}");
    assert!(err.to_lowercase().contains("refused"), "{err}");
}
