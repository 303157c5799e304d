//! The steps passes were in when the shutdown grace ended: a change sent
//! to the engine that berth did not see end. Each abandoned pass leaves
//! its step here as it is dropped, and the trail gets it, marked
//! `cut_short`, under the lease the step was taken in.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::PgPool;

use crate::desired::{self, Event, Lease};

/// The steps of abandoned passes, shared by the passes and the loop.
#[derive(Clone, Debug, Default)]
pub struct CutShort(Arc<Mutex<Vec<(Lease, Event)>>>);

impl CutShort {
    /// A step under way: `entry` (its lease and the event that says it
    /// was cut short) goes into the sink if the pass is dropped before
    /// [`StepUnderWay::ended`]; `None` for a step that changes nothing.
    pub(super) fn step(&self, entry: Option<(Lease, Event)>) -> StepUnderWay<'_> {
        StepUnderWay {
            sink: self,
            armed: entry,
        }
    }

    /// Writes the steps left so far to the trail, each under its lease
    /// (refused when another instance holds the host by now), within a
    /// bound each: the process is on its way out.
    pub(super) async fn record(&self, pool: &PgPool) {
        let cut = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        for (lease, event) in cut {
            let recorded = tokio::time::timeout(
                Duration::from_secs(2),
                desired::record_events(pool, &lease, std::slice::from_ref(&event)),
            )
            .await;
            if !matches!(recorded, Ok(Ok(desired::Written::Yes))) {
                tracing::warn!(workspace = %event.workspace, step = %event.action, "a step cut short by the shutdown is not on the trail");
            }
        }
    }
}

/// See [`CutShort::step`].
#[derive(Debug)]
pub(super) struct StepUnderWay<'a> {
    sink: &'a CutShort,
    armed: Option<(Lease, Event)>,
}

impl StepUnderWay<'_> {
    /// The step ended: nothing to leave.
    pub(super) fn ended(mut self) {
        self.armed = None;
    }
}

impl Drop for StepUnderWay<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.armed.take() {
            self.sink
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(entry);
        }
    }
}
