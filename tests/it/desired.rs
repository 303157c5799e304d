//! The desired side on a real PostgreSQL: rows and catalogue, fenced
//! status and event writes, the lease and LISTEN session.

use std::time::{Duration, Instant};

use berth::config::SecretUrl;
use berth::desired::{self, DesiredTrigger, Event, Lease, Session, StatusWrite, Written};
use berth::model::{DesiredState, Reason, Status, WorkspaceAccess, WorkspaceId};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::harness::TestDb;

async fn insert(pool: &PgPool, host: &str, runtime: &str) -> WorkspaceId {
    let id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO workspaces (name, runtime, host, tier, env, workspace_dir, workspace_access,
                                 auth_token)
         VALUES ('n', $1, $2, 3, '{\"K\": \"v\"}', '/srv/ws', 'read_only', 'tok')
         RETURNING id",
    )
    .bind(runtime)
    .bind(host)
    .fetch_one(pool)
    .await
    .unwrap();
    WorkspaceId(id)
}

#[tokio::test]
async fn rows_are_read_per_host_with_every_column_mapped() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let mine = insert(&pool, "h1", "claude-code").await;
    let other = insert(&pool, "h2", "codex").await;
    sqlx::query(
        "UPDATE workspaces SET status = 'degraded', status_reason = 'crash_loop',
                observed_generation = 1, restart_count = 4 WHERE id = $1",
    )
    .bind(mine.0)
    .execute(&pool)
    .await
    .unwrap();

    let rows = desired::load_rows(&pool, "h1").await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.id, mine);
    assert_eq!(row.runtime, "claude-code");
    assert_eq!(row.tier, 3);
    assert_eq!(row.desired_state, DesiredState::Running);
    assert_eq!(row.workspace_access, WorkspaceAccess::ReadOnly);
    assert_eq!(row.workspace_dir.as_deref(), Some("/srv/ws"));
    assert_eq!(row.env.expose(), &serde_json::json!({"K": "v"}));
    assert_eq!(
        row.auth_token.as_ref().map(|t| t.expose().as_str()),
        Some("tok")
    );
    assert_eq!(row.status, Some(Status::Degraded));
    assert_eq!(row.status_reason, Some(Reason::CrashLoop));
    assert_eq!(row.restart_count, 4);
    assert_eq!(row.generation, 1);

    assert!(
        desired::load_row(&pool, "h1", other)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        desired::load_row(&pool, "h2", other)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn the_catalogue_holds_runtimes_their_timeouts_and_pins() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    sqlx::query("INSERT INTO runtimes (name, provision_timeout) VALUES ('slowpoke', '90 seconds')")
        .execute(&pool)
        .await
        .unwrap();
    let digest = format!("sha256:{}", "c".repeat(64));
    sqlx::query("INSERT INTO runtime_image_pins (template_name, ring, digest) VALUES ('codex', 'canary', $1)")
        .bind(&digest)
        .execute(&pool)
        .await
        .unwrap();
    let catalogue = desired::load_catalogue(&pool).await.unwrap();
    let slow = catalogue.runtime("slowpoke").unwrap();
    assert_eq!(slow.provision_timeout, Some(Duration::from_secs(90)));
    assert_eq!(slow.image_repository, "workspace-template-slowpoke");
    assert!(catalogue.runtime("claude-code").unwrap().session_volume);
    assert_eq!(
        catalogue.runtime("langgraph").unwrap().provision_timeout,
        None
    );
    assert_eq!(
        catalogue.pin("codex", "canary").map(|d| d.as_str()),
        Some(digest.as_str())
    );
    assert_eq!(catalogue.pin("codex", "stable"), None);
}

fn status(id: WorkspaceId, status: Status) -> StatusWrite {
    StatusWrite {
        id,
        status,
        reason: None,
        container_id: Some("c0ffee".into()),
        runtime_image_digest: None,
        runtime_image_id: Some("sha256:img".into()),
        url: Some("http://127.0.0.1:32768".into()),
        observed_generation: 1,
        restart_count: 0,
        last_error: None,
        rollout: None,
    }
}

async fn lease_for(pool: &PgPool, host: &str, holder: &str) -> Lease {
    sqlx::query("INSERT INTO host_leases (host, holder, epoch) VALUES ($1, $2, 7)")
        .bind(host)
        .bind(holder)
        .execute(pool)
        .await
        .unwrap();
    Lease {
        host: host.into(),
        holder: holder.into(),
        epoch: 7,
        until: None,
    }
}

