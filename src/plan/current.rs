//! Rules 6 and 9 for the container that is the workspace's: restart once
//! per `restart_epoch`, start a stopped container with berth's backoff,
//! count crash-loop restarts, judge readiness and the provision timeout.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{
    ContainerSpec, ContainerState, Health, LABEL_RESTART_EPOCH, ObservedContainer, Reason, Status,
    WorkspaceRow,
};

use super::StatusUpdate;
use super::ready::{Readiness, after, crash_looping, readiness, since, track_restarts};
use super::running::{backing_off, deadline};
use super::{Facts, Memory, Op, Phase, Plan, Target, Why};

pub(super) fn timed_out(f: &Facts, phase: Phase, p: &mut Plan) {
    let timeout = humantime::format_duration(f.provision_timeout);
    let mut detail = format!("not ready within {timeout} of the change: stalled in {phase}");
    if let Some(fl) = &p.memory.failure {
        detail.push_str(&format!(" ({})", fl.message));
    }
    p.status = Some(StatusUpdate::reason(Reason::ProvisionTimeout, Some(detail)));
}

/// A container made to the spec but never started (a berth stopped between
/// the steps, or filling it failed): fill and start it, once a failure of
/// these steps (no config.yaml, an engine error) has waited out its retry
/// time, as a create would; `blocked` words that wait on the row.
pub(super) fn fill_created(
    spec: &ContainerSpec,
    c: &ObservedContainer,
    now: DateTime<Utc>,
    p: &mut Plan,
    blocked: impl Fn(&super::Failure) -> StatusUpdate,
) {
    if let Some(fl) = backing_off(&p.memory, spec, now) {
        p.status = Some(blocked(fl));
        p.requeue(since(now, fl.retry_at));
        return;
    }
    let target = || Target::Id(c.id.clone());
    p.push(
        Op::WriteFiles {
            target: target(),
            files: spec.files.clone(),
        },
        Why::NotStarted,
    );
    p.push(Op::Start { target: target() }, Why::NotStarted);
    p.status = Some(StatusUpdate::reason(Reason::Starting, None));
    p.requeue(Duration::from_secs(1));
}

/// `online/rolled_back` with why the change was undone.
fn undone(memory: &Memory) -> StatusUpdate {
    let why = memory
        .rolled_back_why
        .as_deref()
        .map_or(String::new(), |w| format!("{w}; "));
    let detail = format!(
        "{why}the wanted change was undone and is tried again when the row or its image changes"
    );
    StatusUpdate::reason(Reason::RolledBack, Some(detail))
}

/// A container that was ready and reports unhealthy: given the runtime's
/// provision timeout to recover, as a start is, then restarted in place
/// (its volumes and /configs as they are), as Docker's swarm mode or the
/// kubelet's liveness probe would. Each restart counts towards the crash
/// loop, so one that keeps failing its check shows `degraded/crash_loop`;
/// it is restarted at most once per timeout, crash loop or not. Meanwhile
/// the row
/// stays `online` (it was, and a berth restarted meanwhile judges it as
/// one that was ready) with `last_error` saying what berth sees and will
/// do.
fn unhealthy(f: &Facts, c: &ObservedContainer, now: DateTime<Utc>, p: &mut Plan) {
    let stamp = |t: DateTime<Utc>| t.format("%H:%M:%S UTC").to_string();
    let detail = if c.health == Health::Unhealthy {
        if p.memory.unhealthy_start != c.started_at {
            p.memory.unhealthy_since = None;
            p.memory.unhealthy_start = c.started_at;
        }
        let since_at = *p.memory.unhealthy_since.get_or_insert(now);
        let restart_at = after(since_at, f.provision_timeout);
        // Only on a complete picture of the engine: a health state from a
        // list that may be stale restarts nothing.
        if now >= restart_at && f.observed_complete {
            p.push(
                Op::Restart {
                    target: Target::Id(c.id.clone()),
                    timeout: f.settings.stop_timeout,
                },
                Why::Unhealthy { since: since_at },
            );
            p.memory.unhealthy_since = None;
            p.memory.health_restarted_at = Some(now);
            p.memory.restarts.push(now);
            p.requeue(f.settings.ready_min_uptime);
            format!(
                "restarted at {}: its health check reported unhealthy since {}",
                stamp(now),
                stamp(since_at)
            )
        } else {
            p.requeue(since(now, restart_at));
            format!(
                "its health check reports unhealthy since {}; berth restarts it at {} unless it recovers",
                stamp(since_at),
                stamp(restart_at)
            )
        }
    } else {
        p.requeue(Duration::from_secs(5));
        let at = p.memory.health_restarted_at.unwrap_or(now);
        format!(
            "restarted at {} after its health check reported unhealthy; waiting for it to report healthy",
            stamp(at)
        )
    };
    p.status = Some(if crash_looping(&p.memory, f.settings) {
        let detail = format!(
            "{} restarts within 10 min; {detail}",
            p.memory.restarts.len()
        );
        StatusUpdate::reason(Reason::CrashLoop, Some(detail))
    } else {
        StatusUpdate::with_detail(Status::Online, detail)
    });
}

