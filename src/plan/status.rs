//! What the row shows: status, reason and detail, and the phases a
//! provision timeout names.

use std::fmt;

use crate::model::{Reason, Status};

/// The stalled phase a `provision_timeout` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pull,
    Build,
    Create,
    Start,
    Readiness,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Pull => "pull",
            Phase::Build => "build",
            Phase::Create => "create",
            Phase::Start => "start",
            Phase::Readiness => "readiness",
        })
    }
}

impl Phase {
    /// The reason a row shows while this phase runs, and while a failure
    /// of it that has no reason of its own (the engine erred, a deadline
    /// passed) waits for its retry.
    pub fn reason(self) -> Reason {
        match self {
            Phase::Pull => Reason::Pulling,
            Phase::Build => Reason::Building,
            Phase::Create => Reason::Creating,
            Phase::Start => Reason::Starting,
            Phase::Readiness => Reason::WaitingReady,
        }
    }
}

/// The status, reason and `last_error` the row should show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusUpdate {
    pub status: Status,
    pub reason: Option<Reason>,
    pub detail: Option<String>,
}

impl StatusUpdate {
    pub fn plain(status: Status) -> Self {
        StatusUpdate {
            status,
            reason: None,
            detail: None,
        }
    }

    pub fn reason(reason: Reason, detail: Option<String>) -> Self {
        StatusUpdate {
            status: reason.status(),
            reason: Some(reason),
            detail,
        }
    }
}