#[tokio::test]
async fn status_and_event_writes_land_only_under_the_current_lease() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let id = insert(&pool, "h1", "langgraph").await;
    let lease = lease_for(&pool, "h1", "me").await;

    assert_eq!(
        desired::write_status(&pool, &lease, &status(id, Status::Online))
            .await
            .unwrap(),
        Written::Yes
    );
    let first: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT status_changed_at FROM workspaces WHERE id = $1")
            .bind(id.0)
            .fetch_one(&pool)
            .await
            .unwrap();
    // The same status again keeps its time; the generation is berth's to
    // leave alone.
    tokio::time::sleep(Duration::from_millis(20)).await;
    desired::write_status(&pool, &lease, &status(id, Status::Online))
        .await
        .unwrap();
    let (again, generation): (chrono::DateTime<chrono::Utc>, i64) =
        sqlx::query_as("SELECT status_changed_at, generation FROM workspaces WHERE id = $1")
            .bind(id.0)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(again, first);
    assert_eq!(generation, 1);

    let stale = Lease {
        epoch: 6,
        ..lease.clone()
    };
    let stranger = Lease {
        holder: "someone".into(),
        ..lease.clone()
    };
    let other_host = Lease {
        host: "h2".into(),
        ..lease.clone()
    };
    for bad in [&stale, &stranger, &other_host] {
        assert_eq!(
            desired::write_status(&pool, bad, &status(id, Status::Stopped))
                .await
                .unwrap(),
            Written::Refused,
            "{bad:?}"
        );
        let event = Event {
            workspace: id,
            action: "stop".into(),
            reason: "desired stopped".into(),
            detail: serde_json::json!({}),
            at: chrono::Utc::now(),
        };
        assert_eq!(
            desired::record_events(&pool, bad, std::slice::from_ref(&event))
                .await
                .unwrap(),
            Written::Refused
        );
        assert_eq!(
            desired::record_with_status(&pool, bad, &[event], &status(id, Status::Stopped))
                .await
                .unwrap(),
            (Written::Refused, Written::Refused)
        );
    }
    let shown: String = sqlx::query_scalar("SELECT status FROM workspaces WHERE id = $1")
        .bind(id.0)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(shown, "online");

    let at = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678901Z")
        .unwrap()
        .to_utc();
    let event = Event {
        workspace: id,
        action: "create".into(),
        reason: "no container".into(),
        detail: serde_json::json!({"image": "x"}),
        at,
    };
    assert_eq!(
        desired::record_events(&pool, &lease, &[event])
            .await
            .unwrap(),
        Written::Yes
    );
    let (instance, epoch, stored): (String, i64, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT instance, epoch, at FROM workspace_events WHERE workspace_id = $1")
            .bind(id.0)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((instance.as_str(), epoch), ("me", 7));
    assert_eq!(stored, at, "the event keeps the time it happened");

    // The steps' events and the status they end in land together.
    let undone = Event {
        workspace: id,
        action: "status".into(),
        reason: "online/rolled_back".into(),
        detail: serde_json::json!({}),
        at,
    };
    let mut write = status(id, Status::Online);
    write.reason = Some(berth::model::Reason::RolledBack);
    assert_eq!(
        desired::record_with_status(&pool, &lease, &[undone], &write)
            .await
            .unwrap(),
        (Written::Yes, Written::Yes)
    );
    let (reason, events): (Option<String>, i64) = sqlx::query_as(
        "SELECT status_reason, (SELECT count(*) FROM workspace_events WHERE workspace_id = w.id)
           FROM workspaces w WHERE id = $1",
    )
    .bind(id.0)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((reason.as_deref(), events), (Some("rolled_back"), 2));
}

struct Running {
    lease: watch::Receiver<Option<Lease>>,
    triggers: mpsc::UnboundedReceiver<DesiredTrigger>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[tokio::test]
async fn a_call_whose_connection_goes_silent_ends_at_its_deadline_and_the_pool_goes_on() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let id = insert(&pool, "h9", "langgraph").await;
    let lease = lease_for(&pool, "h9", "me").await;
    let proxy = crate::harness::proxy::TcpProxy::start(db.addr().parse().unwrap()).await;
    let url = SecretUrl::new(&db.url_via(proxy.addr));
    let proxied = desired::connect(&url, 2, Duration::from_secs(5))
        .await
        .unwrap();

