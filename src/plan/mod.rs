//! The pure planner: row → container spec, facts → actions. No I/O, no
//! clock (now is an input), no async.
//!
//! - [`spec()`] builds the container a row asks for, or says why it cannot.
//! - [`hash`] versions and compares the fields that make a container
//!   different.
//! - [`plan()`] decides the actions for one workspace from its [`Facts`];
//!   [`plan_pass`] does so for every key of a host and applies the guards
//!   that need the whole pass.

mod action;
mod change;
mod current;
mod facts;
pub mod hash;
mod image;
mod pass;
mod ready;
mod rules;
mod running;
mod settings;
mod spec;
mod status;
mod validate;

pub use action::{Action, Change, Op, Plan, Restore, Target, Why};
pub use facts::{Catalogue, Facts, Failure, Memory, Probes};
pub use pass::{PassIndex, PassPlan, Snapshot, apply_delete_guard, plan_key, plan_pass};
pub use rules::plan;
pub use settings::Settings;
pub use spec::{InvalidSpec, spec};
pub use status::{Phase, StatusUpdate};

#[cfg(test)]
mod tests;