/// Rules 6 and 9 for the container that matches the spec (or serves after
/// a rolled-back change). `spec` is `None` for the container of the last
/// spec of a row that makes none now (an edit berth refuses): it is looked
/// after all the same, without the files a restart writes again; the
/// caller passes only a container that has run.
pub(super) fn current(
    f: &Facts,
    row: &WorkspaceRow,
    spec: Option<&ContainerSpec>,
    c: &ObservedContainer,
    rolled_back: bool,
    now: DateTime<Utc>,
    p: &mut Plan,
) {
    let s = f.settings;
    super::ready::seed_restarts(&mut p.memory, row, c, s, now);
    track_restarts(&mut p.memory, c, now);
    let target = || Target::Id(c.id.clone());
    // Without memory of the attempt (a berth restarted since), it began
    // no later than the container's creation: a container made moments
    // ago for a row changed long ago is not timed out at once.
    let deadline = match p.memory.provisioning_since {
        Some(_) => deadline(f, row, &p.memory),
        // The container put back after an undo, found by a berth that
        // restarted as it was put back (the row still says provisioning,
        // the memory of it is gone): it comes up again on a clock of its
        // own, not against the undone change's deadline.
        None if rolled_back && p.memory.ready_container.is_none() => {
            p.memory.provisioning_since = Some(now);
            deadline(f, row, &p.memory)
        }
        None => {
            let from_create = after(row.desired_changed_at.max(c.created), f.provision_timeout);
            // A container that has run and is down, older than the
            // timeout, found without memory of it (a berth restarted, say
            // after it stopped the container for a replace it never got
            // on with): starting it again is a fresh attempt, timed from
            // now, not a timeout at once that leaves it down.
            if now >= from_create && c.state == ContainerState::Exited && c.started_at.is_some() {
                p.memory.provisioning_since = Some(now);
                deadline(f, row, &p.memory)
            } else {
                from_create
            }
        }
    };
    let been_ready = p.memory.ready_container.as_deref() == Some(c.id.as_str())
        || (row.container_id.as_deref() == Some(c.id.as_str())
            && matches!(row.status, Some(Status::Online | Status::Degraded)));
    let timed_out_now = !been_ready && now >= deadline;
    let label_epoch: i64 = c
        .label(LABEL_RESTART_EPOCH)
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    let wants_restart = row.restart_epoch > label_epoch
        && p.memory.restarted_epoch != Some(row.restart_epoch)
        && c.started_at
            .is_none_or(|t| t < row.restart_requested_at.unwrap_or(row.desired_changed_at));
    let looping = |m: &Memory| crash_looping(m, s);
    let crash_status = |m: &Memory| {
        let exit = m.last_exit.map_or(String::new(), |(code, _)| {
            format!("; last exit code {code}")
        });
        let oom = if m.last_exit.is_some_and(|(_, oom)| oom) {
            ", OOM killed"
        } else {
            ""
        };
        let detail = format!("{} restarts within 10 min{exit}{oom}", m.restarts.len());
        StatusUpdate::reason(Reason::CrashLoop, Some(detail))
    };
    let why_restart = || Why::RestartEpoch {
        from: label_epoch,
        to: row.restart_epoch,
    };
    // A restart asked for by the row writes the row's files again first
    // (into the running container: /configs is a volume), so an edited
    // auth_token, config_files or template reaches the workspace with it,
    // as the Go provisioner's restart did.
    let rewrite = |p: &mut Plan| {
        if let Some(spec) = spec.filter(|s| !s.files.is_empty()) {
            p.push(
                Op::WriteFiles {
                    target: target(),
                    files: spec.files.clone(),
                },
                why_restart(),
            );
        }
    };
    // A running container off the network it was made on (detached by
    // hand) has lost its alias and its published port: joined again, on
    // a complete picture of the engine. The network is the container's
    // own (one put back after an undo was made for another spec), and
    // only a named one: the host's, none and the default bridge are no
    // network a container leaves.
    let own_network = c
        .material
        .as_ref()
        .map(|m| m.network_mode.as_str())
        .filter(|n| !matches!(*n, "" | "host" | "none" | "default" | "bridge"))
        .filter(|n| !n.starts_with("container:"));
    let detached = own_network.filter(|network| {
        c.state == ContainerState::Running
            && f.observed_complete
            && c.networks
                .as_ref()
                .is_some_and(|n| !n.iter().any(|x| x == network))
    });
    if let Some(network) = detached {
        p.push(
            Op::Connect {
                target: target(),
                network: network.to_string(),
                aliases: spec
                    .map(|s| &s.material)
                    .or(c.material.as_ref())
                    .map(|m| m.network_aliases.clone())
                    .unwrap_or_default(),
            },
            Why::Detached {
                network: network.to_string(),
            },
        );
    }
    match c.state {
        ContainerState::Running if wants_restart => {
            rewrite(p);
            p.push(
                Op::Restart {
                    target: target(),
                    timeout: s.stop_timeout,
                },
                why_restart(),
            );
            p.memory.restarted_epoch = Some(row.restart_epoch);
            p.status = Some(StatusUpdate::reason(Reason::Starting, None));
            p.requeue(s.ready_min_uptime);
        }
        ContainerState::Created if c.started_at.is_none() => {
            if timed_out_now {
                return timed_out(f, Phase::Start, p);
            }
            if let Some(spec) = spec {
                fill_created(spec, c, now, p, |fl| {
                    StatusUpdate::reason(fl.reason, Some(fl.message.clone()))
                });
            }
        }
        ContainerState::Created | ContainerState::Exited => {
            if timed_out_now {
                return timed_out(f, Phase::Start, p);
            }
            if wants_restart {
                rewrite(p);
                p.memory.restarted_epoch = Some(row.restart_epoch);
            }
            match p.memory.next_start_at.filter(|t| *t > now) {
                Some(at) => p.requeue(since(now, at)),
                None => {
                    let attempt = p.memory.own_starts.saturating_add(1);
                    let why = Why::CrashStart {
                        attempt,
                        exit_code: c.exit_code,
                        oom: c.oom_killed,
                    };
                    p.push(Op::Start { target: target() }, why);
                    p.memory.own_starts = attempt;
                    let backoff = s.crash_backoff(attempt - 1);
                    p.memory.next_start_at = Some(after(now, backoff));
                    p.memory.restarts.push(now);
                    p.requeue(backoff);
                }
            }
            p.status = Some(if looping(&p.memory) {
                crash_status(&p.memory)
            } else {
                StatusUpdate::reason(Reason::Starting, None)
            });
        }
        ContainerState::Restarting => {
            p.status = Some(if looping(&p.memory) {
                crash_status(&p.memory)
            } else {
                StatusUpdate::reason(Reason::Starting, None)
            });
            p.requeue(Duration::from_secs(5));
        }
        ContainerState::Running => match readiness(c, row.last_heartbeat_at, s, now) {
            Readiness::Ready => {
                p.memory.ready_container = Some(c.id.clone());
                p.memory.unhealthy_since = None;
                p.memory.health_restarted_at = None;
                p.memory.own_starts = 0;
                p.memory.next_start_at = None;
                p.memory.provisioning_since = None;
                if !rolled_back {
                    p.memory.failure = None;
                }
                p.status = Some(if looping(&p.memory) {
                    crash_status(&p.memory)
                } else if rolled_back {
                    undone(&p.memory)
                } else if let Some(failed) = &f.refresh_failure {
                    let detail = format!(
                        "refreshing the image failed: {}; the running image keeps serving",
                        failed.message
                    );
                    if failed.blocks_change {
                        StatusUpdate::reason(Reason::ChangeBlocked, Some(detail))
                    } else {
                        StatusUpdate::with_detail(Status::Online, detail)
                    }
                } else {
                    StatusUpdate::plain(Status::Online)
                });
                if let Some(first) = p.memory.restarts.first() {
                    p.requeue(since(
                        now,
                        first
                            .checked_add_signed(super::ready::CRASH_WINDOW)
                            .unwrap_or(now),
                    ));
                }
            }
            Readiness::NotYet { at } => {
                // A container that was ready and fails its check is
                // restarted once per timeout even while its restarts make
                // a crash loop (the row says so): left alone, it stays
                // dead until the window rolls off.
                let health_failing = been_ready
                    && !rolled_back
                    && (c.health == Health::Unhealthy || p.memory.health_restarted_at.is_some());
                if health_failing {
                    return unhealthy(f, c, now, p);
                } else if looping(&p.memory) {
                    p.status = Some(crash_status(&p.memory));
                } else if timed_out_now {
                    return timed_out(f, Phase::Readiness, p);
                } else if rolled_back && been_ready {
                    // The previous container, back after a change was
                    // undone, comes up again: the row keeps saying why
                    // rather than flapping through `provisioning`.
                    p.status = Some(undone(&p.memory));
                } else {
                    p.status = Some(StatusUpdate::reason(
                        Reason::WaitingReady,
                        super::ready::waiting_detail(c),
                    ));
                }
                if let Some(at) = at {
                    p.requeue(since(now, at));
                }
                if !been_ready {
                    p.requeue(since(now, deadline));
                }
            }
            Readiness::Down => {}
        },
        ContainerState::Paused => {
            // Frozen by someone on purpose (a debugger, a forensic look):
            // berth leaves it so, and the row says it answers nothing.
            p.notes
                .push("container is Paused in Docker: berth leaves it so".into());
            let detail = "the container is paused in Docker (docker pause): it answers nothing until `docker unpause`".to_string();
            p.status = Some(if been_ready {
                StatusUpdate::with_detail(Status::Online, detail)
            } else if timed_out_now {
                return timed_out(f, Phase::Readiness, p);
            } else {
                p.requeue(since(now, deadline));
                StatusUpdate::reason(Reason::WaitingReady, Some(detail))
            });
        }
        ContainerState::Removing | ContainerState::Dead => {
            p.notes.push(format!(
                "container is {:?} in Docker: berth leaves it so",
                c.state
            ));
        }
    }
}
