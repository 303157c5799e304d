//! Readiness (DESIGN §2 rule 9) and the crash-loop window (rule 6).

use chrono::{DateTime, TimeDelta, Utc};

use crate::model::{ContainerState, Health, ObservedContainer, Reason, Status, WorkspaceRow};

use super::{Memory, Settings};

/// The window restarts are counted in.
pub const CRASH_WINDOW: TimeDelta = TimeDelta::minutes(10);
/// At most this many restart times are remembered per key.
const MAX_REMEMBERED: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Running but not ready; ready by the uptime rule at `at`, if it has
    /// no other signal.
    NotYet {
        at: Option<DateTime<Utc>>,
    },
    /// Not running.
    Down,
}

/// Health `healthy` when the image has a health check; else a heartbeat
/// newer than the start; else running for the minimum uptime since its
/// last (re)start.
pub fn readiness(
    c: &ObservedContainer,
    heartbeat: Option<DateTime<Utc>>,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Readiness {
    if c.state != ContainerState::Running {
        return Readiness::Down;
    }
    match c.health {
        Health::Healthy => Readiness::Ready,
        Health::Starting | Health::Unhealthy => Readiness::NotYet { at: None },
        Health::None => {
            let Some(started) = c.started_at else {
                return Readiness::NotYet { at: None };
            };
            if heartbeat.is_some_and(|h| h > started) {
                return Readiness::Ready;
            }
            let at = after(started, settings.ready_min_uptime);
            if at <= now {
                Readiness::Ready
            } else {
                Readiness::NotYet { at: Some(at) }
            }
        }
    }
}

/// What the row says while a running container is not ready yet: a health
/// check that already reports `unhealthy` (it may still recover before the
/// deadline), else nothing.
pub fn waiting_detail(c: &ObservedContainer) -> Option<String> {
    (c.health == Health::Unhealthy).then(|| {
        "the container's health check reports unhealthy; it is given until the provision deadline"
            .to_string()
    })
}

/// Folds Docker's restart count into the remembered restart times and
/// drops the ones older than the window. The times are one container's:
/// another container (a replace, a re-create) starts with none.
pub fn track_restarts(memory: &mut Memory, c: &ObservedContainer, now: DateTime<Utc>) {
    match &memory.restart_seen {
        Some((id, seen)) if *id == c.id && c.restart_count > *seen => {
            let new = (c.restart_count - seen).min(MAX_REMEMBERED as u32);
            memory.restarts.extend((0..new).map(|_| now));
        }
        Some((id, _)) if *id != c.id => {
            memory.restarts.clear();
            memory.last_exit = None;
        }
        _ => {}
    }
    if c.state != ContainerState::Running
        && let Some(code) = c.exit_code
    {
        memory.last_exit = Some((code, c.oom_killed));
    }
    memory.restart_seen = Some((c.id.clone(), c.restart_count));
    prune(memory, now);
}

/// A berth that first sees a container its row shows crash looping
/// (`degraded/crash_loop`, this container) knows none of the restarts
/// before it started: the row's word stands for them, as restarts at the
/// container's latest start, so the loop shows on until the container has
/// stayed up a whole window. A container up longer than that is judged
/// afresh.
pub fn seed_restarts(
    memory: &mut Memory,
    row: &WorkspaceRow,
    c: &ObservedContainer,
    settings: &Settings,
    now: DateTime<Utc>,
) {
    let looping = row.status == Some(Status::Degraded)
        && row.status_reason == Some(Reason::CrashLoop)
        && row.container_id.as_deref() == Some(c.id.as_str());
    if memory.restart_seen.is_some() || !looping {
        return;
    }
    if let Some(started) = c.started_at.filter(|t| now - *t < CRASH_WINDOW) {
        let n = (settings.crash_loop_restarts as usize).min(MAX_REMEMBERED);
        memory.restarts = vec![started; n];
    }
}

pub fn prune(memory: &mut Memory, now: DateTime<Utc>) {
    memory.restarts.retain(|t| now - *t < CRASH_WINDOW);
    let excess = memory.restarts.len().saturating_sub(MAX_REMEMBERED);
    memory.restarts.drain(..excess);
}

/// Restarts in the window reach `BERTH_CRASH_LOOP_RESTARTS`.
pub fn crash_looping(memory: &Memory, settings: &Settings) -> bool {
    settings.crash_loop_restarts > 0
        && memory.restarts.len() >= settings.crash_loop_restarts as usize
}

pub fn delta(d: std::time::Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// `t + d`, saturating at the end of time (a configured duration of a
/// thousand years is a deadline that never comes, not a panic).
pub fn after(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    t.checked_add_signed(delta(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `later - earlier` as a std duration, zero when negative.
pub fn since(earlier: DateTime<Utc>, later: DateTime<Utc>) -> std::time::Duration {
    (later - earlier).to_std().unwrap_or_default()
}
