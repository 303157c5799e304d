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
    /// The detail names its cause in words that stay the same while the
    /// cause stands (the row's own fault, a name in the way), so a new
    /// detail under the same reason is a new cause. Other details count
    /// restarts or seconds.
    pub steady: bool,
    /// The row's change is not acted on yet (paused, or waiting for the
    /// rollout wave of the image it goes with): its generation stays
    /// unobserved.
    pub unobserved: bool,
}

impl StatusUpdate {
    pub fn plain(status: Status) -> Self {
        StatusUpdate {
            status,
            reason: None,
            detail: None,
            steady: false,
            unobserved: status == Status::Paused,
        }
    }

    pub fn reason(reason: Reason, detail: Option<String>) -> Self {
        StatusUpdate {
            status: reason.status(),
            reason: Some(reason),
            detail: detail.map(clip_error),
            steady: reason.is_refusal(),
            unobserved: false,
        }
    }

    /// This update for a row whose change waits: its generation stays
    /// [`unobserved`](Self::unobserved).
    pub fn unobserved(self) -> Self {
        StatusUpdate {
            unobserved: true,
            ..self
        }
    }

    /// This update, its detail marked [`steady`](Self::steady).
    pub fn steady(self) -> Self {
        StatusUpdate {
            steady: true,
            ..self
        }
    }

    /// Whether `row` already shows this update. The generation of a row
    /// whose change is not acted on (paused, waiting) stays unobserved
    /// until it is: it is not waiting for a write.
    pub fn shown_by(&self, row: &crate::model::WorkspaceRow) -> bool {
        row.status == Some(self.status)
            && row.status_reason == self.reason
            && row.last_error == self.detail
            && (row.observed_generation == row.generation || self.unobserved)
    }

    /// `plain`, with a `last_error` that says something still worth
    /// knowing.
    pub fn with_detail(status: Status, detail: String) -> Self {
        StatusUpdate {
            detail: Some(clip_error(detail)),
            ..Self::plain(status)
        }
    }
}

/// The most of a message `last_error` shows: an engine's answer can quote
/// a multi-kilobyte path twice; the row shows its start and says so.
pub const MAX_LAST_ERROR: usize = 2048;

fn clip_error(mut message: String) -> String {
    if message.len() > MAX_LAST_ERROR {
        let mut end = MAX_LAST_ERROR;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("… (cut)");
    }
    message
}
