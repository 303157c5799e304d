//! The operator's commands other than `run`: `plan`, `status`, `events`,
//! `pin`, `rollback` and `refresh`. Each reads (and `pin`/`rollback` write,
//! `refresh` notifies) the database directly; none takes the host lease,
//! and only `plan` talks to Docker, through list and inspect calls alone.
//!
//! Every command returns its output as a value; `cli` prints it, as a
//! table or as JSON (`--json`). Errors carry the exit code of DESIGN §1.4.

mod confirm;
mod events;
mod guard;
mod pin;
mod plan;
mod refresh;
mod status;
mod table;

use std::time::Duration;

use sqlx::PgPool;

pub use confirm::{Confirm, confirm};
pub use events::{EventView, EventsView, events, render_events};
pub use guard::{GuardTrip, recent_guard_trips, render_guard_trips};
pub use pin::{PinChange, PinRequest, Touched, apply_pin, prepare_pin, prepare_rollback};
pub use plan::{HostPlan, plan};
pub use refresh::{OnTag, RefreshView, refresh};
pub use status::{
    HostLease, HostView, RecentHalt, StatusFilter, StatusJson, StatusView, host_leases, host_views,
    recent_halts, render_halts, render_hosts, render_status, status,
};
pub use table::{Table, age, short_digest};

use crate::cli::Exit;
use crate::config::Config;
use crate::desired::{self, ReadError, SchemaError};
use crate::docker::DockerError;

/// Why a command failed; [`OpsError::exit`] is its exit code.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Bad usage: an unknown runtime, a malformed digest, an ambiguous
    /// name, a change refused for want of `--yes`.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("cannot reach the Docker Engine: {0}")]
    Docker(#[source] DockerError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Writing the output failed (a reader that is gone is no failure).
    #[error("writing to stdout: {0}")]
    Output(#[source] std::io::Error),
    /// Anything else, in words.
    #[error("{0}")]
    Failed(String),
}

impl OpsError {
    pub fn exit(&self) -> Exit {
        match self {
            OpsError::Usage(_) => Exit::Usage,
            OpsError::Schema(e) => crate::cli::schema_exit(e),
            // The engine did not answer as an engine (refused, gone, or
            // something else listening there): it is not reachable.
            OpsError::Docker(_) => Exit::Unavailable,
            OpsError::Database(e) | OpsError::Read(ReadError::Database(e)) if unreachable(e) => {
                Exit::Unavailable
            }
            OpsError::Database(e) | OpsError::Read(ReadError::Database(e))
                if desired::lacks_privilege(e) =>
            {
                Exit::Usage
            }
            _ => Exit::Failure,
        }
    }
}

/// The database went away under a command (connection refused or lost, a
/// pool that cannot hand out a connection).
fn unreachable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
    )
}

/// Connects for a command: a small pool, a schema this berth can read.
/// Nothing is migrated and no lease is taken.
pub async fn connect(config: &Config) -> Result<PgPool, OpsError> {
    let pool = desired::connect(&config.database_url, 2, Duration::from_secs(10)).await?;
    if let Err(e) = desired::check_ready(&pool).await {
        let error = if e.refused_user() {
            read_refused(&pool, &e).await
        } else {
            e.into()
        };
        pool.close().await;
        return Err(error);
    }
    Ok(pool)
}

/// A role refused reading berth's tables, with the grant that lets every
/// command read (`berth pin` and `rollback` write the pins as well; `berth
/// run` checks and names what it writes at its start).
async fn read_refused(pool: &PgPool, error: &SchemaError) -> OpsError {
    let role: String = sqlx::query_scalar("SELECT quote_ident(current_user)")
        .fetch_one(pool)
        .await
        .unwrap_or_else(|_| "<this role>".into());
    OpsError::Usage(format!(
        "the database role {role} may not read berth's tables ({error}); as their owner, run: \
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"
    ))
}
