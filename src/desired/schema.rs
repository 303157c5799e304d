//! Schema migrations and the compatibility floor (DESIGN §1.1, schema
//! evolution). Migrations are expand/contract: a berth runs against any
//! database whose floor is at or below its own [`SCHEMA_VERSION`], including
//! one migrated further by a newer berth.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

use super::{Bounded, STATEMENT_TIMEOUT};
use crate::config::SecretUrl;

/// The schema version this berth is written against. A migration that an
/// older berth cannot run beside raises the database's floor to the version
/// that introduced it.
pub const SCHEMA_VERSION: i32 = 1;

/// berth's migrations, embedded at build time. Migrations applied by a newer
/// berth are not an error (expand/contract keeps them compatible).
fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true).set_locking(true);
    migrator
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the database requires berth schema version {floor} or newer; this berth ({version}) \
         has schema version {ours}: upgrade berth on this host"
    )]
    TooOld {
        floor: i32,
        ours: i32,
        version: &'static str,
    },
    #[error(
        "the database has no berth schema yet: run `berth migrate` (or `berth run` without --no-migrate)"
    )]
    Missing,
    #[error(
        "the database lacks migration(s) {} this berth needs: run `berth migrate` (or `berth run` without --no-migrate)",
        .0.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
    )]
    Behind(Vec<i64>),
    #[error(
        "the database's migration {0} is not this berth's: it was edited after it was applied, so the schema is not the one this berth knows (`berth migrate` refuses it too)"
    )]
    Edited(i64),
    #[error("cannot reach the database: {0}")]
    Unreachable(#[source] sqlx::Error),
    /// The server answered and refused: the user, the password or the
    /// database name in `DATABASE_URL` is wrong (a restart cannot help).
    #[error(
        "the database refused the connection: {0} (check the user, password and database name in DATABASE_URL)"
    )]
    Refused(String),
    /// The role in `DATABASE_URL` lacks privileges `berth run` writes
    /// with (as the GRANT statements that give them): it could read, but
    /// every pass and the lease would fail.
    #[error(
        "the database role {role} lacks privileges `berth run` needs; as the owner of berth's tables, run: {}",
        .missing.join("; ")
    )]
    Privileges { role: String, missing: Vec<String> },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] MigrateError),
}

/// Whether the server refused a statement for want of a privilege
/// (`42501 insufficient_privilege`): the role in `DATABASE_URL` is not the
/// one berth needs, which no retry or restart mends.
pub fn lacks_privilege(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("42501"))
}

impl SchemaError {
    /// The server refused this berth's user, at connect or for want of a
    /// privilege on the way.
    pub fn refused_user(&self) -> bool {
        match self {
            SchemaError::Refused(_) | SchemaError::Privileges { .. } => true,
            SchemaError::Database(e)
            | SchemaError::Unreachable(e)
            | SchemaError::Migrate(MigrateError::Execute(e)) => lacks_privilege(e),
            _ => false,
        }
    }
}

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    /// Migrations applied by this call, as (version, description).
    pub applied: Vec<(i64, String)>,
    /// The database's compatibility floor afterwards.
    pub floor: i32,
}

/// How long a pooled connection may sit idle before it is pinged when
/// handed out, and how long the ping may take.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// The connection options a `postgres://` URL names. An IPv6 literal
/// (`postgres://u@[::1]:5432/db`) keeps its URL brackets in sqlx's host,
/// which then fails to resolve as a name: the address goes in bare, as
/// libpq and the listening session take it.
pub fn connect_options(url: &str) -> Result<sqlx::postgres::PgConnectOptions, sqlx::Error> {
    let options = sqlx::postgres::PgConnectOptions::from_str(url)?;
    let bare = options
        .get_host()
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .map(str::to_string);
    Ok(match bare {
        Some(host) => options.host(&host),
        None => options,
    })
}

/// Opens a pool, failing within `timeout` when the database does not answer.
pub async fn connect(
    url: &SecretUrl,
    max_connections: u32,
    timeout: Duration,
) -> Result<PgPool, SchemaError> {
    // A statement that hangs (a lock, a stalled server) fails within a
    // bound instead of stalling the controller loop that awaits it.
    let options = connect_options(url.expose())
        .map_err(SchemaError::Unreachable)?
        .options([(
            "statement_timeout",
            format!("{}s", STATEMENT_TIMEOUT.as_secs()),
        )]);
    let classify = |e: sqlx::Error| match &e {
        // 28P01 invalid_password, 28000 invalid_authorization_
        // specification (no such role, pg_hba), 3D000 no such database.
        sqlx::Error::Database(db)
            if matches!(db.code().as_deref(), Some("28P01" | "28000" | "3D000")) =>
        {
            SchemaError::Refused(db.message().to_string())
        }
        _ => SchemaError::Unreachable(e),
    };
    // One connection first: a pool retries a refused connection until its
    // timeout and then says only that it timed out; this says why, at once.
    match tokio::time::timeout(timeout, PgConnection::connect_with(&options)).await {
        Err(_) => return Err(SchemaError::Unreachable(sqlx::Error::PoolTimedOut)),
        Ok(Err(e)) => return Err(classify(e)),
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
        }
    }
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(timeout)
        // A connection that sat idle may be half-open (a path that went
        // silent without a reset): it is pinged within a short bound, and
        // a dead one is closed and another taken at once, instead of each
        // idle connection in turn taking the whole acquire timeout.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < IDLE_BEFORE_PING {
                    return Ok(true);
                }
                let answered = tokio::time::timeout(PING_TIMEOUT, conn.ping()).await;
                Ok(matches!(answered, Ok(Ok(()))))
            })
        })
        .connect_with(options)
        .await
        .map_err(classify)
}

