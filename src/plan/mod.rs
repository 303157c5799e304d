//! The pure planner: row → container spec, facts → actions. No I/O, no
//! clock (now is an input), no async.
//!
//! - [`spec()`] builds the container a row asks for, or says why it cannot.
//! - [`hash`] versions and compares the fields that make a container
//!   different.
//! - [`plan()`] decides the actions for one workspace from its [`Facts`];
//!   [`plan_pass`] does so for every key of a host and applies the guards
//!   that need the whole pass; [`plan_key`] plans one key of a snapshot.
//!
//! Where DESIGN.md is silent the planner holds to these choices:
//! - `TIER` in the env is the row's tier as written (as the Go code passes
//!   it); the host config uses the effective tier. `TIER1_*` overrides
//!   apply to T1 when set (the Go code ignored them; defaults are equal).
//! - Unknown Docker state for a key means no action at all for it. An
//!   incomplete container list means no create and no replace either
//!   (absence is not known); a `removed` row's removals go ahead.
//! - A row that cannot make a spec leaves its container alone and shows
//!   `failed`; a `stopped` row still stops. A `removed` row whose name a
//!   stranger holds keeps its volumes (the stranger may mount them).
//! - The Go provisioner's /workspace volume carries no label (Docker made
//!   it through the bind); its name holds the full id, so it is adopted
//!   as the workspace's. Other unlabelled volumes under a workspace's
//!   names are a stranger's: `name_conflict`.
//! - An orphan's age counts from the first pass that saw it without a row.
//!   Legacy objects naming no row, or several, are never touched: they
//!   are listed in [`PassPlan::unattributed`].
//! - A session volume without the epoch label (the Go code's) counts as
//!   current. A session reset is the one replace without a way back:
//!   Docker removes no volume a container still holds.
//! - `restart_epoch`: the container's label records the epoch it was
//!   created with; it is restarted once when the row's is larger, it last
//!   started before the row's last change, and memory has not restarted
//!   it for that epoch yet. The row's files are written into /configs
//!   again before that restart (or that start, for a stopped container).
//! - A rolled-back spec is not tried again until the desired spec changes
//!   (memory: a restarted berth tries once more).
//! - A container with another hash version and no inspected material is
//!   unchanged; a moving tag's unknown digest is no change.
//! - Local-build mode reads no pins. Containers Docker shows as paused are
//!   left alone.

mod action;
mod change;
mod current;
mod delete_guard;
mod dirs;
mod facts;
pub mod hash;
mod image;
mod interrupted;
mod pass;
mod ready;
mod rules;
mod running;
mod settings;
mod spec;
mod status;
mod validate;

pub use action::{Action, Change, Op, Plan, Restore, Target, Why};
pub use delete_guard::{GUARD_HINT, apply_delete_guard};
pub use facts::{Catalogue, Facts, Failure, Memory, Probes, RefreshFailure, image_identity};
pub use image::{LOCAL_BUILD_REPOSITORY, choose as choose_image, names_registry};
pub use pass::{PassIndex, PassPlan, Snapshot, plan_key, plan_pass};
pub use rules::plan;
pub use running::volumes_gone_note;
pub use settings::Settings;
pub use spec::{InvalidSpec, spec};
pub use status::{Phase, StatusUpdate};

#[cfg(test)]
mod tests;