    // The write waits in the server on a row lock; the path goes silent
    // under it; the lock goes and the server answers into the silence.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM workspaces WHERE id = $1 FOR UPDATE")
        .bind(id.0)
        .execute(&mut *blocker)
        .await
        .unwrap();
    let call = tokio::spawn({
        let (proxied, lease) = (proxied.clone(), lease.clone());
        async move {
            let write = status(id, Status::Online);
            desired::within(
                Duration::from_secs(2),
                desired::write_status(&proxied, &lease, &write),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.freeze();
    blocker.commit().await.unwrap();
    let waited = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the call ends at its deadline")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut),
        "{err:?}"
    );
    assert!(
        waited.elapsed() < Duration::from_secs(10),
        "{:?}",
        waited.elapsed()
    );

    // The silent connection is not lent again: the next call takes another.
    let row = tokio::time::timeout(
        Duration::from_secs(20),
        desired::load_row(&proxied, "h9", id),
    )
    .await
    .expect("the next call answers")
    .unwrap()
    .expect("the row");
    assert_eq!(
        row.status,
        Some(Status::Online),
        "the write landed all the same"
    );
}

fn start(db: &TestDb, host: &str, holder: &str, ttl: Duration) -> Running {
    let (tx, triggers) = mpsc::unbounded_channel();
    let (lease_tx, lease) = watch::channel(None);
    let cancel = CancellationToken::new();
    let session = Session {
        url: SecretUrl::new(&db.url),
        host: host.into(),
        holder: holder.into(),
        ttl,
        retry_max: Duration::from_secs(3),
    };
    let task = tokio::spawn(session.run(tx, lease_tx, cancel.clone()));
    Running {
        lease,
        triggers,
        cancel,
        task,
    }
}

async fn wait_lease(
    r: &mut Running,
    secs: u64,
    want: impl Fn(&Option<Lease>) -> bool,
) -> Option<Lease> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let now = r.lease.borrow().clone();
        if want(&now) {
            return now;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "lease state not reached in {secs}s: {now:?}"
        );
        let _ = tokio::time::timeout(left, r.lease.changed()).await;
    }
}

async fn next_trigger(r: &mut Running, want: &DesiredTrigger) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = tokio::time::timeout(left, r.triggers.recv())
            .await
            .expect("a trigger in 5s");
        if got.as_ref() == Some(want) {
            return;
        }
    }
}

#[tokio::test]
async fn a_lost_session_stops_mutations_at_once_and_the_live_holder_resumes() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let ttl = Duration::from_secs(3);
    let mut a = start(&db, "h1", "a", ttl);
    let first = wait_lease(&mut a, 5, Option::is_some).await.unwrap();
    let b = start(&db, "h1", "b", ttl);

    let killed_at = Instant::now();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = $1",
    )
    .bind(desired::session_application_name("a"))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(killed, [true]);
    wait_lease(&mut a, 2, Option::is_none).await;
    assert!(killed_at.elapsed() < Duration::from_secs(2));
    // The process is alive: its new session takes its own lease back.
    let again = wait_lease(&mut a, 5, Option::is_some).await.unwrap();
    assert_eq!(again, first);
    assert!(b.lease.borrow().is_none(), "the standby must stay passive");
}

#[tokio::test]
async fn a_standby_takes_over_when_the_holder_dies_and_fences_its_writes() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let ttl = Duration::from_secs(3);
    let mut a = start(&db, "h1", "a", ttl);
    let first = wait_lease(&mut a, 5, Option::is_some).await.unwrap();
    let mut b = start(&db, "h1", "b", ttl);
    tokio::time::sleep(ttl / 2).await;
    assert!(b.lease.borrow().is_none(), "the standby must stay passive");

    // The holder's process dies without releasing anything.
    let died_at = Instant::now();
    a.task.abort();
    let taken = wait_lease(&mut b, 10, Option::is_some).await.unwrap();
    assert_eq!(taken.holder, "b");
    assert_eq!(taken.epoch, first.epoch + 1);
    assert!(
        died_at.elapsed() >= ttl / 2,
        "taken before the lease could expire"
    );

    let id = insert(&pool, "h1", "codex").await;
    assert_eq!(
        desired::write_status(&pool, &first, &status(id, Status::Online))
            .await
            .unwrap(),
        Written::Refused
    );
    assert_eq!(
        desired::write_status(&pool, &taken, &status(id, Status::Online))
            .await
            .unwrap(),
        Written::Yes
    );
}

