//! berth's writes: the row's status columns and the audit trail. Each is
//! fenced by the host lease: it lands only while `lease` is the current
//! holder and epoch of the row's host, so a stale instance's writes are
//! refused by the database (they match no row).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{Bounded, Lease};
use crate::model::{Reason, Status, WorkspaceId};

/// The controller-owned columns of one row, as one pass observed them.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusWrite {
    pub id: WorkspaceId,
    pub status: Status,
    pub reason: Option<Reason>,
    pub container_id: Option<String>,
    pub runtime_image_digest: Option<String>,
    pub runtime_image_id: Option<String>,
    pub url: Option<String>,
    /// The row generation this status describes.
    pub observed_generation: i64,
    pub restart_count: i32,
    pub last_error: Option<String>,
    pub rollout: Option<serde_json::Value>,
}

/// Whether a fenced write landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    Yes,
    /// The lease is not (or no longer) this instance's with this epoch, or
    /// the row is gone: nothing was written.
    Refused,
}

impl Written {
    /// A fenced single-row update landed when it matched its row.
    pub(super) fn from_rows(affected: u64) -> Self {
        if affected == 1 {
            Written::Yes
        } else {
            Written::Refused
        }
    }
}

/// Writes the row's status columns. `status_changed_at` moves only when
/// status or reason changes.
pub async fn write_status(
    pool: &PgPool,
    lease: &Lease,
    w: &StatusWrite,
) -> Result<Written, sqlx::Error> {
    update_status(pool, lease, w).await
}

/// Appends `events` and writes `status` in one transaction, fenced as
/// each is alone: a berth that dies between the two leaves neither, so a
/// trail that says a change was undone never stands beside a row that
/// does not (a restarted berth reads the two together). Returns whether
/// the events and the status landed.
pub async fn record_with_status(
    pool: &PgPool,
    lease: &Lease,
    events: &[Event],
    status: &StatusWrite,
) -> Result<(Written, Written), sqlx::Error> {
    let mut tx = pool.begin().bounded().await?;
    let inserted = insert_events(&mut *tx, lease, events, Fence::Held).await?;
    let written = update_status(&mut *tx, lease, status).await?;
    tx.commit().bounded().await?;
    let recorded = if inserted as usize == events.len() {
        Written::Yes
    } else {
        Written::Refused
    };
    Ok((recorded, written))
}

async fn update_status(
    db: impl sqlx::PgExecutor<'_>,
    lease: &Lease,
    w: &StatusWrite,
) -> Result<Written, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE workspaces w SET
            status_changed_at = CASE
                WHEN (w.status, w.status_reason) IS DISTINCT FROM ($4, $5) THEN now()
                ELSE w.status_changed_at END,
            status = $4, status_reason = $5, container_id = $6, runtime_image_digest = $7,
            runtime_image_id = $8, url = $9, observed_generation = $10, restart_count = $11,
            last_error = $12, rollout = $13
          FROM host_leases l
         WHERE w.id = $1 AND w.host = l.host
           AND l.host = $2 AND l.holder = $3 AND l.epoch = $14",
    )
    .bind(w.id.0)
    .bind(&lease.host)
    .bind(&lease.holder)
    .bind(w.status.as_str())
    .bind(w.reason.map(|r| r.as_str()))
    .bind(&w.container_id)
    .bind(&w.runtime_image_digest)
    .bind(&w.runtime_image_id)
    .bind(&w.url)
    .bind(w.observed_generation)
    .bind(w.restart_count)
    .bind(&w.last_error)
    .bind(&w.rollout)
    .bind(lease.epoch)
    .execute(db)
    .bounded()
    .await?;
    Ok(Written::from_rows(result.rows_affected()))
}

/// Writes only the row's `rollout` column (a replace waiting for its wave,
/// or held by a halted rollout), fenced like [`write_status`].
pub async fn write_rollout(
    pool: &PgPool,
    lease: &Lease,
    id: WorkspaceId,
    rollout: &serde_json::Value,
) -> Result<Written, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE workspaces w SET rollout = $4
          FROM host_leases l
         WHERE w.id = $1 AND w.host = l.host
           AND l.host = $2 AND l.holder = $3 AND l.epoch = $5",
    )
    .bind(id.0)
    .bind(&lease.host)
    .bind(&lease.holder)
    .bind(rollout)
    .bind(lease.epoch)
    .execute(pool)
    .bounded()
    .await?;
    Ok(Written::from_rows(result.rows_affected()))
}

