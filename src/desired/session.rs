//! The one dedicated PostgreSQL session: LISTEN for changes and hold the
//! host lease (DESIGN §4).
//!
//! The session's connection future ends the moment the session dies; that
//! instant berth stops mutating (the lease is withdrawn before it can
//! expire in the database), reconnects with backoff, LISTENs again and only
//! then asks for a full reread, so no change made while it was away is
//! missed.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::{AsyncMessage, Client, NoTls};
use tokio_util::sync::CancellationToken;

use crate::config::SecretUrl;
use crate::model::WorkspaceId;

/// The `application_name` of the session of `holder`, so an operator can
/// find it in `pg_stat_activity` (PostgreSQL keeps 63 bytes of it).
pub fn session_application_name(holder: &str) -> String {
    let mut name = format!("berth-session {holder}");
    let mut end = name.len().min(63);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    name
}

/// This instance's hold on its host: every fenced write names it.
///
/// Two leases are the same hold when host, holder and epoch are:
/// `until` moves at each renewal and is not compared.
#[derive(Clone, Debug)]
pub struct Lease {
    pub host: String,
    pub holder: String,
    pub epoch: i64,
    /// Until when, by this process's monotonic clock, it may act under
    /// the lease: `None` for a lease not renewed by this process's
    /// session (one read back, or made up in a test).
    pub until: Option<tokio::time::Instant>,
}

impl PartialEq for Lease {
    fn eq(&self, other: &Self) -> bool {
        (&self.host, &self.holder, self.epoch) == (&other.host, &other.holder, other.epoch)
    }
}

impl Eq for Lease {}

impl Lease {
    /// Whether the lease's term, by this process's clock, has not run
    /// out. The session withdraws a lease it cannot renew, but a process
    /// that was frozen (SIGSTOP, starved of CPU) runs its passes on before
    /// the session has asked again: they see here that the database may
    /// have given the host to another instance meanwhile.
    pub fn in_term(&self) -> bool {
        self.until
            .is_none_or(|until| tokio::time::Instant::now() < until)
    }
}

/// Whether `lease` still publishes `held` as this instance's hold, within
/// its term: asked right before each change berth makes on the engine.
pub fn still_holds(lease: &watch::Receiver<Option<Lease>>, held: &Lease) -> bool {
    lease
        .borrow()
        .as_ref()
        .is_some_and(|l| l == held && l.in_term())
}

/// The hold `lease` publishes now, when it is within its term.
pub fn holding(lease: &watch::Receiver<Option<Lease>>) -> Option<Lease> {
    lease.borrow().as_ref().filter(|l| l.in_term()).cloned()
}

/// What a notification (or a reconnect) asks the controller to reread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DesiredTrigger {
    Workspace(WorkspaceId),
    Pin {
        template: String,
        ring: String,
    },
    /// Reread everything: the session (re)connected.
    All,
    /// `berth refresh [runtime]`: re-resolve the moving tags (and local
    /// builds) of that runtime's workspaces, or of all when `None`.
    Refresh {
        runtime: Option<String>,
    },
}

/// The channel `berth refresh` notifies; its payload is a runtime name, or
/// empty for every runtime.
pub const REFRESH_CHANNEL: &str = "berth_refresh";

/// A name for this process as a lease holder: host name, pid and a random
/// suffix, so a restarted process is a new holder.
pub fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("{host}:{}:{:04x}", std::process::id(), fastrand::u16(..))
}

/// The session's settings.
#[derive(Clone, Debug)]
pub struct Session {
    pub url: SecretUrl,
    pub host: String,
    pub holder: String,
    pub ttl: Duration,
    /// The longest wait between reconnects (berth passes its resync
    /// interval, so a database that is back is listened to again within
    /// one resync).
    pub retry_max: Duration,
}

/// Takes the lease for `host` when it is free, expired, or already
/// `holder`'s; the epoch moves on whenever the holder changes. `None` when
/// another live holder has it. The holder writes its `ttl` into the row and
/// a lapse is judged by the holder's term, so a candidate with a shorter
/// TTL waits as long as the holder may still act.
pub async fn acquire(
    client: &Client,
    host: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Option<Lease>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "INSERT INTO host_leases AS l (host, holder, epoch, renewed_at, acquired_at, ttl)
             VALUES ($1, $2, 1, now(), now(), $3::float8 * interval '1 second')
             ON CONFLICT (host) DO UPDATE SET
                 holder = EXCLUDED.holder,
                 epoch = CASE WHEN l.holder = EXCLUDED.holder THEN l.epoch ELSE l.epoch + 1 END,
                 renewed_at = now(),
                 acquired_at = CASE WHEN l.holder = EXCLUDED.holder THEN l.acquired_at
                                    ELSE now() END,
                 ttl = EXCLUDED.ttl
              WHERE l.holder = EXCLUDED.holder
                 OR l.renewed_at < now() - coalesce(l.ttl, EXCLUDED.ttl)
             RETURNING epoch",
            &[&host, &holder, &ttl.as_secs_f64()],
        )
        .await?;
    Ok(row.map(|r| Lease {
        host: host.to_string(),
        holder: holder.to_string(),
        epoch: r.get(0),
        until: None,
    }))
}

