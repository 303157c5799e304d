//! `berth pin` and `berth rollback`: what they touch, what they write, and
//! that a rollback brings the workspaces back.

use serde_json::json;
use sqlx::PgPool;

use super::{berth, json};
use crate::controller::World;
use crate::harness::TestDb;

type HistoryRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn db_env(db: &TestDb) -> Vec<(String, String)> {
    vec![("DATABASE_URL".to_string(), db.url.clone())]
}

async fn insert(pool: &PgPool, runtime: &str, ring: &str, extra: &str) -> uuid::Uuid {
    let id: uuid::Uuid = sqlx::query_scalar("INSERT INTO workspaces (name, runtime, ring, host) VALUES ('w', $1, $2, 'h1') RETURNING id")
        .bind(runtime)
        .bind(ring)
        .fetch_one(pool)
        .await
        .unwrap();
    if !extra.is_empty() {
        let sql = format!("UPDATE workspaces SET {extra} WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .execute(pool)
            .await
            .unwrap();
    }
    id
}

fn touched(change: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = change["touched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn sorted(ids: &[uuid::Uuid]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn pin_lists_the_workspaces_its_runtime_and_ring_decide() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let stable = insert(&pool, "langgraph", "stable", "").await;
    let canary = insert(&pool, "langgraph", "canary", "").await;
    insert(
        &pool,
        "langgraph",
        "stable",
        "image = 'registry.test/own:1'",
    )
    .await;
    insert(&pool, "langgraph", "stable", "desired_state = 'removed'").await;
    insert(&pool, "codex", "stable", "").await;
    let env = db_env(&db);

    let d = digest('a');
    let (code, out, err) = berth(&["pin", "langgraph", &d, "--yes", "--json"], &env).await;
    assert_eq!(code, 0, "{err}");
    let change = json(&out, &err);
    assert_eq!(change["applied"], true);
    assert_eq!(change["follows"], serde_json::json!({"kind": "moving_tag"}));
    assert_eq!(touched(&change), sorted(&[stable, canary]));
    // Neither row has a container yet: none is replaced now.
    assert!(err.contains("2 workspace(s) not replaced"), "{err}");
    // The seeded runtimes name no registry: local-build hosts build them.
    assert!(
        change["local_build_note"]
            .as_str()
            .is_some_and(|n| n.contains("do not follow this pin")),
        "{change}"
    );
    assert!(
        err.contains("note: hosts without MOLECULE_IMAGE_REGISTRY"),
        "{err}"
    );
    sqlx::query("UPDATE runtimes SET image_repository = 'ghcr.io/org/lg' WHERE name = 'langgraph'")
        .execute(&pool)
        .await
        .unwrap();
    let (code, out, err) = berth(&["pin", "langgraph", &d, "--yes", "--json"], &env).await;
    assert_eq!(code, 0, "{err}");
    let answer = json(&out, &err);
    assert_eq!(answer["runtime"], "langgraph", "{answer}");
    assert_eq!(answer["local_build_note"], serde_json::Value::Null);

    let (code, out, err) = berth(
        &[
            "pin",
            "langgraph",
            &digest('b'),
            "--ring",
            "canary",
            "--yes",
            "--json",
        ],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let change = json(&out, &err);
    assert_eq!(touched(&change), sorted(&[canary]));
    // The canary ring had no pin: it followed stable's, and says so.
    assert!(
        err.contains("(no pin: follows stable's pin sha256:aaaaaaaaaaaa"),
        "{err}"
    );
    assert_eq!(change["from"], serde_json::Value::Null);
    assert_eq!(
        change["follows"],
        serde_json::json!({"kind": "stable_pin", "digest": digest('a')})
    );
    // The history entry the change wrote is named.
    let written: i64 = sqlx::query_scalar(
        "SELECT id FROM runtime_image_pin_history WHERE ring = 'canary' AND new_digest = $1",
    )
    .bind(digest('b'))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(change["recorded_as"], written, "{change}");

    // The canary ring has its own pin now: stable no longer decides it.
    let (code, out, err) =
        berth(&["pin", "langgraph", &digest('c'), "--yes", "--json"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(touched(&json(&out, &err)), sorted(&[stable]));

    // Pinning the digest already pinned changes nothing.
    let (code, out, err) = berth(&["pin", "langgraph", &digest('c')], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("already pinned"), "{out}");
    let history: i64 = sqlx::query_scalar("SELECT count(*) FROM runtime_image_pin_history")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(history, 3);

    // Unless a rollout onto it halted on a host: pinning it again is the
    // operator's word to start that rollout afresh, and is recorded.
    let halted = insert(
        &pool,
        "langgraph",
        "stable",
        "container_id = 'c9', status = 'online'",
    )
    .await;
    sqlx::query("UPDATE workspaces SET rollout = $2 WHERE id = $1")
        .bind(halted)
        .bind(serde_json::json!({
            "runtime": "langgraph", "track": "pin", "ring": "stable",
            "to": digest('c'), "state": "halted", "wave": 0,
        }))
        .execute(&pool)
        .await
        .unwrap();
    let (code, out, err) = berth(&["pin", "langgraph", &digest('c'), "--yes"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("pinning it again starts that rollout afresh"),
        "{out}"
    );
    let history: i64 = sqlx::query_scalar("SELECT count(*) FROM runtime_image_pin_history")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(history, 4, "{out}");
}

#[tokio::test]
async fn pin_counts_as_replaced_only_the_workspaces_whose_container_it_replaces() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let running = insert(
        &pool,
        "langgraph",
        "stable",
        "container_id = 'c1', status = 'online'",
    )
    .await;
    let never_made = insert(&pool, "langgraph", "stable", "").await;
    let invalid = insert(
        &pool,
        "langgraph",
        "stable",
        "container_id = 'c2', status = 'failed', status_reason = 'invalid_spec'",
    )
    .await;
    let tier = insert(
        &pool,
        "langgraph",
        "stable",
        "status = 'failed', status_reason = 'tier_not_allowed'",
    )
    .await;
    let env = db_env(&db);

    let (code, out, err) = berth(&["pin", "langgraph", &digest('a'), "--yes"], &env).await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let (replaced, rest) = out
        .split_once("3 workspace(s) not replaced")
        .unwrap_or_else(|| panic!("no list of the 3 workspaces not replaced:\n{out}"));
    assert!(
        replaced.contains("1 workspace(s) will be replaced"),
        "{out}"
    );
    let name = |id: uuid::Uuid| berth::model::WorkspaceId(id).container_name();
    assert!(replaced.contains(&name(running)), "{out}");
    for id in [never_made, invalid, tier] {
        assert!(
            !replaced.contains(&name(id)),
            "{id} counted as replaced:\n{out}"
        );
        assert!(rest.contains(&name(id)), "{id} missing:\n{out}");
    }
    assert!(rest.contains("failed/invalid_spec"), "{out}");
    // The note reads as one sentence, without a run of spaces inside.
    let note = out
        .lines()
        .find(|l| l.starts_with("note: "))
        .unwrap_or_else(|| panic!("no local-build note:\n{out}"));
    assert!(!note.contains("  "), "{note:?}");
    assert!(
        note.contains("do not follow this pin (its image_repository"),
        "{note:?}"
    );

    let (code, out, err) =
        berth(&["pin", "langgraph", &digest('b'), "--yes", "--json"], &env).await;
    assert_eq!(code, 0, "{err}");
    let change = json(&out, &err);
    let mut flags: Vec<(String, bool)> = change["touched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["id"].as_str().unwrap().to_string(), w["replaced"] == true))
        .collect();
    flags.sort();
    let mut want: Vec<(String, bool)> = [
        (running, true),
        (never_made, false),
        (invalid, false),
        (tier, false),
    ]
    .iter()
    .map(|(id, r)| (id.to_string(), *r))
    .collect();
    want.sort();
    assert_eq!(flags, want);
}

#[tokio::test]
async fn pin_does_not_count_as_replaced_a_paused_or_stopped_row_or_one_already_on_the_digest() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    set_pin(&pool, &digest('a')).await;
    let on_a =
        "status = 'online', runtime_image_digest = 'sha256:".to_string() + &"a".repeat(64) + "'";
    let on_b = on_a.replace(&"a".repeat(64), &"b".repeat(64));
    let running = insert(
        &pool,
        "langgraph",
        "stable",
        &format!("container_id = 'c1', {on_a}"),
    )
    .await;
    let paused = insert(
        &pool,
        "langgraph",
        "stable",
        "container_id = 'c2', paused = true, status = 'paused'",
    )
    .await;
    let stopped = insert(
        &pool,
        "langgraph",
        "stable",
        "container_id = 'c3', desired_state = 'stopped', status = 'stopped'",
    )
    .await;
    // A halted rollout of b left this one on b.
    let already = insert(
        &pool,
        "langgraph",
        "stable",
        &format!("container_id = 'c4', {on_b}"),
    )
    .await;
    let env = db_env(&db);

    let (code, out, err) = berth(
        &[
            "rollback",
            "langgraph",
            "--to",
            &digest('b'),
            "--yes",
            "--json",
        ],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let change = json(&out, &err);
    let mut flags: Vec<(String, bool, serde_json::Value)> = change["touched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let id = w["id"].as_str().unwrap().to_string();
            (id, w["replaced"] == true, w["not_replaced"].clone())
        })
        .collect();
    flags.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want: Vec<(String, bool, serde_json::Value)> = [
        (running, true, json!(null)),
        (paused, false, json!("paused")),
        (stopped, false, json!("stopped")),
        (already, false, json!("already runs it")),
    ]
    .into_iter()
    .map(|(id, r, why)| (id.to_string(), r, why))
    .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(flags, want, "{change:#}");
    let (replaced, rest) = err
        .split_once("3 workspace(s) not replaced now")
        .unwrap_or_else(|| panic!("no list of the 3 workspaces not replaced:\n{err}"));
    assert!(
        replaced.contains("1 workspace(s) will be replaced"),
        "{err}"
    );
    let name = |id: uuid::Uuid| berth::model::WorkspaceId(id).container_name();
    assert!(replaced.contains(&name(running)), "{err}");
    for (id, why) in [
        (paused, "paused"),
        (stopped, "stopped"),
        (already, "already runs it"),
    ] {
        let line = rest
            .lines()
            .find(|l| l.starts_with(&name(id)))
            .unwrap_or_else(|| panic!("{id} missing:\n{err}"));
        assert!(line.ends_with(why), "{line:?}");
    }

    // Back to a, with the row on b gone: the row on a runs it already, and
    // the change replaces nothing and says so.
    sqlx::query("DELETE FROM workspaces WHERE id = $1")
        .bind(already)
        .execute(&pool)
        .await
        .unwrap();
    let (code, out, err) = berth(&["pin", "langgraph", &digest('a'), "--yes"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("this change replaces no workspace now"),
        "{out}"
    );
    assert!(out.contains("3 workspace(s) not replaced now"), "{out}");

    // A container made from the moving tag is replaced by the pinned
    // reference even when the pin names the digest it runs.
    let on_tag = insert(
        &pool,
        "codex",
        "stable",
        &format!("container_id = 'c5', {on_a}"),
    )
    .await;
    let (code, out, err) = berth(&["pin", "codex", &digest('a'), "--yes", "--json"], &env).await;
    assert_eq!(code, 0, "{err}");
    let change = json(&out, &err);
    assert_eq!(change["touched"][0]["id"], on_tag.to_string(), "{change:#}");
    assert_eq!(change["touched"][0]["replaced"], true, "{change:#}");
}

#[tokio::test]
async fn updated_by_is_by_or_else_the_login_or_else_the_database_role() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    // (environment, flags, updated_by)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
    let cases: [Case; 4] = [
        (&[("SUDO_USER", "dave"), ("USER", "root")], &[], "dave"),
        (&[("USER", "carol")], &[], "carol"),
        (&[("USER", "carol")], &["--by", "alice"], "alice"),
        (&[], &[], &role),
    ];
    for (n, (vars, flags, want)) in cases.into_iter().enumerate() {
        let mut env = db_env(&db);
        env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let d = digest(char::from(b'a' + n as u8));
        let mut args = vec!["pin", "langgraph", d.as_str(), "--yes"];
        args.extend_from_slice(flags);
        let (code, out, err) = berth(&args, &env).await;
        assert_eq!(code, 0, "{vars:?} {flags:?}:\n{out}\n{err}");
        let by: Option<String> = sqlx::query_scalar(
            "SELECT updated_by FROM runtime_image_pin_history WHERE new_digest = $1",
        )
        .bind(&d)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(by.as_deref(), Some(want), "{vars:?} {flags:?}");
    }
}

#[tokio::test]
async fn changes_are_refused_without_a_terminal_or_yes_and_bad_input_is_exit_64() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let env = db_env(&db);
    let (code, out, err) = berth(&["pin", "langgraph", &digest('a')], &env).await;
    assert_eq!(code, 64, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("--yes"), "{err}");
    let pins: i64 = sqlx::query_scalar("SELECT count(*) FROM runtime_image_pins")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(pins, 0, "a refused pin was written");

    let (code, _, err) = berth(&["pin", "no-such-runtime", &digest('a'), "--yes"], &env).await;
    assert_eq!(code, 64);
    assert!(
        err.contains("no runtime \"no-such-runtime\"") && err.contains("langgraph"),
        "{err}"
    );
    let (code, _, err) = berth(&["pin", "langgraph", "sha256:ABC", "--yes"], &env).await;
    assert_eq!(code, 64);
    assert!(err.contains("sha256:ABC"), "{err}");
    let (code, _, err) = berth(&["rollback", "langgraph", "--to", "latest", "--yes"], &env).await;
    assert_eq!(code, 64, "{err}");
    let (code, _, err) = berth(&["rollback", "langgraph", "--yes"], &env).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no pin"), "{err}");
    let (code, _, err) = berth(&["pin", "langgraph", &digest('a'), "--ringg", "x"], &env).await;
    assert_eq!(code, 64);
    assert!(err.contains("--ringg"), "{err}");
}

async fn set_pin(pool: &PgPool, d: &str) {
    sqlx::query(
        "INSERT INTO runtime_image_pins (template_name, ring, digest) VALUES ('langgraph', 'stable', $1)
         ON CONFLICT (template_name, ring) DO UPDATE SET digest = EXCLUDED.digest",
    )
    .bind(d)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn rollback_goes_to_the_previous_digest_preferring_one_marked_stable() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let env = db_env(&db);
    for c in ['a', 'b', 'c'] {
        set_pin(&pool, &digest(c)).await;
    }
    let rollback = |args: &'static [&'static str]| {
        let env = env.clone();
        async move {
            let mut all = vec!["rollback", "langgraph", "--json"];
            all.extend_from_slice(args);
            let (code, out, err) = berth(&all, &env).await;
            (code, out, err)
        }
    };
    // No entry marked stable: the newest earlier digest.
    let (code, out, err) = rollback(&["--yes"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out, &err)["to"], digest('b'));

    // Back on c; now a is marked stable and wins over the newer b.
    set_pin(&pool, &digest('c')).await;
    sqlx::query("UPDATE runtime_image_pin_history SET stable_at = now() WHERE new_digest = $1")
        .bind(digest('a'))
        .execute(&pool)
        .await
        .unwrap();
    let (code, out, err) = rollback(&["--yes"]).await;
    assert_eq!(code, 0, "{err}");
    let change = json(&out, &err);
    assert_eq!(change["to"], digest('a'));
    assert_eq!(change["from"], digest('c'));
    assert!(change["stable_at"].is_string(), "{change:#}");

    // --to names the target outright.
    let (code, out, err) = rollback(&[
        "--to",
        "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
        "--yes",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out, &err)["to"], digest('d'));
    let current: String = sqlx::query_scalar("SELECT digest FROM runtime_image_pins")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(current, digest('d'));
}

#[tokio::test]
async fn pin_then_rollback_replaces_the_workspace_and_back_with_both_in_history() {
    let mut w = World::new().await;
    w.start(&[]);
    let id = w.insert(json!({})).await;
    w.wait_row(id, 60, "online on v1", |r| {
        r.is("online", None) && r.runtime_image_digest.as_deref() == Some(w.v1.as_str())
    })
    .await;
    let env = w.env();

    let (code, out, err) = berth(
        &[
            "pin", "agent", &w.v2, "--note", "try v2", "--by", "alice", "--yes",
        ],
        &env,
    )
    .await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(&id.container_name()),
        "the touched workspace is not shown:\n{out}"
    );
    let v2 = w.v2.clone();
    w.wait_row(id, 60, "online on v2", |r| {
        r.is("online", None) && r.runtime_image_digest.as_deref() == Some(v2.as_str())
    })
    .await;
    assert_eq!(w.sh(id, "cat /www/variant").await.trim(), "v2");

    let (code, out, err) = berth(&["rollback", "agent", "--yes"], &env).await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains(&format!("{} → {}", w.v2, w.v1)), "{out}");
    let v1 = w.v1.clone();
    w.wait_row(id, 60, "online on v1 again", |r| {
        r.is("online", None) && r.runtime_image_digest.as_deref() == Some(v1.as_str())
    })
    .await;
    assert_eq!(w.sh(id, "cat /www/variant").await.trim(), "v1");

    let history: Vec<HistoryRow> = sqlx::query_as(
        "SELECT old_digest, new_digest, updated_by, note FROM runtime_image_pin_history
              WHERE template_name = 'agent' ORDER BY id",
    )
    .fetch_all(&w.pool)
    .await
    .unwrap();
    assert_eq!(history.len(), 3, "{history:#?}");
    assert_eq!(history[1].0.as_deref(), Some(w.v1.as_str()));
    assert_eq!(history[1].1.as_deref(), Some(w.v2.as_str()));
    assert_eq!(history[1].2.as_deref(), Some("alice"));
    assert_eq!(history[1].3.as_deref(), Some("try v2"));
    assert_eq!(history[2].0.as_deref(), Some(w.v2.as_str()));
    assert_eq!(history[2].1.as_deref(), Some(w.v1.as_str()));
    assert!(
        history[2]
            .3
            .as_deref()
            .is_some_and(|n| n.starts_with("rollback from")),
        "{history:#?}"
    );
}