/// One entry of a workspace's audit trail.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub workspace: WorkspaceId,
    /// What was done, e.g. `create`, `remove_container`, `guard_blocked`.
    pub action: String,
    /// Why, in words an operator reads (`recreate: digest sha256:ab… →
    /// sha256:cd…`).
    pub reason: String,
    /// Structured detail; never a secret.
    pub detail: serde_json::Value,
    /// When it happened (an action: when it ended).
    pub at: DateTime<Utc>,
}

/// Appends events to `workspace_events`, fenced like status writes. The
/// instance is the lease holder.
pub async fn record_events(
    pool: &PgPool,
    lease: &Lease,
    events: &[Event],
) -> Result<Written, sqlx::Error> {
    let inserted = insert_events(pool, lease, events, Fence::Held).await?;
    Ok(if inserted as usize == events.len() {
        Written::Yes
    } else {
        Written::Refused
    })
}

/// Appends events of steps an instance took under `lease` after it lost
/// that lease (the database did not take them in time). Unfenced: they are
/// history, not state, and say which instance and epoch took the step;
/// each is marked `recorded_late`. Nothing berth decides reads them.
pub async fn record_late_events(
    pool: &PgPool,
    lease: &Lease,
    events: &[Event],
) -> Result<(), sqlx::Error> {
    insert_events(pool, lease, events, Fence::Late).await?;
    Ok(())
}

/// Whether an insert of events needs the lease to hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fence {
    Held,
    Late,
}

/// Inserts `events` under `lease` (host, instance, epoch); returns how
/// many went in (none when a held lease no longer holds).
async fn insert_events(
    db: impl sqlx::PgExecutor<'_>,
    lease: &Lease,
    events: &[Event],
    fence: Fence,
) -> Result<u64, sqlx::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.workspace.0).collect();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
    let details: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            let mut detail = e.detail.clone();
            if fence == Fence::Late
                && let Some(map) = detail.as_object_mut()
            {
                map.insert("recorded_late".into(), serde_json::Value::Bool(true));
            }
            detail
        })
        .collect();
    let ats: Vec<DateTime<Utc>> = events.iter().map(|e| e.at).collect();
    let sql = match fence {
        Fence::Held => {
            "INSERT INTO workspace_events (workspace_id, action, reason, detail, at, host, instance, epoch)
             SELECT e.id, e.action, e.reason, e.detail, e.at, l.host, l.holder, l.epoch
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $8::timestamptz[])
                    AS e(id, action, reason, detail, at)
               JOIN host_leases l ON l.host = $5 AND l.holder = $6 AND l.epoch = $7"
        }
        Fence::Late => {
            "INSERT INTO workspace_events (workspace_id, action, reason, detail, at, host, instance, epoch)
             SELECT e.id, e.action, e.reason, e.detail, e.at, $5, $6, $7
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $8::timestamptz[])
                    AS e(id, action, reason, detail, at)"
        }
    };
    let result = sqlx::query(sql)
        .bind(&ids)
        .bind(&actions)
        .bind(&reasons)
        .bind(&details)
        .bind(&lease.host)
        .bind(&lease.holder)
        .bind(lease.epoch)
        .bind(&ats)
        .execute(db)
        .bounded()
        .await?;
    Ok(result.rows_affected())
}

/// Deletes events older than `retention`; returns how many went.
pub async fn prune_events(
    pool: &PgPool,
    retention: std::time::Duration,
) -> Result<u64, sqlx::Error> {
    // In batches: a large backlog is many short statements, never one
    // long one holding locks and a connection.
    let mut deleted = 0;
    loop {
        let result = sqlx::query(
            "DELETE FROM workspace_events WHERE id IN (
                SELECT id FROM workspace_events
                 WHERE at < now() - $1::float8 * interval '1 second'
                 LIMIT 5000)",
        )
        .bind(retention.as_secs_f64())
        .execute(pool)
        .bounded()
        .await?;
        deleted += result.rows_affected();
        if result.rows_affected() == 0 {
            return Ok(deleted);
        }
    }
}

/// What a halt did to the pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinHalted {
    /// The previous digest is back in the pin.
    PutBack,
    /// The pin was new (the ring followed stable or the tag before): it
    /// is gone, and the ring follows what it followed again.
    Unpinned,
    /// The pin no longer names the halted digest (an operator's newer
    /// edit wins): left alone.
    Moved,
    /// The pin was not new and no previous digest is known: left alone.
    NothingToPutBack,
}