/// Gives the lease up so a standby takes over at once; the epoch stays, so
/// the next holder's is higher.
pub async fn release(client: &Client, lease: &Lease) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE host_leases SET renewed_at = '-infinity'
              WHERE host = $1 AND holder = $2 AND epoch = $3",
            &[&lease.host, &lease.holder, &lease.epoch],
        )
        .await?;
    Ok(())
}

impl Session {
    /// Runs until `cancel`, publishing the lease (or `None` while this
    /// instance may not mutate) and the triggers the notifications carry.
    pub async fn run(
        self,
        triggers: mpsc::UnboundedSender<DesiredTrigger>,
        lease: watch::Sender<Option<Lease>>,
        cancel: CancellationToken,
    ) {
        let first = Duration::from_millis(200);
        let retries = || crate::backoff::exponential(first, self.retry_max.max(first));
        let mut backoff = retries();
        loop {
            let mut answered = false;
            let outcome = self
                .connected(&triggers, &lease, &cancel, &mut answered)
                .await;
            lease.send_replace(None);
            match outcome {
                Ok(()) => return,
                Err(error) => tracing::warn!(%error, "database session lost; reconnecting"),
            }
            // A session that listened and had a lease query answered was
            // healthy: the next outage starts its backoff over. One that
            // fails before that (a read-only or full database) keeps
            // backing off rather than reconnecting every 200 ms.
            if answered {
                backoff = retries();
            }
            let delay = backoff.next().unwrap_or(self.retry_max);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One session: connect, LISTEN, ask for a reread, then keep the lease
    /// until the connection dies (an error) or `cancel` (Ok, lease
    /// released).
    async fn connected(
        &self,
        triggers: &mpsc::UnboundedSender<DesiredTrigger>,
        lease_tx: &watch::Sender<Option<Lease>>,
        cancel: &CancellationToken,
        answered: &mut bool,
    ) -> Result<(), String> {
        let mut config: tokio_postgres::Config = self
            .url
            .expose()
            .parse()
            .map_err(|e| format!("database URL: {e}"))?;
        config.application_name(session_application_name(&self.holder));
        let (client, mut connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (dead_tx, mut dead) = oneshot::channel::<String>();
        let forward = triggers.clone();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            let why = loop {
                match messages.next().await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        match parse_notification(n.channel(), n.payload()) {
                            Some(t) => {
                                let _ = forward.send(t);
                            }
                            // The next resync covers whatever was meant.
                            None => tracing::debug!(
                                channel = n.channel(),
                                payload = %n.payload().chars().take(80).collect::<String>(),
                                "a notification berth cannot read: ignored"
                            ),
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break format!("connection: {e}"),
                    None => break "connection closed".to_string(),
                }
            };
            let _ = dead_tx.send(why);
        });
        // The driver holds the connection: it goes when this session does,
        // even when this future is dropped half-way.
        let _driver = AbortOnDrop(driver.abort_handle());
        self.hold(&client, triggers, lease_tx, cancel, &mut dead, answered)
            .await
    }

    async fn hold(
        &self,
        client: &Client,
        triggers: &mpsc::UnboundedSender<DesiredTrigger>,
        lease_tx: &watch::Sender<Option<Lease>>,
        cancel: &CancellationToken,
        dead: &mut oneshot::Receiver<String>,
        answered: &mut bool,
    ) -> Result<(), String> {
        client
            .batch_execute("LISTEN berth_workspaces; LISTEN berth_pins; LISTEN berth_refresh;")
            .await
            .map_err(|e| format!("listen: {e}"))?;
        let _ = triggers.send(DesiredTrigger::All);
        let every = self.ttl / 3;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A renewal is tried every ttl/3 and given ttl/3 to answer, so the
        // lease is withdrawn here at most 2/3 ttl after the last renewal,
        // before the database could let another instance take it. A
        // process frozen meanwhile withdraws nothing: its passes see the
        // term (`Lease::until`) run out instead.
        let mut standby_said = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    if let Some(lease) = lease_tx.send_replace(None) {
                        let _ = release(client, &lease).await;
                    }
                    return Ok(());
                }
                why = &mut *dead => {
                    return Err(why.unwrap_or_else(|_| "connection driver stopped".into()));
                }
                _ = tick.tick() => {
                    // The database renews from its clock when the query
                    // runs, after this: a term counted from here ends no
                    // later than the one the database grants. It ends a
                    // sixth of the TTL early, for the engine call a pass
                    // may just have sent.
                    let asked = tokio::time::Instant::now();
                    let attempt = tokio::time::timeout(
                        every,
                        acquire(client, &self.host, &self.holder, self.ttl),
                    )
                    .await;
                    if matches!(attempt, Ok(Ok(_))) {
                        *answered = true;
                    }
                    match attempt {
                        Ok(Ok(Some(mut lease))) => {
                            lease.until = Some(asked + self.ttl - self.ttl / 6);
                            // A renewal moves the term without waking
                            // those who follow the hold; a new hold wakes
                            // them.
                            lease_tx.send_if_modified(|current| {
                                let new = current.as_ref() != Some(&lease);
                                if new {
                                    tracing::info!(epoch = lease.epoch, host = %lease.host, "holding the host lease");
                                }
                                *current = Some(lease);
                                new
                            });
                        }
                        Ok(Ok(None)) => {
                            if lease_tx.send_replace(None).is_some() {
                                tracing::warn!(host = %self.host, "another instance took the host lease");
                            } else if !standby_said {
                                tracing::info!(
                                    host = %self.host,
                                    "standby: another instance holds the host lease; this one takes over when that lease lapses (BERTH_LEASE_TTL)"
                                );
                            }
                            standby_said = true;
                        }
                        Ok(Err(e)) => return Err(format!("lease: {e}")),
                        Err(_) => return Err("lease renewal timed out".into()),
                    }
                }
            }
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `berth_workspaces` carries a workspace id, `berth_pins`
/// `<template_name>/<ring>`, `berth_refresh` a runtime or nothing.
/// Anything else is ignored.
pub fn parse_notification(channel: &str, payload: &str) -> Option<DesiredTrigger> {
    match channel {
        "berth_workspaces" => payload.parse().ok().map(DesiredTrigger::Workspace),
        "berth_pins" => {
            let (template, ring) = payload.split_once('/')?;
            Some(DesiredTrigger::Pin {
                template: template.into(),
                ring: ring.into(),
            })
        }
        REFRESH_CHANNEL => Some(DesiredTrigger::Refresh {
            runtime: Some(payload.trim())
                .filter(|r| !r.is_empty())
                .map(str::to_string),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_hold_past_its_term_by_this_clock_is_no_hold_though_still_published() {
        let held = Lease {
            host: "h".into(),
            holder: "me".into(),
            epoch: 3,
            until: Some(tokio::time::Instant::now() + Duration::from_secs(10)),
        };
        let (tx, rx) = watch::channel(Some(held.clone()));
        assert!(still_holds(&rx, &held));
        assert_eq!(holding(&rx), Some(held.clone()));
        // A renewal moves the term; the hold is the same one.
        tokio::time::advance(Duration::from_secs(8)).await;
        tx.send_modify(|l| {
            if let Some(l) = l {
                l.until = Some(tokio::time::Instant::now() + Duration::from_secs(10));
            }
        });
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(still_holds(&rx, &held), "renewed 8 s ago for 10 s");
        // Frozen past the term: the session has not said otherwise yet,
        // and the hold is gone all the same.
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!still_holds(&rx, &held));
        assert_eq!(holding(&rx), None);
        // Another epoch is another hold, whatever its term.
        let next = Lease {
            epoch: 4,
            until: None,
            ..held.clone()
        };
        tx.send_replace(Some(next.clone()));
        assert!(!still_holds(&rx, &held));
        assert!(still_holds(&rx, &next));
    }

    #[test]
    fn notifications_parse_into_triggers() {
        let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert_eq!(
            parse_notification("berth_workspaces", id),
            Some(DesiredTrigger::Workspace(id.parse().unwrap()))
        );
        assert_eq!(
            parse_notification("berth_pins", "claude-code/stable"),
            Some(DesiredTrigger::Pin {
                template: "claude-code".into(),
                ring: "stable".into()
            })
        );
        assert_eq!(parse_notification("berth_workspaces", "nonsense"), None);
        assert_eq!(parse_notification("berth_pins", "no-slash"), None);
        assert_eq!(parse_notification("other", id), None);
        assert_eq!(
            parse_notification("berth_refresh", "claude-code"),
            Some(DesiredTrigger::Refresh {
                runtime: Some("claude-code".into())
            })
        );
        assert_eq!(
            parse_notification("berth_refresh", ""),
            Some(DesiredTrigger::Refresh { runtime: None })
        );
    }
}
