//! Reading this host's rows, the runtime catalogue and the pins.
//!
//! Queries are checked at run time (`query_as` + `FromRow`), so a fresh
//! clone builds without a database; the integration tests run them against
//! the real one.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Bounded;
use crate::model::{
    DesiredState, Digest, PinRow, Reason, RuntimeRow, Secret, Status, WorkspaceAccess, WorkspaceId,
    WorkspaceRow,
};
use crate::plan::Catalogue;

/// A value in the database that berth cannot read, named by table and
/// column. The database constrains every such column, so this means a
/// schema drift, not a bad row.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{table}.{column} of {key} holds {value:?}, which berth cannot read: {problem}")]
    Unreadable {
        table: &'static str,
        column: &'static str,
        key: String,
        value: String,
        problem: String,
    },
}

/// A `timestamptz` column selected as `alias`, kept within years 1 to
/// 100000: a time the agent, the platform or an operator wrote by hand
/// (`'infinity'`, year 200000) reads as the nearest end of that range
/// (its order against other times holds), where decoding it as it stands
/// overflows the date type the row is read into.
macro_rules! readable_time {
    ($column:literal AS $alias:literal) => {
        concat!(
            "CASE WHEN ",
            $column,
            " > '100000-01-01 00:00:00Z' THEN '100000-01-01 00:00:00Z'::timestamptz WHEN ",
            $column,
            " < '0001-01-01 00:00:00Z' THEN '0001-01-01 00:00:00Z'::timestamptz ELSE ",
            $column,
            " END AS ",
            $alias
        )
    };
    ($column:literal) => {
        $crate::desired::readable_time!($column AS $column)
    };
}
pub(crate) use readable_time;

const WORKSPACE_COLUMNS: &str = concat!(
    "id, name, runtime, tier, ring, host, desired_state, env, image, \
    workspace_dir, workspace_access, template_path, config_files, auth_token, awareness_url, \
    awareness_namespace, session_epoch, restart_epoch, ",
    readable_time!("restart_requested_at"),
    ", paused, generation, ",
    readable_time!("desired_changed_at"),
    ", ",
    readable_time!("created_at"),
    ", status, status_reason, container_id, runtime_image_digest, runtime_image_id, url, \
    observed_generation, ",
    readable_time!("status_changed_at"),
    ", restart_count, last_error, rollout, ",
    readable_time!("last_heartbeat_at")
);

#[derive(sqlx::FromRow)]
struct RawWorkspace {
    id: uuid::Uuid,
    name: String,
    runtime: String,
    tier: i32,
    ring: String,
    host: String,
    desired_state: String,
    env: serde_json::Value,
    image: Option<String>,
    workspace_dir: Option<String>,
    workspace_access: String,
    template_path: Option<String>,
    config_files: serde_json::Value,
    auth_token: Option<String>,
    awareness_url: Option<String>,
    awareness_namespace: Option<String>,
    session_epoch: i64,
    restart_epoch: i64,
    restart_requested_at: Option<DateTime<Utc>>,
    paused: bool,
    generation: i64,
    desired_changed_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    status: Option<String>,
    status_reason: Option<String>,
    container_id: Option<String>,
    runtime_image_digest: Option<String>,
    runtime_image_id: Option<String>,
    url: Option<String>,
    observed_generation: Option<i64>,
    status_changed_at: Option<DateTime<Utc>>,
    restart_count: i32,
    last_error: Option<String>,
    rollout: Option<serde_json::Value>,
    last_heartbeat_at: Option<DateTime<Utc>>,
}

fn column<T, E: std::fmt::Display>(
    table: &'static str,
    column: &'static str,
    key: &str,
    value: &str,
    parsed: Result<T, E>,
) -> Result<T, ReadError> {
    parsed.map_err(|e| ReadError::Unreadable {
        table,
        column,
        key: key.to_string(),
        value: value.to_string(),
        problem: e.to_string(),
    })
}

