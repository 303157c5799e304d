//! The desired side: the database contract, read and written with sqlx.

mod schema;

pub use schema::{MigrateReport, SCHEMA_VERSION, SchemaError, check_compatible, connect, migrate};