#[tokio::test]
async fn a_standby_with_a_shorter_ttl_waits_out_the_holders_term() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let term = Duration::from_secs(6);
    let mut a = start(&db, "h1", "a", term);
    let first = wait_lease(&mut a, 5, Option::is_some).await.unwrap();
    let recorded: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM ttl)::float8 FROM host_leases WHERE host = 'h1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(recorded, 6.0, "the holder records its term");

    let mut b = start(&db, "h1", "b", Duration::from_secs(1));
    let died_at = Instant::now();
    a.task.abort();
    // By its own 1 s TTL the lease lapses at once; the holder may act for
    // up to 2/3 of its 6 s term after its last renewal.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        b.lease.borrow().is_none(),
        "taken {:?} after the holder died, inside its term",
        died_at.elapsed()
    );
    let taken = wait_lease(&mut b, 8, Option::is_some).await.unwrap();
    assert_eq!(taken.epoch, first.epoch + 1);
    let recorded: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM ttl)::float8 FROM host_leases WHERE host = 'h1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(recorded, 1.0, "the new holder records its own term");
}

#[tokio::test]
async fn a_cancelled_holder_releases_so_the_standby_takes_over_at_once() {
    let db = TestDb::migrated().await;
    let ttl = Duration::from_secs(30);
    let mut a = start(&db, "h1", "a", ttl);
    let first = wait_lease(&mut a, 5, Option::is_some).await.unwrap();
    let mut b = start(&db, "h1", "b", Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(b.lease.borrow().is_none());
    a.cancel.cancel();
    let taken = wait_lease(&mut b, 5, Option::is_some).await.unwrap();
    assert_eq!(taken.holder, "b");
    assert_eq!(taken.epoch, first.epoch + 1);
}

#[tokio::test]
async fn notifications_reach_the_session_as_triggers() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let mut r = start(&db, "h1", "a", Duration::from_secs(15));
    next_trigger(&mut r, &DesiredTrigger::All).await;
    let id = insert(&pool, "h1", "codex").await;
    next_trigger(&mut r, &DesiredTrigger::Workspace(id)).await;
    sqlx::query("INSERT INTO runtime_image_pins (template_name, ring, digest) VALUES ('codex', 'stable', $1)")
        .bind(format!("sha256:{}", "d".repeat(64)))
        .execute(&pool)
        .await
        .unwrap();
    next_trigger(
        &mut r,
        &DesiredTrigger::Pin {
            template: "codex".into(),
            ring: "stable".into(),
        },
    )
    .await;
}

/// Pins codex's stable ring to `digest` (the history trigger records it).
/// Who made the newest pin history entry, and its note.
async fn last_entry(pool: &PgPool) -> (Option<String>, Option<String>) {
    sqlx::query_as(
        "SELECT updated_by, note FROM runtime_image_pin_history ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn pin_codex(pool: &PgPool, digest: &str) {
    sqlx::query(
        "INSERT INTO runtime_image_pins (template_name, ring, digest) VALUES ('codex', 'stable', $1)
         ON CONFLICT (template_name, ring) DO UPDATE SET digest = EXCLUDED.digest",
    )
    .bind(digest)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_digest_is_marked_stable_only_while_pinned_and_a_halt_unmarks_it() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let (a, b, c) = (d('a'), d('b'), d('c'));
    let stable = |digest: String| {
        let pool = pool.clone();
        async move {
            let at: Option<Option<chrono::DateTime<chrono::Utc>>> = sqlx::query_scalar(
                "SELECT stable_at FROM runtime_image_pin_history
                  WHERE template_name = 'codex' AND ring = 'stable' AND new_digest = $1
                  ORDER BY id DESC LIMIT 1",
            )
            .bind(digest)
            .fetch_optional(&pool)
            .await
            .unwrap();
            at.flatten().is_some()
        }
    };
    pin_codex(&pool, &a).await;
    desired::mark_stable(&pool, "codex", "stable", &a)
        .await
        .unwrap();
    assert!(stable(a.clone()).await, "pinned and landed: stable");

    // The pin moved on (a rollback, a halt elsewhere) before this host
    // finished with b: b is not marked.
    pin_codex(&pool, &b).await;
    pin_codex(&pool, &c).await;
    desired::mark_stable(&pool, "codex", "stable", &b)
        .await
        .unwrap();
    assert!(!stable(b.clone()).await, "b is no longer pinned");

    // c landed on one host and was marked; another host halts it: the
    // mark goes, so a rollback does not choose c as "stable".
    desired::mark_stable(&pool, "codex", "stable", &c)
        .await
        .unwrap();
    assert!(stable(c.clone()).await);
    let written = desired::halt_pin(&pool, "codex", "stable", &c, Some(&a), "halted")
        .await
        .unwrap();
    assert_eq!(written, desired::PinHalted::PutBack);
    assert!(!stable(c.clone()).await, "a halted digest is not stable");
}

#[tokio::test]
async fn a_rollback_never_returns_to_a_digest_berth_halted() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let (a, b, bad) = (d('a'), d('b'), d('f'));
    for digest in [&a, &b, &bad] {
        pin_codex(&pool, digest).await;
    }
    // b ran everywhere but was never marked (berth restarted mid-rollout);
    // bad failed its canary and berth put b back.
    assert_eq!(
        desired::halt_pin(&pool, "codex", "stable", &bad, Some(&b), "halted")
            .await
            .unwrap(),
        desired::PinHalted::PutBack
    );
    let target = desired::rollback_target(&pool, "codex", "stable", &b)
        .await
        .unwrap()
        .expect("a target");
    assert_eq!(target.digest, a, "not the halted digest");

    // Marked stable later (it rolled out fine after all), it may be chosen.
    sqlx::query("UPDATE runtime_image_pin_history SET stable_at = now() WHERE new_digest = $1")
        .bind(&bad)
        .execute(&pool)
        .await
        .unwrap();
    let target = desired::rollback_target(&pool, "codex", "stable", &b)
        .await
        .unwrap()
        .expect("a target");
    assert_eq!(target.digest, bad);
}