impl RawWorkspace {
    fn into_row(self) -> Result<WorkspaceRow, ReadError> {
        let key = self.id.to_string();
        let ws = |name: &'static str, value: &str| (name, value.to_string());
        let (c, v) = ws("desired_state", &self.desired_state);
        let desired_state = column("workspaces", c, &key, &v, v.parse::<DesiredState>())?;
        let (c, v) = ws("workspace_access", &self.workspace_access);
        let workspace_access = column("workspaces", c, &key, &v, v.parse::<WorkspaceAccess>())?;
        let status = match &self.status {
            Some(s) => Some(column(
                "workspaces",
                "status",
                &key,
                s,
                s.parse::<Status>(),
            )?),
            None => None,
        };
        let status_reason = match &self.status_reason {
            Some(r) => Some(column(
                "workspaces",
                "status_reason",
                &key,
                r,
                r.parse::<Reason>(),
            )?),
            None => None,
        };
        Ok(WorkspaceRow {
            id: WorkspaceId(self.id),
            name: self.name,
            runtime: self.runtime,
            tier: self.tier,
            ring: self.ring,
            host: self.host,
            desired_state,
            env: Secret::new(self.env),
            image: self.image,
            workspace_dir: self.workspace_dir,
            workspace_access,
            template_path: self.template_path,
            config_files: Secret::new(self.config_files),
            auth_token: self.auth_token.map(Secret::new),
            awareness_url: self.awareness_url,
            awareness_namespace: self.awareness_namespace,
            session_epoch: self.session_epoch,
            restart_epoch: self.restart_epoch,
            restart_requested_at: self.restart_requested_at,
            paused: self.paused,
            generation: self.generation,
            desired_changed_at: self.desired_changed_at,
            created_at: self.created_at,
            status,
            status_reason,
            container_id: self.container_id,
            runtime_image_digest: self.runtime_image_digest,
            runtime_image_id: self.runtime_image_id,
            url: self.url,
            observed_generation: self.observed_generation.unwrap_or(0),
            status_changed_at: self.status_changed_at,
            restart_count: self.restart_count,
            last_error: self.last_error,
            rollout: self.rollout,
            last_heartbeat_at: self.last_heartbeat_at,
        })
    }
}

/// Every row of `host`.
pub async fn load_rows(pool: &PgPool, host: &str) -> Result<Vec<WorkspaceRow>, ReadError> {
    let sql = format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE host = $1 ORDER BY id");
    let raw: Vec<RawWorkspace> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(host)
        .fetch_all(pool)
        .bounded()
        .await?;
    raw.into_iter().map(RawWorkspace::into_row).collect()
}

/// The hosts that have live (not removed) rows, with how many, most first
/// (at most 20): what an operator whose host has none wants to see.
pub async fn hosts_with_rows(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT host, count(*) FROM workspaces WHERE desired_state <> 'removed'
          GROUP BY host ORDER BY count(*) DESC, host LIMIT 20",
    )
    .fetch_all(pool)
    .bounded()
    .await
}

/// How an operator reads "no rows for `host`": which hosts have some.
pub fn no_rows_notice(host: &str, others: &[(String, i64)]) -> String {
    if others.is_empty() {
        return format!("no workspace rows for host {host:?}, nor for any other host");
    }
    let list: Vec<String> = others.iter().map(|(h, n)| format!("{h:?} ({n})")).collect();
    format!(
        "no workspace rows for host {host:?} (BERTH_HOST_ID); hosts with rows: {}",
        list.join(", ")
    )
}

/// One row of `host`, or `None` when there is none (deleted, or another
/// host's).
pub async fn load_row(
    pool: &PgPool,
    host: &str,
    id: WorkspaceId,
) -> Result<Option<WorkspaceRow>, ReadError> {
    let sql = format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE host = $1 AND id = $2");
    let raw: Option<RawWorkspace> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(host)
        .bind(id.0)
        .fetch_optional(pool)
        .bounded()
        .await?;
    raw.map(RawWorkspace::into_row).transpose()
}

