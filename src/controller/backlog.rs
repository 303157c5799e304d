//! Events of steps that were carried out while the database could not
//! take them (it went away mid-pass): kept, with the time each step ended,
//! and written once the database answers. Those of the lease this instance
//! holds are written fenced, as any event (a lease that comes back within
//! [`HOLD`] after an outage is the same lease); those of a lease it lost
//! since are history of steps really taken: written unfenced, marked late,
//! under the epoch they were taken in, off the loop.

use sqlx::PgPool;

use crate::desired::{self, Event, Lease};

/// The most events kept; the oldest go first beyond it.
const MOST: usize = 10_000;
/// How often, and how many times, a lost lease's events are offered to a
/// database that does not take them.
const LATE_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
const LATE_TRIES: u32 = 720;
/// How long events wait, while this instance holds no lease, for their
/// own lease to come back (a database outage shorter than the lease's
/// lapse gives the same lease back): then they are recorded as any event.
/// After it they are recorded late.
pub(super) const HOLD: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Default)]
pub(super) struct Backlog {
    /// By the lease the pass held, with when each was kept, oldest first.
    events: Vec<(Lease, Event, tokio::time::Instant)>,
}

impl Backlog {
    pub(super) fn keep(&mut self, lease: &Lease, events: Vec<Event>) {
        let now = tokio::time::Instant::now();
        self.events
            .extend(events.into_iter().map(|e| (lease.clone(), e, now)));
        if self.events.len() > MOST {
            let dropped = self.events.len() - MOST;
            self.events.drain(..dropped);
            tracing::warn!(
                dropped,
                "too many events wait for the database: the oldest are not recorded"
            );
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Hands the events of leases other than `holding` (the one this
    /// instance holds now, if any) kept longer than `hold` to a task that
    /// records them late.
    pub(super) fn send_lost(
        &mut self,
        pool: &PgPool,
        holding: Option<&Lease>,
        hold: std::time::Duration,
    ) {
        let (mine, lost): (Vec<_>, Vec<_>) = std::mem::take(&mut self.events)
            .into_iter()
            .partition(|(l, _, kept)| Some(l) == holding || kept.elapsed() < hold);
        self.events = mine;
        let mut by_lease: Vec<(Lease, Vec<Event>)> = Vec::new();
        for (lease, event, _) in lost {
            match by_lease.iter_mut().find(|(l, _)| *l == lease) {
                Some((_, events)) => events.push(event),
                None => by_lease.push((lease, vec![event])),
            }
        }
        for (lease, events) in by_lease {
            let pool = pool.clone();
            tokio::spawn(async move {
                for _ in 0..LATE_TRIES {
                    match desired::record_late_events(&pool, &lease, &events).await {
                        Ok(()) => {
                            tracing::info!(
                                events = events.len(),
                                epoch = lease.epoch,
                                "events of steps taken under a lease since lost are recorded, marked late"
                            );
                            return;
                        }
                        Err(error) => {
                            tracing::debug!(%error, "the database does not take the late events yet");
                            tokio::time::sleep(LATE_RETRY).await;
                        }
                    }
                }
                tracing::warn!(
                    events = events.len(),
                    epoch = lease.epoch,
                    "events of steps taken under a lease since lost could not be recorded within an hour; they are dropped"
                );
            });
        }
    }

    /// Writes what waits under `lease`, the lease this instance holds now;
    /// what waits under a lost one goes to [`Backlog::send_lost`].
    pub(super) async fn flush(&mut self, pool: &PgPool, lease: &Lease) {
        if self.events.is_empty() {
            return;
        }
        self.send_lost(pool, Some(lease), std::time::Duration::ZERO);
        let events: Vec<Event> = std::mem::take(&mut self.events)
            .into_iter()
            .map(|(_, e, _)| e)
            .collect();
        if events.is_empty() {
            return;
        }
        match desired::record_events(pool, lease, &events).await {
            Ok(desired::Written::Yes) => {
                tracing::info!(
                    events = events.len(),
                    "events held back while the database was away are recorded"
                );
            }
            Ok(desired::Written::Refused) => {
                // The lease moved on as they were written: they are
                // recorded late, as any lost lease's.
                self.keep(lease, events);
            }
            Err(error) => {
                tracing::debug!(%error, "the database still does not take the events held back");
                self.keep(lease, events);
            }
        }
    }
}
