//! The database contract: migrations, the compatibility floor, triggers,
//! notifications and constraints, on a real PostgreSQL.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::{PgPool, Row};

use crate::harness::{TestDb, berth};

/// Every column, constraint, trigger and seeded runtime: equal fingerprints
/// mean an unchanged schema.
async fn fingerprint(pool: &PgPool) -> String {
    sqlx::query_scalar(
        "SELECT coalesce(string_agg(x, E'\\n' ORDER BY x), '') FROM (
           SELECT table_name || '.' || column_name || ':' || data_type || ':' ||
                  coalesce(column_default, '') || ':' || is_nullable AS x
             FROM information_schema.columns WHERE table_schema = 'public'
           UNION ALL
           SELECT conrelid::regclass::text || ':' || conname || ':' || pg_get_constraintdef(oid)
             FROM pg_constraint WHERE connamespace = 'public'::regnamespace
           UNION ALL
           SELECT tgrelid::regclass::text || ':' || tgname FROM pg_trigger WHERE NOT tgisinternal
           UNION ALL
           SELECT 'migration:' || version FROM _sqlx_migrations WHERE to_regclass('_sqlx_migrations') IS NOT NULL
         ) s",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn tables(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn migrate_creates_the_schema_and_a_second_run_changes_nothing() {
    let db = TestDb::empty().await;
    let env = [("DATABASE_URL", db.url.as_str())];

    let (code, out, err) = berth(&["migrate"], &env).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("5 migration(s) applied"), "{out}");
    // Every migration so far is additive: the floor stays at 1.
    assert!(out.contains("database floor 1"), "{out}");

    let pool = db.pool().await;
    assert_eq!(
        tables(&pool).await,
        [
            "_sqlx_migrations",
            "berth_schema",
            "host_images",
            "host_leases",
            "runtime_image_pin_history",
            "runtime_image_pins",
            "runtimes",
            "workspace_events",
            "workspaces"
        ]
    );
    let runtimes: Vec<(String, String, bool)> =
        sqlx::query_as("SELECT name, image_repository, session_volume FROM runtimes ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap();
    let names: Vec<&str> = runtimes.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "autogen",
            "claude-code",
            "codex",
            "crewai",
            "deepagents",
            "gemini-cli",
            "hermes",
            "langgraph",
            "openclaw"
        ]
    );
    for (name, repository, session_volume) in &runtimes {
        assert_eq!(repository, &format!("workspace-template-{name}"));
        assert_eq!(*session_volume, name == "claude-code", "{name}");
    }
    let before = fingerprint(&pool).await;

    let (code, out, err) = berth(&["migrate"], &env).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("schema up to date"), "{out}");
    assert_eq!(fingerprint(&pool).await, before);
}

#[tokio::test]
async fn a_database_whose_floor_is_above_this_berth_is_refused_and_left_untouched() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    sqlx::query("UPDATE berth_schema SET floor = 99")
        .execute(&pool)
        .await
        .unwrap();
    // A migration this berth has never seen, as a newer berth would leave.
    sqlx::query("DROP TABLE host_leases")
        .execute(&pool)
        .await
        .unwrap();
    let before = fingerprint(&pool).await;

    let (code, out, err) = berth(&["migrate"], &[("DATABASE_URL", db.url.as_str())]).await;
    assert_eq!(code, 65, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("schema version 99"), "{err}");
    assert!(
        err.contains(&format!(
            "schema version {}",
            berth::desired::SCHEMA_VERSION
        )),
        "{err}"
    );
    assert_eq!(fingerprint(&pool).await, before, "the database was changed");
}

#[tokio::test]
async fn an_empty_database_with_a_high_floor_gets_no_tables() {
    let db = TestDb::empty().await;
    let pool = db.pool().await;
    sqlx::query(
        "CREATE TABLE berth_schema (singleton boolean PRIMARY KEY, floor integer NOT NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO berth_schema VALUES (true, 7)")
        .execute(&pool)
        .await
        .unwrap();

    let (code, _, err) = berth(&["migrate"], &[("DATABASE_URL", db.url.as_str())]).await;
    assert_eq!(code, 65, "{err}");
    assert_eq!(tables(&pool).await, ["berth_schema"]);
}