/// The rows of `host` among `ids`; ids without one (deleted, or another
/// host's) are absent from the answer.
pub async fn load_rows_by_id(
    pool: &PgPool,
    host: &str,
    ids: &[WorkspaceId],
) -> Result<Vec<WorkspaceRow>, ReadError> {
    let sql = format!(
        "SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE host = $1 AND id = ANY($2) ORDER BY id"
    );
    let ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
    let raw: Vec<RawWorkspace> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(host)
        .bind(&ids)
        .fetch_all(pool)
        .bounded()
        .await?;
    raw.into_iter().map(RawWorkspace::into_row).collect()
}

#[derive(sqlx::FromRow)]
struct RawRuntime {
    name: String,
    image_repository: String,
    provision_timeout_secs: Option<f64>,
    session_volume: bool,
}

#[derive(sqlx::FromRow)]
struct RawPin {
    template_name: String,
    ring: String,
    digest: String,
    updated_by: String,
    updated_at: DateTime<Utc>,
    note: Option<String>,
}

/// The runtime catalogue and every pin.
pub async fn load_catalogue(pool: &PgPool) -> Result<Catalogue, ReadError> {
    let runtimes: Vec<RawRuntime> = sqlx::query_as(
        "SELECT name, image_repository, session_volume,
                extract(epoch FROM provision_timeout)::float8 AS provision_timeout_secs
           FROM runtimes ORDER BY name",
    )
    .fetch_all(pool)
    .bounded()
    .await?;
    let runtimes = runtimes.into_iter().map(|r| RuntimeRow {
        name: r.name,
        image_repository: r.image_repository,
        provision_timeout: r
            .provision_timeout_secs
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64),
        session_volume: r.session_volume,
    });
    let pins = load_pins(pool).await?;
    Ok(Catalogue::new(runtimes, pins))
}

/// Every pin, by runtime and ring.
pub async fn load_pins(pool: &PgPool) -> Result<Vec<PinRow>, ReadError> {
    let pins: Vec<RawPin> = sqlx::query_as(concat!(
        "SELECT template_name, ring, digest, updated_by, ",
        readable_time!("updated_at"),
        ", note FROM runtime_image_pins ORDER BY template_name, ring"
    ))
    .fetch_all(pool)
    .bounded()
    .await?;
    pins.into_iter()
        .map(|p| {
            let key = format!("{}/{}", p.template_name, p.ring);
            let digest = column(
                "runtime_image_pins",
                "digest",
                &key,
                &p.digest,
                Digest::parse(&p.digest),
            )?;
            Ok(PinRow {
                template_name: p.template_name,
                ring: p.ring,
                digest,
                updated_by: p.updated_by,
                updated_at: p.updated_at,
                note: p.note,
            })
        })
        .collect()
}

/// The pin history entry a rollback of (`runtime`, `ring`) returns to.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct RollbackTarget {
    /// The history entry's id.
    pub id: i64,
    /// The digest that entry set.
    pub digest: String,
    /// When a rollout of it completed; `None`: never marked stable.
    pub stable_at: Option<DateTime<Utc>>,
}

/// What the pin of (`runtime`, `ring`) named before the newest history
/// entry that moved its digest to `digest` (a note-only edit moves none):
/// `None` without such an entry, `Some(None)` when that entry created the
/// pin.
pub(super) async fn named_before<'e>(
    db: impl sqlx::PgExecutor<'e>,
    runtime: &str,
    ring: &str,
    digest: &str,
) -> Result<Option<Option<String>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT old_digest FROM runtime_image_pin_history
          WHERE template_name = $1 AND ring = $2 AND new_digest = $3
            AND old_digest IS DISTINCT FROM new_digest
          ORDER BY id DESC LIMIT 1",
    )
    .bind(runtime)
    .bind(ring)
    .bind(digest)
    .fetch_optional(db)
    .bounded()
    .await
}

