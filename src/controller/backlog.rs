//! Events of steps that were carried out while the database could not
//! take them (it went away mid-pass): kept, with the time each step ended,
//! and written once the same lease holds again. Writes stay fenced: events
//! of a lease this instance lost are dropped, said in the log, never
//! written under another holder's epoch.

use sqlx::PgPool;

use crate::desired::{self, Event, Lease};

/// The most events kept; the oldest go first beyond it.
const MOST: usize = 10_000;

#[derive(Debug, Default)]
pub(super) struct Backlog {
    /// By the lease the pass held, oldest first.
    events: Vec<(Lease, Event)>,
}

impl Backlog {
    pub(super) fn keep(&mut self, lease: &Lease, events: Vec<Event>) {
        self.events
            .extend(events.into_iter().map(|e| (lease.clone(), e)));
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

    /// Writes what waits under `lease`, the lease this instance holds now.
    pub(super) async fn flush(&mut self, pool: &PgPool, lease: &Lease) {
        if self.events.is_empty() {
            return;
        }
        let (mine, lost): (Vec<_>, Vec<_>) = std::mem::take(&mut self.events)
            .into_iter()
            .partition(|(l, _)| l == lease);
        if !lost.is_empty() {
            tracing::warn!(
                events = lost.len(),
                "events of steps taken under a lease since lost are not recorded (the database did not take them in time)"
            );
        }
        let events: Vec<Event> = mine.into_iter().map(|(_, e)| e).collect();
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
                tracing::warn!(
                    events = events.len(),
                    "the lease moved on: events held back are not recorded"
                );
            }
            Err(error) => {
                tracing::debug!(%error, "the database still does not take the events held back");
                self.keep(lease, events);
            }
        }
    }
}