#[tokio::test]
async fn berths_connections_bound_every_statement() {
    let db = TestDb::migrated().await;
    let url = SecretUrl::new(&db.url);
    let pool = desired::connect(&url, 1, Duration::from_secs(5))
        .await
        .unwrap();
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(timeout, "1min");
}

#[tokio::test]
async fn a_halted_pin_that_was_new_is_removed_and_the_history_says_berth_did_it() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let (a, bad) = (d('a'), d('f'));
    pin_codex(&pool, &a).await;
    // The canary ring had no pin (it followed stable): its first pin fails.
    sqlx::query(
        "INSERT INTO runtime_image_pins (template_name, ring, digest) VALUES ('codex', 'canary', $1)",
    )
    .bind(&bad)
    .execute(&pool)
    .await
    .unwrap();
    // A note edited since moves no digest: the pin is still the new one.
    sqlx::query("UPDATE runtime_image_pins SET note = 'looking' WHERE ring = 'canary'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        desired::pinned_before(&pool, "codex", "stable", &a)
            .await
            .unwrap(),
        None,
        "stable's pin was created with a"
    );
    let done = desired::halt_pin(&pool, "codex", "canary", &bad, Some(&a), "halted: 1 of 1")
        .await
        .unwrap();
    assert_eq!(done, desired::PinHalted::Unpinned);
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM runtime_image_pins WHERE template_name = 'codex' AND ring = 'canary'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "the ring follows stable again, not a copy of it");
    let last: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = sqlx::query_as(
        "SELECT old_digest, new_digest, updated_by, note FROM runtime_image_pin_history
          WHERE ring = 'canary' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        last,
        (
            Some(bad.clone()),
            None,
            Some("berth".into()),
            Some("halted: 1 of 1".into())
        )
    );
    // A second halt finds the pin gone: nothing more to do.
    let again = desired::halt_pin(&pool, "codex", "canary", &bad, Some(&a), "halted")
        .await
        .unwrap();
    assert_eq!(again, desired::PinHalted::Moved);
    // A plain delete by hand still says who and that it was deleted.
    sqlx::query("DELETE FROM runtime_image_pins WHERE template_name = 'codex'")
        .execute(&pool)
        .await
        .unwrap();
    let (by, note) = last_entry(&pool).await;
    assert_eq!(note.as_deref(), Some("pin deleted"));
    assert_ne!(by.as_deref(), Some("berth"));
}

