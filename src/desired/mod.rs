//! The desired side: the database contract, read and written with sqlx,
//! and the one dedicated tokio-postgres session that holds LISTEN and the
//! host lease.

mod rows;
mod schema;
mod session;
mod write;

pub use rows::{ReadError, load_catalogue, load_row, load_rows, load_rows_by_id};
pub use schema::{MigrateReport, SCHEMA_VERSION, SchemaError, check_compatible, connect, migrate};
pub use session::{
    DesiredTrigger, Lease, REFRESH_CHANNEL, Session, acquire, instance_id, parse_notification,
    release, session_application_name,
};
pub use write::{
    Event, StatusWrite, Written, halt_pin, mark_stable, prune_events, record_events, write_rollout,
    write_status,
};