/// The database's compatibility floor, or `None` when berth's schema is
/// not there yet.
async fn floor(pool: &PgPool) -> Result<Option<i32>, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('berth_schema') IS NOT NULL")
        .fetch_one(pool)
        .bounded()
        .await?;
    if !exists {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT floor FROM berth_schema")
        .fetch_optional(pool)
        .bounded()
        .await
}

/// Refuses (with both versions) a database whose floor is above this berth.
pub async fn check_compatible(pool: &PgPool) -> Result<Option<i32>, SchemaError> {
    let floor = floor(pool).await?;
    match floor {
        Some(floor) if floor > SCHEMA_VERSION => Err(SchemaError::TooOld {
            floor,
            ours: SCHEMA_VERSION,
            version: env!("CARGO_PKG_VERSION"),
        }),
        _ => Ok(floor),
    }
}

/// Refuses a database this berth cannot run against without migrating: a
/// floor above this berth, no schema, one of this berth's migrations not
/// applied (a newer berth's extra ones are fine: expand/contract), or one
/// applied and edited since (its checksum differs from this berth's: the
/// schema is not the one this berth knows), as `migrate` refuses it.
pub async fn check_ready(pool: &PgPool) -> Result<i32, SchemaError> {
    let Some(floor) = check_compatible(pool).await? else {
        return Err(SchemaError::Missing);
    };
    let applied = applied(pool).await?;
    let migrator = migrator();
    let missing: Vec<i64> = ours(&migrator)
        .filter(|m| !applied.contains_key(&m.version))
        .map(|m| m.version)
        .collect();
    if !missing.is_empty() {
        return Err(SchemaError::Behind(missing));
    }
    match ours(&migrator).find(|m| applied.get(&m.version) != Some(&m.checksum.to_vec())) {
        Some(edited) => Err(SchemaError::Edited(edited.version)),
        None => Ok(floor),
    }
}

/// What `berth run` does to each table: its passes, the lease, the trail,
/// halts and image retention. Column privileges count (a role may be
/// granted UPDATE on the columns berth writes only); DELETE is per table.
const RUN_PRIVILEGES: &[(&str, &str)] = &[
    ("workspaces", "SELECT"),
    ("runtimes", "SELECT"),
    // A halt writes a pin back or removes a ring's first pin; only
    // `berth pin` inserts one.
    ("runtime_image_pins", "SELECT, UPDATE, DELETE"),
    // Filled by the pins' trigger, which runs as the role that edits them.
    ("runtime_image_pin_history", "SELECT, INSERT, UPDATE"),
    ("workspace_events", "SELECT, INSERT, DELETE"),
    ("host_leases", "SELECT, INSERT, UPDATE"),
    ("host_images", "SELECT, INSERT, UPDATE, DELETE"),
    ("berth_schema", "SELECT"),
];