/// Halts a pin rollout everywhere: puts back what the pin of (`runtime`,
/// `ring`) was before it named `to` — `from`, or no pin at all when the
/// entry that set `to` created it — when it still names `to` (an
/// operator's newer edit wins), recorded in the history as by berth with
/// `note`. A digest halted is not stable, whatever another host marked.
pub async fn halt_pin(
    pool: &PgPool,
    runtime: &str,
    ring: &str,
    to: &str,
    from: Option<&str>,
    note: &str,
) -> Result<PinHalted, sqlx::Error> {
    let mut tx = pool.begin().bounded().await?;
    let created = super::rows::named_before(&mut *tx, runtime, ring, to).await? == Some(None);
    // The history trigger takes who and why of a delete from these
    // settings, and the pins' trigger keeps an update's `updated_by =
    // 'berth'` only with them; they end with the transaction.
    sqlx::query(
        "SELECT set_config('berth.pin_by', 'berth', true), set_config('berth.pin_note', $1, true)",
    )
    .bind(note)
    .execute(&mut *tx)
    .bounded()
    .await?;
    // One row changed is done; none, and an operator's edit came first.
    let done = |changed: u64, what| if changed == 1 { what } else { PinHalted::Moved };
    let result = if created {
        let deleted = sqlx::query(
            "DELETE FROM runtime_image_pins WHERE template_name = $1 AND ring = $2 AND digest = $3",
        )
        .bind(runtime)
        .bind(ring)
        .bind(to)
        .execute(&mut *tx)
        .bounded()
        .await?;
        done(deleted.rows_affected(), PinHalted::Unpinned)
    } else if let Some(from) = from {
        let updated = sqlx::query(
            "UPDATE runtime_image_pins SET digest = $4, updated_by = 'berth', note = $5
              WHERE template_name = $1 AND ring = $2 AND digest = $3",
        )
        .bind(runtime)
        .bind(ring)
        .bind(to)
        .bind(from)
        .bind(note)
        .execute(&mut *tx)
        .bounded()
        .await?;
        done(updated.rows_affected(), PinHalted::PutBack)
    } else {
        PinHalted::NothingToPutBack
    };
    // A digest that failed on this host is not stable, whatever another
    // host that finished its own rollout first marked: `berth rollback`
    // and the next halt must not choose it.
    sqlx::query(
        "UPDATE runtime_image_pin_history SET stable_at = NULL
          WHERE id = (SELECT max(id) FROM runtime_image_pin_history
                       WHERE template_name = $1 AND ring = $2 AND new_digest = $3)",
    )
    .bind(runtime)
    .bind(ring)
    .bind(to)
    .execute(&mut *tx)
    .bounded()
    .await?;
    tx.commit().bounded().await?;
    Ok(result)
}

/// Marks the latest history entry that set (`runtime`, `ring`) to `digest`
/// stable: a rollout of it completed. Only while the pin still names it: a
/// pin moved on (rolled back, halted elsewhere) says the digest did not
/// hold.
pub async fn mark_stable(
    pool: &PgPool,
    runtime: &str,
    ring: &str,
    digest: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE runtime_image_pin_history SET stable_at = now()
          WHERE id = (SELECT max(id) FROM runtime_image_pin_history
                       WHERE template_name = $1 AND ring = $2 AND new_digest = $3)
            AND stable_at IS NULL
            AND EXISTS (SELECT 1 FROM runtime_image_pins
                         WHERE template_name = $1 AND ring = $2 AND digest = $3)",
    )
    .bind(runtime)
    .bind(ring)
    .bind(digest)
    .execute(pool)
    .bounded()
    .await?;
    Ok(())
}

