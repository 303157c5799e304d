//! Domain types shared by every stage of the pipeline.
//!
//! The settings types here are parsed by `config` and read by the planner;
//! they hold values that are already valid. The submodules hold the
//! identifiers and names (`ids`), the rows of the database (`row`), what
//! Docker shows (`observed`), the container spec the planner builds
//! (`spec`) and the closed status table (`status`).

use std::fmt;

mod ids;
mod observed;
mod row;
mod spec;
mod status;

pub use ids::{
    Digest, ImageRef, InvalidValue, LABEL_HOST, LABEL_IMAGE_DIGEST, LABEL_IMAGE_ID, LABEL_MANAGED,
    LABEL_RESTART_EPOCH, LABEL_SESSION_EPOCH, LABEL_SPEC_HASH, LABEL_WORKSPACE, WorkspaceId,
};
pub use observed::{ContainerState, Health, ObservedContainer, ObservedVolume, ResolvedImage};
pub use row::{DesiredState, PinRow, RuntimeRow, WorkspaceAccess, WorkspaceRow, reached};
pub use spec::{
    ContainerSpec, EnvVar, FilesSpec, ImageSource, MAX_CONFIG_BYTES, Material, OtherDir, Tier,
    VolumeSpec, is_configs_path, strip_crlf,
};
pub use status::{Reason, Status};

/// A value that must never be printed: `Debug` and `Display` show a mask.
/// Read it with [`Secret::expose`] at the one place that needs it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How many orphan and duplicate removals one pass may make
/// (`BERTH_DELETE_GUARD`: `N`, `N%`, or the default `max(5, 10%)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteGuard {
    /// At most this many removals per pass.
    Count(u32),
    /// At most this percentage (0..=100) of the pass's workspaces, rounded
    /// down.
    Percent(u32),
    /// `max(5, 10%)`.
    Default,
}

impl DeleteGuard {
    /// The most removals allowed in a pass over `total` workspaces.
    pub fn limit(self, total: usize) -> usize {
        let percent = |p: u32| total.saturating_mul(p as usize) / 100;
        match self {
            DeleteGuard::Count(n) => n as usize,
            DeleteGuard::Percent(p) => percent(p),
            DeleteGuard::Default => percent(10).max(5),
        }
    }
}

impl fmt::Display for DeleteGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeleteGuard::Count(n) => write!(f, "{n}"),
            DeleteGuard::Percent(p) => write!(f, "{p}%"),
            DeleteGuard::Default => f.write_str("max(5, 10%)"),
        }
    }
}

/// Operator overrides of the tier resources (`TIERn_MEMORY_MB`,
/// `TIERn_CPU_SHARES`), indexed by tier - 1. `None` keeps the tier's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierOverrides {
    pub memory_mb: [Option<u64>; 4],
    pub cpu_shares: [Option<u64>; 4],
}

/// An image platform, `os/arch[/variant]`, passed to pull and create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform(pub String);

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_shows_its_value() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn delete_guard_default_is_the_larger_of_five_and_ten_percent() {
        assert_eq!(DeleteGuard::Default.limit(0), 5);
        assert_eq!(DeleteGuard::Default.limit(49), 5);
        assert_eq!(DeleteGuard::Default.limit(100), 10);
        assert_eq!(DeleteGuard::Default.limit(1000), 100);
        assert_eq!(DeleteGuard::Percent(25).limit(10), 2);
        assert_eq!(DeleteGuard::Count(3).limit(1000), 3);
    }
}