/// Checks, before `berth run` starts, that its role may do what a pass
/// does, so a role that can read but not write is told at once (exit 64)
/// instead of failing every pass and every lease renewal.
pub async fn check_run_privileges(pool: &PgPool) -> Result<(), SchemaError> {
    let (role, missing): (String, Vec<String>) = sqlx::query_as(
        "SELECT current_user::text, coalesce(array_agg(grant_sql ORDER BY first), '{}')
           FROM (SELECT min(n) AS first,
                        CASE WHEN kind = 'column'
                             THEN format('GRANT %s (%s) ON %s TO %I', min(priv),
                                         string_agg(col, ', ' ORDER BY n), what, current_user)
                             ELSE format('GRANT %s ON %s%s TO %I', string_agg(priv, ', ' ORDER BY n),
                                         CASE kind WHEN 'sequence' THEN 'SEQUENCE ' ELSE '' END,
                                         what, current_user) END AS grant_sql
                   FROM (SELECT n, kind, priv, split_part(obj, '.', 2) AS col,
                                CASE kind WHEN 'sequence' THEN pg_get_serial_sequence(obj, 'id')
                                          WHEN 'column' THEN split_part(obj, '.', 1)
                                          ELSE obj END AS what,
                                CASE WHEN kind = 'sequence'
                                     THEN has_sequence_privilege(pg_get_serial_sequence(obj, 'id'), 'USAGE, UPDATE')
                                     WHEN kind = 'column'
                                     THEN has_column_privilege(split_part(obj, '.', 1), split_part(obj, '.', 2), priv)
                                     WHEN priv = 'DELETE' THEN has_table_privilege(obj, priv)
                                     ELSE has_any_column_privilege(obj, priv) END AS ok
                           FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY
                                AS w(kind, obj, priv, n)) c
                  WHERE NOT ok
                  GROUP BY kind, what) m",
    )
    .bind(run_privilege_rows().map(|r| r.0).collect::<Vec<_>>())
    .bind(run_privilege_rows().map(|r| r.1).collect::<Vec<_>>())
    .bind(run_privilege_rows().map(|r| r.2).collect::<Vec<_>>())
    .fetch_one(pool)
    .bounded()
    .await?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SchemaError::Privileges { role, missing })
    }
}

/// The columns of `workspaces` a pass writes (the status columns): a role
/// granted UPDATE on these alone runs berth; one granted it on some
/// others only would fail every status write.
const STATUS_COLUMNS: &[&str] = &[
    "workspaces.status",
    "workspaces.status_reason",
    "workspaces.status_changed_at",
    "workspaces.container_id",
    "workspaces.runtime_image_digest",
    "workspaces.runtime_image_id",
    "workspaces.url",
    "workspaces.observed_generation",
    "workspaces.restart_count",
    "workspaces.last_error",
    "workspaces.rollout",
];

/// [`RUN_PRIVILEGES`] one privilege a row, as (kind, object, privilege),
/// with UPDATE on each status column and the sequences the trail's and
/// the pin history's ids are drawn from (`nextval` takes USAGE or UPDATE;
/// USAGE is what is asked for).
fn run_privilege_rows() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    RUN_PRIVILEGES
        .iter()
        .flat_map(|(table, privileges)| {
            privileges
                .split(", ")
                .map(move |privilege| ("table", *table, privilege))
        })
        .chain(STATUS_COLUMNS.iter().map(|c| ("column", *c, "UPDATE")))
        .chain(
            ["runtime_image_pin_history", "workspace_events"]
                .map(|table| ("sequence", table, "USAGE")),
        )
}

/// This berth's migrations (its up migrations).
fn ours(migrator: &Migrator) -> impl Iterator<Item = &sqlx::migrate::Migration> {
    migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
}

/// The migrations applied with success, each with its checksum.
async fn applied(pool: &PgPool) -> Result<BTreeMap<i64, Vec<u8>>, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .bounded()
        .await?;
    if !exists {
        return Ok(BTreeMap::new());
    }
    let rows: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .bounded()
            .await?;
    Ok(rows.into_iter().collect())
}

/// Applies pending migrations, leaving a database whose floor is above this
/// berth untouched. A second run applies nothing. Migrations a newer berth
/// applied are not an error. With every migration of this berth applied as
/// it is here (same checksum), the migrator is not run at all: it creates
/// its table and takes its lock first, which a role that may run berth but
/// does not own its tables may not do.
pub async fn migrate(pool: &PgPool) -> Result<MigrateReport, SchemaError> {
    check_compatible(pool).await?;
    let before = applied(pool).await?;
    let migrator = migrator();
    // An edited migration is refused before the migrator runs, so a role
    // that may not run it hears the cause, not a refused lock.
    if let Some(edited) = ours(&migrator).find(|m| {
        before
            .get(&m.version)
            .is_some_and(|applied| *applied != m.checksum.to_vec())
    }) {
        return Err(SchemaError::Edited(edited.version));
    }
    let pending = ours(&migrator).any(|m| !before.contains_key(&m.version));
    if pending {
        migrator.run(pool).await?;
    }
    let applied = ours(&migrator)
        .filter(|m| !before.contains_key(&m.version))
        .map(|m| (m.version, m.description.to_string()))
        .collect();
    let floor = check_compatible(pool).await?.unwrap_or(SCHEMA_VERSION);
    Ok(MigrateReport { applied, floor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_literal_is_connected_to_without_its_url_brackets() {
        let o = connect_options("postgres://u:p@[::1]:5433/db").unwrap();
        assert_eq!((o.get_host(), o.get_port()), ("::1", 5433));
        let o = connect_options("postgresql://u@[2001:db8::7]/db").unwrap();
        assert_eq!(o.get_host(), "2001:db8::7");
        let o = connect_options("postgres://u@db.internal:5432/db").unwrap();
        assert_eq!(o.get_host(), "db.internal");
    }
}