#[tokio::test]
async fn an_operators_raw_pin_edit_after_a_halt_is_not_recorded_as_berths() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let (a, bad, b, c) = (d('a'), d('f'), d('b'), d('c'));
    pin_codex(&pool, &a).await;
    pin_codex(&pool, &bad).await;
    let halted = desired::halt_pin(&pool, "codex", "stable", &bad, Some(&a), "halted")
        .await
        .unwrap();
    assert_eq!(halted, desired::PinHalted::PutBack);
    // A script sets the digest alone; then an operator logged in as the
    // `berth` user sets it with that name.
    sqlx::query("UPDATE runtime_image_pins SET digest = $1 WHERE template_name = 'codex'")
        .bind(&b)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE runtime_image_pins SET digest = $1, updated_by = 'berth', note = 'by hand'
          WHERE template_name = 'codex'",
    )
    .bind(&c)
    .execute(&pool)
    .await
    .unwrap();
    let halts: Vec<String> = sqlx::query_scalar(
        "SELECT new_digest FROM runtime_image_pin_history WHERE halt ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        halts,
        std::slice::from_ref(&a),
        "only berth's halt is marked one"
    );
    // The script's edit is the database user's, without the halt's note.
    let (by, note): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT updated_by, note FROM runtime_image_pin_history WHERE new_digest = $1",
    )
    .bind(&b)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        by.as_deref().is_some_and(|b| b.starts_with("db:")),
        "{by:?}"
    );
    assert_eq!(note, None, "the halt's note is not carried on");
    // A rollback from c goes to b: neither edit away from b was a halt.
    let target = desired::rollback_target(&pool, "codex", "stable", &c)
        .await
        .unwrap()
        .expect("a target");
    assert_eq!(target.digest, b);
    // berth's own halt after another halt keeps its name.
    let again = desired::halt_pin(&pool, "codex", "stable", &c, Some(&b), "halted again")
        .await
        .unwrap();
    assert_eq!(again, desired::PinHalted::PutBack);
    let (by, note) = last_entry(&pool).await;
    assert_eq!(
        (by.as_deref(), note.as_deref()),
        (Some("berth"), Some("halted again"))
    );
    // And so does one right after it (the row says berth already).
    let third = desired::halt_pin(&pool, "codex", "stable", &b, Some(&a), "halted thrice")
        .await
        .unwrap();
    assert_eq!(third, desired::PinHalted::PutBack);
    let (by, note) = last_entry(&pool).await;
    assert_eq!(
        (by.as_deref(), note.as_deref()),
        (Some("berth"), Some("halted thrice"))
    );
}

#[tokio::test]
async fn malformed_trail_entries_are_read_as_unknown_not_as_an_error() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let undone = insert(&pool, "h1", "codex").await;
    let held = insert(&pool, "h1", "codex").await;
    sqlx::query(
        "UPDATE workspaces SET status = 'online', status_reason = 'rolled_back' WHERE id = $1",
    )
    .bind(undone.0)
    .execute(&pool)
    .await
    .unwrap();
    // Written by hand: a time and a limit that are no time and no number.
    for (id, action, detail) in [
        (
            undone,
            "status",
            serde_json::json!({"rolled_back": {"hash": "h", "at": "last tuesday"}}),
        ),
        (
            held,
            "note",
            serde_json::json!({"delete_guard": {"limit": "lots"}}),
        ),
    ] {
        sqlx::query(
            "INSERT INTO workspace_events (workspace_id, action, reason, detail, host, instance, epoch)
             VALUES ($1, $2, 'by hand', $3, 'h1', 'test', 1)",
        )
        .bind(id.0)
        .bind(action)
        .bind(detail)
        .execute(&pool)
        .await
        .unwrap();
    }
    let rolled = desired::rolled_back(&pool, "h1").await.unwrap();
    assert_eq!(rolled.len(), 1);
    assert_eq!(rolled[0].hash, "h");
    let age = chrono::Utc::now() - rolled[0].at;
    assert!(
        age.num_seconds().abs() < 60,
        "the event's own time stands in"
    );
    let (latched, limit) = desired::guard_latch(&pool, "h1").await.unwrap();
    assert_eq!(latched, [held]);
    assert_eq!(limit, None);
}

#[tokio::test]
async fn a_digest_halted_since_it_was_last_pinned_is_known_as_such() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let (a, b) = (d('a'), d('b'));
    let halted = |digest: String| {
        let pool = pool.clone();
        async move {
            desired::halted_since_pinned(&pool, "codex", "stable", &digest)
                .await
                .unwrap()
        }
    };
    pin_codex(&pool, &a).await;
    pin_codex(&pool, &b).await;
    assert!(!halted(b.clone()).await);
    desired::halt_pin(&pool, "codex", "stable", &b, Some(&a), "halted")
        .await
        .unwrap();
    assert!(halted(b.clone()).await, "b was halted");
    assert!(!halted(a.clone()).await, "a was written back, not halted");
    // Pinned again by a person: the old halt no longer holds it back.
    pin_codex(&pool, &b).await;
    assert!(!halted(b.clone()).await);
}