/// The digest the pin of (`runtime`, `ring`) named just before the entry
/// that set `current`, if that entry changed a digest (not one that
/// created the pin).
pub async fn pinned_before(
    pool: &PgPool,
    runtime: &str,
    ring: &str,
    current: &str,
) -> Result<Option<String>, sqlx::Error> {
    Ok(named_before(pool, runtime, ring, current).await?.flatten())
}

/// Whether berth halted a rollout of `digest` on (`runtime`, `ring`) since
/// someone last pinned it: a halt's write-back must not put it back.
pub async fn halted_since_pinned(
    pool: &PgPool,
    runtime: &str,
    ring: &str,
    digest: &str,
) -> Result<bool, sqlx::Error> {
    ask_history(
        pool,
        "SELECT EXISTS (
             SELECT 1 FROM runtime_image_pin_history
              WHERE template_name = $1 AND ring = $2 AND halt AND old_digest = $3
                AND id > coalesce((SELECT max(id) FROM runtime_image_pin_history
                                    WHERE template_name = $1 AND ring = $2
                                      AND new_digest = $3 AND NOT halt), 0))",
        (runtime, ring, digest),
    )
    .await
}

/// A yes-or-no question `sql` asks of the pin history about (`runtime`,
/// `ring`, `digest`), bound as $1, $2, $3.
async fn ask_history(
    pool: &PgPool,
    sql: &'static str,
    (runtime, ring, digest): (&str, &str, &str),
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(sql)
        .bind(runtime)
        .bind(ring)
        .bind(digest)
        .fetch_one(pool)
        .bounded()
        .await
}

/// Whether the latest history entry that set the pin of (`runtime`,
/// `ring`) to `digest` is marked stable: a rollout of it completed.
pub async fn pin_stable(
    pool: &PgPool,
    runtime: &str,
    ring: &str,
    digest: &str,
) -> Result<bool, sqlx::Error> {
    ask_history(
        pool,
        "SELECT coalesce((SELECT stable_at IS NOT NULL FROM runtime_image_pin_history
                           WHERE template_name = $1 AND ring = $2 AND new_digest = $3
                           ORDER BY id DESC LIMIT 1), false)",
        (runtime, ring, digest),
    )
    .await
}

/// What `berth rollback` returns (`runtime`, `ring`) to from the digest
/// `current`: an entry older than the one that set `current`, with another
/// digest, preferring the newest one marked stable, else the newest. A
/// digest berth halted (written back from, after the entry) is never
/// chosen unless it is marked stable. `None` when the history holds no
/// such entry.
pub async fn rollback_target(
    pool: &PgPool,
    runtime: &str,
    ring: &str,
    current: &str,
) -> Result<Option<RollbackTarget>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT id, new_digest AS digest, ",
        readable_time!("stable_at"),
        " FROM runtime_image_pin_history h
          WHERE template_name = $1 AND ring = $2
            AND new_digest IS NOT NULL AND new_digest <> $3
            AND id < coalesce((SELECT max(id) FROM runtime_image_pin_history
                                WHERE template_name = $1 AND ring = $2
                                  AND new_digest = $3), 9223372036854775807)
            AND (h.stable_at IS NOT NULL OR NOT EXISTS (
                  SELECT 1 FROM runtime_image_pin_history halt
                   WHERE halt.template_name = $1 AND halt.ring = $2
                     AND halt.halt AND halt.old_digest = h.new_digest
                     AND halt.id > h.id))
          ORDER BY (h.stable_at IS NOT NULL) DESC, id DESC LIMIT 1"
    ))
    .bind(runtime)
    .bind(ring)
    .bind(current)
    .fetch_optional(pool)
    .bounded()
    .await
}