#[tokio::test]
async fn an_unreachable_database_exits_69_without_showing_the_password() {
    let url = "postgres://berth:pw-not-shown@127.0.0.1:1/berth";
    let (code, out, err) = berth(&["migrate"], &[("DATABASE_URL", url)]).await;
    assert_eq!(code, 69, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("postgres://berth:***@127.0.0.1:1/berth"),
        "{err}"
    );
    assert!(!err.contains("pw-not-shown") && !out.contains("pw-not-shown"));
}

async fn insert_workspace(pool: &PgPool, runtime: &str) -> uuid::Uuid {
    sqlx::query_scalar("INSERT INTO workspaces (name, runtime) VALUES ('w', $1) RETURNING id")
        .bind(runtime)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_live_rows_host_cannot_change_but_a_removed_one_may_move() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let id = insert_workspace(&pool, "langgraph").await;
    let host: String = sqlx::query_scalar("SELECT host FROM workspaces WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(host, "default");

    let err = sqlx::query("UPDATE workspaces SET host = 'other' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("workspaces.host is fixed once set"),
        "{err}"
    );

    // Removal requested but not finished: still refused.
    sqlx::query("UPDATE workspaces SET desired_state = 'removed' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let refused = sqlx::query("UPDATE workspaces SET host = 'other' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await;
    assert!(refused.is_err());

    sqlx::query("UPDATE workspaces SET status = 'removed' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE workspaces SET host = 'other' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
}

/// old digest, new digest, updated_by, note, stable_at
type HistoryRow = (
    Option<String>,
    Option<String>,
    String,
    String,
    Option<chrono::DateTime<chrono::Utc>>,
);

async fn next_payload(listener: &mut PgListener) -> String {
    let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification within 5s")
        .unwrap();
    n.payload().to_string()
}

#[tokio::test]
async fn desired_edits_bump_generation_and_notify_but_controller_writes_do_neither() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let mut listener = PgListener::connect(&db.url).await.unwrap();
    listener.listen("berth_workspaces").await.unwrap();

    let a = insert_workspace(&pool, "langgraph").await;
    assert_eq!(next_payload(&mut listener).await, a.to_string());
    let generation = |pool: PgPool| async move {
        let row =
            sqlx::query("SELECT generation, desired_changed_at FROM workspaces WHERE id = $1")
                .bind(a)
                .fetch_one(&pool)
                .await
                .unwrap();
        (
            row.get::<i64, _>("generation"),
            row.get::<chrono::DateTime<chrono::Utc>, _>("desired_changed_at"),
        )
    };
    let (g1, t1) = generation(pool.clone()).await;
    assert_eq!(g1, 1);

    sqlx::query("UPDATE workspaces SET env = '{\"A\": \"1\"}' WHERE id = $1")
        .bind(a)
        .execute(&pool)
        .await
        .unwrap();
    let (g2, t2) = generation(pool.clone()).await;
    assert_eq!(g2, 2);
    assert!(t2 > t1);
    assert_eq!(next_payload(&mut listener).await, a.to_string());

    // berth's own columns, and an attempt to set generation by hand.
    sqlx::query(
        "UPDATE workspaces SET status = 'online', status_reason = NULL, container_id = 'c1',
                url = 'http://127.0.0.1:1', observed_generation = 2, restart_count = 3,
                last_error = NULL, status_changed_at = now(), generation = 40,
                last_heartbeat_at = now()
          WHERE id = $1",
    )
    .bind(a)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(generation(pool.clone()).await, (g2, t2));
    // A same-value "edit" of a desired column is no change either.
    sqlx::query("UPDATE workspaces SET env = '{\"A\": \"1\"}' WHERE id = $1")
        .bind(a)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(generation(pool.clone()).await.0, g2);

    // The next notification is the sentinel's: none came for the writes above.
    let sentinel = insert_workspace(&pool, "codex").await;
    assert_eq!(next_payload(&mut listener).await, sentinel.to_string());

    for edit in [
        "UPDATE workspaces SET restart_epoch = restart_epoch + 1 WHERE id = $1",
        "UPDATE workspaces SET paused = true WHERE id = $1",
        "UPDATE workspaces SET desired_state = 'stopped' WHERE id = $1",
        "DELETE FROM workspaces WHERE id = $1",
    ] {
        sqlx::query(edit).bind(a).execute(&pool).await.unwrap();
        assert_eq!(next_payload(&mut listener).await, a.to_string(), "{edit}");
    }
}

#[tokio::test]
async fn invalid_pin_digests_are_refused_naming_the_column() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let hex = "0123456789abcdef".repeat(4);
    let bad = [
        format!("sha256:{}", hex.to_uppercase()),
        format!("sha256:{}", &hex[..63]),
        hex.clone(),
        format!("sha256:{hex}\n"),
        format!("sha512:{hex}"),
        String::new(),
    ];
    for digest in &bad {
        let err = sqlx::query(
            "INSERT INTO runtime_image_pins (template_name, digest) VALUES ('codex', $1)",
        )
        .bind(digest)
        .execute(&pool)
        .await
        .unwrap_err();
        let db_err = err.as_database_error().expect("a database error");
        assert_eq!(
            db_err.constraint(),
            Some("runtime_image_pins_digest_check"),
            "{digest:?}"
        );
        assert!(
            db_err.message().contains("digest"),
            "{digest:?}: {}",
            db_err.message()
        );
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM runtime_image_pin_history")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn a_pin_change_leaves_history_and_notifies_template_and_ring() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let mut listener = PgListener::connect(&db.url).await.unwrap();
    listener.listen("berth_pins").await.unwrap();
    let d1 = format!("sha256:{}", "a".repeat(64));
    let d2 = format!("sha256:{}", "b".repeat(64));

    sqlx::query(
        "INSERT INTO runtime_image_pins (template_name, ring, digest, updated_by, note)
         VALUES ('claude-code', 'canary', $1, 'alice', 'first')",
    )
    .bind(&d1)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(next_payload(&mut listener).await, "claude-code/canary");
    sqlx::query(
        "UPDATE runtime_image_pins SET digest = $1, updated_by = 'bob', note = 'promote'
          WHERE template_name = 'claude-code' AND ring = 'canary'",
    )
    .bind(&d2)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(next_payload(&mut listener).await, "claude-code/canary");

    let history: Vec<HistoryRow> = sqlx::query_as(
        "SELECT old_digest, new_digest, updated_by, note, stable_at
               FROM runtime_image_pin_history ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        history,
        [
            (None, Some(d1.clone()), "alice".into(), "first".into(), None),
            (Some(d1), Some(d2), "bob".into(), "promote".into(), None),
        ]
    );
}

#[tokio::test]
async fn enumerations_are_constrained_by_the_database() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let id = insert_workspace(&pool, "langgraph").await;
    let cases = [
        (
            "UPDATE workspaces SET desired_state = 'deleted' WHERE id = $1",
            "workspaces_desired_state_check",
        ),
        (
            "UPDATE workspaces SET workspace_access = 'rw' WHERE id = $1",
            "workspaces_workspace_access_check",
        ),
        (
            "UPDATE workspaces SET env = '[1]' WHERE id = $1",
            "workspaces_env_check",
        ),
        (
            "UPDATE workspaces SET status = 'online', status_reason = 'crash_loop' WHERE id = $1",
            "workspaces_status_check",
        ),
        (
            "UPDATE workspaces SET status = 'failed', status_reason = NULL WHERE id = $1",
            "workspaces_status_check",
        ),
        (
            "UPDATE workspaces SET status = NULL, status_reason = 'pulling' WHERE id = $1",
            "workspaces_status_check",
        ),
        (
            "UPDATE workspaces SET status = 'sleeping' WHERE id = $1",
            "workspaces_status_check",
        ),
        (
            "UPDATE workspaces SET runtime_image_digest = 'latest' WHERE id = $1",
            "workspaces_runtime_image_digest_check",
        ),
    ];
    for (sql, constraint) in cases {
        let Err(err) = sqlx::query(sql).bind(id).execute(&pool).await else {
            panic!("accepted: {sql}");
        };
        assert_eq!(
            err.as_database_error().and_then(|e| e.constraint()),
            Some(constraint),
            "{sql}"
        );
    }
    for ok in [
        "UPDATE workspaces SET status = 'provisioning', status_reason = 'pulling' WHERE id = $1",
        "UPDATE workspaces SET status = 'online', status_reason = 'rolled_back' WHERE id = $1",
        "UPDATE workspaces SET status = 'degraded', status_reason = 'change_blocked' WHERE id = $1",
        "UPDATE workspaces SET status = 'failed', status_reason = 'provision_timeout' WHERE id = $1",
        "UPDATE workspaces SET status = 'paused', status_reason = NULL WHERE id = $1",
    ] {
        sqlx::query(ok).bind(id).execute(&pool).await.unwrap();
    }
}

#[tokio::test]
async fn berth_run_exits_69_without_a_database_or_an_engine_and_65_on_a_newer_schema() {
    let url = "postgres://berth:pw-not-shown@127.0.0.1:1/berth";
    let (code, out, err) = berth(&["run"], &[("DATABASE_URL", url)]).await;
    assert_eq!(code, 69, "stdout: {out}\nstderr: {err}");
    assert!(!err.contains("pw-not-shown") && !out.contains("pw-not-shown"));

    let db = TestDb::migrated().await;
    let no_engine = [
        ("DATABASE_URL", db.url.as_str()),
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ("BERTH_LISTEN", "127.0.0.1:0"),
    ];
    let (code, out, err) = berth(&["run"], &no_engine).await;
    assert_eq!(code, 69, "stdout: {out}\nstderr: {err}");
    assert!(
        format!("{out}{err}").contains("Docker Engine"),
        "{out}{err}"
    );
    // Something else listening where the engine should be (the test
    // registry answers 404) is no engine either, for a command too.
    let registry = format!("tcp://{}", crate::harness::env().registry);
    let not_an_engine = [
        ("DATABASE_URL", db.url.as_str()),
        ("DOCKER_HOST", registry.as_str()),
    ];
    let (code, out, err) = berth(&["plan"], &not_an_engine).await;
    assert_eq!(code, 69, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("Docker Engine"), "{err}");

    let pool = db.pool().await;
    sqlx::query("UPDATE berth_schema SET floor = 99")
        .execute(&pool)
        .await
        .unwrap();
    let (code, out, err) = berth(
        &["run"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("BERTH_LISTEN", "127.0.0.1:0"),
        ],
    )
    .await;
    assert_eq!(code, 65, "stdout: {out}\nstderr: {err}");
    assert!(
        format!("{out}{err}").contains("schema version 99"),
        "{out}{err}"
    );
}

#[tokio::test]
async fn a_schema_this_berth_cannot_run_on_unmigrated_is_exit_65_naming_the_fix() {
    let listen = ("BERTH_LISTEN", "127.0.0.1:0");
    let empty = TestDb::empty().await;
    let (code, out, err) = berth(
        &["run", "--no-migrate"],
        &[("DATABASE_URL", empty.url.as_str()), listen],
    )
    .await;
    assert_eq!(code, 65, "stdout: {out}\nstderr: {err}");
    assert!(
        format!("{out}{err}").contains("no berth schema yet"),
        "{out}{err}"
    );

    // One of this berth's migrations not applied: refused by the
    // controller and the commands alike, the migration named.
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let last: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(last)
        .execute(&pool)
        .await
        .unwrap();
    let env = [("DATABASE_URL", db.url.as_str()), listen];
    for args in [&["run", "--no-migrate"][..], &["plan"], &["status"]] {
        let (code, out, err) = berth(args, &env).await;
        assert_eq!(code, 65, "{args:?}: stdout: {out}\nstderr: {err}");
        assert!(
            format!("{out}{err}").contains(&format!("lacks migration(s) {last}")),
            "{args:?}: {out}{err}"
        );
    }

    // A migration edited after it was applied: `migrate` refuses with 65
    // (the systemd unit does not restart on it), not 1, with one missing
    // as well and with every one applied.
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version < $1")
        .bind(last)
        .execute(&pool)
        .await
        .unwrap();
    let (code, out, err) = berth(&["migrate"], &env).await;
    assert_eq!(code, 65, "stdout: {out}\nstderr: {err}");
    let whole = TestDb::migrated().await;
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = $1")
        .bind(last)
        .execute(&whole.pool().await)
        .await
        .unwrap();
    let env = [("DATABASE_URL", whole.url.as_str()), listen];
    for args in [
        &["migrate"][..],
        &["run", "--no-migrate"],
        &["plan"],
        &["status"],
    ] {
        let (code, out, err) = berth(args, &env).await;
        assert_eq!(code, 65, "{args:?}: stdout: {out}\nstderr: {err}");
        if args[0] != "migrate" {
            assert!(
                format!("{out}{err}").contains(&format!("migration {last} is not this berth's")),
                "{args:?}: {out}{err}"
            );
        }
    }
}

#[tokio::test]
async fn a_database_that_refuses_the_user_or_lacks_the_database_is_exit_64_not_69() {
    let db = TestDb::migrated().await;
    // The same server: another database name, another user.
    let (base, _) = db.url.rsplit_once('/').unwrap();
    let missing_db = format!("{base}/no_such_database_here");
    let at = base
        .find('@')
        .map_or(base.find("//").unwrap() + 2, |i| i + 1);
    let missing_user = format!("postgres://no_such_role_here@{}/postgres", &base[at..]);
    for url in [missing_db, missing_user] {
        for command in [&["migrate"][..], &["run"][..]] {
            let (code, out, err) = berth(command, &[("DATABASE_URL", url.as_str())]).await;
            assert_eq!(code, 64, "{command:?} {url}\nstdout: {out}\nstderr: {err}");
            assert!(
                format!("{out}{err}").contains("check the user, password and database name"),
                "{out}{err}"
            );
        }
    }
}

#[tokio::test]
async fn a_user_without_the_privileges_berth_needs_is_exit_64_for_every_command() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let role = format!(
        "berth_noprivs_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {role} LOGIN")))
        .execute(&pool)
        .await
        .unwrap();
    let (base, name) = db.url.rsplit_once('/').unwrap();
    let at = base
        .find('@')
        .map_or(base.find("//").unwrap() + 2, |i| i + 1);
    let url = format!("postgres://{role}@{}/{name}", &base[at..]);
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("BERTH_LISTEN", "127.0.0.1:0"),
    ];
    for command in [
        &["migrate"][..],
        &["status"],
        &["run"],
        &[
            "pin",
            "langgraph",
            &format!("sha256:{}", "a".repeat(64)),
            "--yes",
        ],
    ] {
        let (code, out, err) = berth(command, &env).await;
        assert_eq!(code, 64, "{command:?}\nstdout: {out}\nstderr: {err}");
        assert!(
            format!("{out}{err}").contains("permission denied"),
            "{command:?}: {out}{err}"
        );
        // The commands that read say which grant lets them.
        if matches!(command[0], "status" | "pin") {
            assert!(
                err.contains(&format!(
                    "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"
                )),
                "{command:?}: {err}"
            );
        }
    }
    drop(pool);
    let admin = db.pool().await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP OWNED BY {role}; DROP ROLE {role}"
    )))
    .execute(&admin)
    .await;
}