/// The rows of `host` that show `online/rolled_back`, or still
/// `provisioning` (a berth died while it put the old container back), with
/// the spec hash whose replace was undone, its image and why, from the
/// latest `status` event when that recorded the rollback: a berth started
/// (or taking the host over) does not try that spec again before the row
/// changes.
pub async fn rolled_back(pool: &PgPool, host: &str) -> Result<Vec<RolledBack>, sqlx::Error> {
    let rows: Vec<RawRolledBack> = sqlx::query_as(concat!(
        "SELECT w.id, e.detail->'rolled_back'->>'hash', e.detail->'rolled_back'->>'why',
                e.detail->'rolled_back'->>'at', e.detail->'rolled_back'->>'image',
                e.detail->'rolled_back'->'rollout', ",
        super::readable_time!("e.at" AS "at"),
        " FROM workspaces w
           JOIN LATERAL (SELECT detail, at FROM workspace_events
                          WHERE workspace_id = w.id AND action = 'status'
                          ORDER BY id DESC LIMIT 1) e ON true
          WHERE w.host = $1
            AND (w.status_reason = 'rolled_back' OR w.status = 'provisioning')
            AND e.detail ? 'rolled_back'"
    ))
    .bind(host)
    .fetch_all(pool)
    .bounded()
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, hash, why, undone_at, image, rollout, event_at)| {
            // Parsed here, not cast in the query: a trail entry someone
            // wrote by hand must not stop the controller reading the rest.
            let at = undone_at
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map_or(event_at, |t| t.with_timezone(&Utc));
            Some(RolledBack {
                id: WorkspaceId(id),
                hash: hash?,
                image,
                why,
                at,
                rollout: rollout.filter(|r| r.is_object()),
            })
        })
        .collect())
}

/// A row of the rollbacks' query: the id, the hash, why, when, the image
/// and the rollout column, from the status event's detail; the event's
/// time.
type RawRolledBack = (
    uuid::Uuid,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<serde_json::Value>,
    DateTime<Utc>,
);

/// A change a row shows undone, as its trail says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolledBack {
    pub id: WorkspaceId,
    /// The spec hash undone.
    pub hash: String,
    /// The image it wanted (digest, else image ID), when the trail says.
    pub image: Option<String>,
    pub why: Option<String>,
    /// When the change was undone (the event's time, for an event that
    /// does not say).
    pub at: DateTime<Utc>,
    /// The `rollout` column of the replace undone, when it was a
    /// rollout's.
    pub rollout: Option<serde_json::Value>,
}

/// The notes `host` last put on each workspace's trail within the last
/// day (the latest pass that made new ones): what a restarted berth does
/// not say again while they still hold. The delete guard's notes are not
/// among them: writing them again is what keeps its hold (see
/// [`guard_latch`]) past an hour.
pub async fn last_notes(
    pool: &PgPool,
    host: &str,
) -> Result<Vec<(WorkspaceId, String)>, sqlx::Error> {
    let notes: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "SELECT e.workspace_id, e.reason
           FROM workspace_events e
           JOIN (SELECT workspace_id, max(at) AS at FROM workspace_events
                  WHERE host = $1 AND action = 'note' AND at > now() - interval '1 day'
                    AND NOT detail ? 'delete_guard'
                  GROUP BY workspace_id) latest
             ON e.workspace_id = latest.workspace_id AND e.at = latest.at
          WHERE e.host = $1 AND e.action = 'note' AND NOT e.detail ? 'delete_guard'
          ORDER BY e.workspace_id, e.id",
    )
    .bind(host)
    .fetch_all(pool)
    .bounded()
    .await?;
    Ok(notes
        .into_iter()
        .map(|(id, note)| (WorkspaceId(id), note))
        .collect())
}

/// The delete guard's latch as the trail of the last hour left it on
/// `host`: the workspaces whose latest guard note holds a removal back,
/// and the largest limit those notes tripped under. A guard that let go
/// wrote a release note, which ends its hold.
pub async fn guard_latch(
    pool: &PgPool,
    host: &str,
) -> Result<(Vec<WorkspaceId>, Option<i64>), sqlx::Error> {
    let held: Vec<(uuid::Uuid, Option<String>)> = sqlx::query_as(
        "SELECT workspace_id, detail->'delete_guard'->>'limit'
           FROM (SELECT DISTINCT ON (workspace_id) workspace_id, detail
                   FROM workspace_events
                  WHERE host = $1 AND action = 'note' AND detail ? 'delete_guard'
                    AND at > now() - interval '1 hour'
                  ORDER BY workspace_id, at DESC, id DESC) latest
          WHERE jsonb_typeof(detail->'delete_guard') = 'object'",
    )
    .bind(host)
    .fetch_all(pool)
    .bounded()
    .await?;
    // Parsed here, not cast in the query: a malformed limit on the trail
    // counts as none rather than stopping every round.
    let limit = held
        .iter()
        .filter_map(|(_, l)| l.as_deref()?.parse::<i64>().ok())
        .max();
    Ok((
        held.into_iter().map(|(id, _)| WorkspaceId(id)).collect(),
        limit,
    ))
}
