//! The desired side: the database contract, read and written with sqlx,
//! and the one dedicated tokio-postgres session that holds LISTEN and the
//! host lease.

mod deadline;
mod images;
mod rows;
mod schema;
mod session;
mod write;

pub use deadline::{Bounded, CALL_DEADLINE, LOOP_READ_DEADLINE, STATEMENT_TIMEOUT, within};
pub use images::{
    HostImage, Made, NewImage, forget_image, host_images, mark_images_used, record_image,
};
pub(crate) use rows::readable_time;
pub use rows::{
    ReadError, RollbackTarget, halted_since_pinned, hosts_with_rows, load_catalogue, load_pins,
    load_row, load_rows, load_rows_by_id, no_rows_notice, pin_stable, pinned_before,
    rollback_target,
};
pub use schema::{
    MigrateReport, SCHEMA_VERSION, SchemaError, check_compatible, check_ready,
    check_run_privileges, connect, connect_options, lacks_privilege, migrate,
};
pub use session::{
    DesiredTrigger, Lease, REFRESH_CHANNEL, Session, acquire, holding, instance_id,
    parse_notification, release, session_application_name, still_holds,
};
pub use write::{
    Event, PinHalted, RolledBack, StatusWrite, Written, guard_latch, halt_pin, last_notes,
    mark_stable, prune_events, record_events, record_late_events, record_with_status, rolled_back,
    write_rollout, write_status,
};
