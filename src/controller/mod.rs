//! The controller: triggers feed a keyed queue; each pass rereads the row
//! and the observed facts, plans, executes and writes the status back.
//!
//! Triggers carry only keys ("this workspace" or "everything"). The loop
//! owns the queue and the per-key memory; passes run as tasks, at most
//! `concurrency` at once and one per key, only while this instance holds
//! the host lease.

mod backlog;
mod cut_short;
mod finish;
mod guard;
mod halt;
mod queue;
mod refresh;
mod retention;
mod rollout;
mod round;
mod row_status;
mod state;
mod tasks;
mod trail;
mod waves;
mod work;

use state::State;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use queue::WorkQueue;
pub use retention::{Keep, PinFacts, SweepError, Swept, retain, sweep_images};
pub use rollout::{Gate, Halt, RolloutKey, Rollouts, Track, image_replace};
pub use round::probe;

use tasks::{Ended, Tasks};
pub use work::{Done, Failed, Work, carry_out};

use crate::act::Executor;
use crate::desired::{self, DesiredTrigger, Lease};
use crate::http::Readiness;
use crate::metrics::Metrics;
use crate::model::WorkspaceId;
use crate::observed::{Observed, Trigger};
use crate::plan::Settings;

/// What the controller is made of; `main` assembles it.
#[derive(Clone, Debug)]
pub struct Controller {
    pub settings: Settings,
    pub concurrency: usize,
    pub resync_interval: Duration,
    pub events_retention: Duration,
    /// Pin rollout waves and the debounce a pin must hold for.
    pub rollout: crate::config::Rollout,
    pub pin_debounce: Duration,
    /// `BERTH_TAG_REFRESH`: how often moving tags and local builds are
    /// re-resolved; `None` only on `berth refresh`.
    pub tag_refresh: Option<Duration>,
    pub pool: PgPool,
    pub executor: Executor,
    pub observed: Observed,
    pub metrics: Metrics,
    pub readiness: Arc<Readiness>,
}

/// The trigger sources and the lease.
#[derive(Debug)]
pub struct Inputs {
    pub desired: mpsc::UnboundedReceiver<DesiredTrigger>,
    pub observed: mpsc::UnboundedReceiver<Trigger>,
    pub lease: watch::Receiver<Option<Lease>>,
}

impl Controller {
    /// Runs until `stop`; then lets passes in flight finish within `grace`.
    pub async fn run(self, mut inputs: Inputs, stop: CancellationToken, grace: Duration) {
        let mut state = State::default();
        let mut queue: WorkQueue<WorkspaceId> = WorkQueue::new();
        let mut workers: Tasks<WorkspaceId, Done> = Tasks::default();
        // The first resync at once, then every interval plus up to 10 %
        // jitter, which keeps many hosts from rereading in step.
        let jittered = |every: Duration| every + every.mul_f64(fastrand::f64() * 0.1);
        let resync = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(resync);
        let mut refreshes: Tasks<String, refresh::Refreshed> = Tasks::default();
        let mut tag_refresh = self.tag_refresh.map(|every| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        self.on_lease(&inputs.lease.borrow().clone());
        if let Some(held) = inputs.lease.borrow().as_ref() {
            state.take_lease(held.epoch);
        }
        self.follow_leadership(inputs.lease.clone());
        // The loop turns at least this often; `/healthz` and the systemd
        // watchdog notice when it stops.
        let mut turn = tokio::time::interval(Duration::from_secs(1));
        turn.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.readiness.turned();
            if inputs.lease.borrow().is_some() {
                // A refresh asked before the lease was held, or one the
                // reread wants (a rollout of a moving tag or a local build
                // cut short by a restart).
                if let Some(runtime) = state.pending_refresh.take() {
                    self.start_refresh(&mut state, runtime.as_deref(), &mut refreshes);
                }
                self.dispatch(&mut state, &mut queue, &mut workers, &inputs.lease)
                    .await;
            }
            self.set_gauges(&state);
            let leading = inputs.lease.borrow().is_some();
            if !leading && !state.backlog.is_empty() {
                state.backlog.send_lost(&self.pool, None, backlog::HOLD);
            }
            let depth = if leading { queue.depth() } else { 0 };
            self.metrics.workqueue_depth.set(depth as i64);
            let adds = &self.metrics.workqueue_adds_total;
            adds.inc_by(queue.adds().saturating_sub(adds.get()));
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(t) = inputs.desired.recv() => match t {
                    DesiredTrigger::Workspace(id) => queue.add(id),
                    DesiredTrigger::Pin { .. } => {
                        // A burst of pin edits (a script promoting every
                        // runtime) is one reread: the resync comes forward.
                        let soon = tokio::time::Instant::now() + Duration::from_millis(200);
                        state.pins_moved = true;
                        if resync.deadline() > soon {
                            resync.as_mut().reset(soon);
                        }
                    }
                    DesiredTrigger::All => {
                        // The database session is back (or new): changes
                        // made meanwhile on either side are read anew.
                        self.observed.request_relist();
                        self.reread(&mut state, &mut queue).await;
                    }
                    DesiredTrigger::Refresh { runtime } => {
                        if inputs.lease.borrow().is_some() {
                            self.start_refresh(&mut state, runtime.as_deref(), &mut refreshes);
                        } else {
                            // Kept for when this instance holds the host
                            // (a restarted berth waits out the old lease).
                            tracing::info!("refresh asked before holding the host lease: it runs once the lease is held");
                            state.pending_refresh = Some(match state.pending_refresh.take() {
                                Some(Some(before)) if Some(&before) == runtime.as_ref() => Some(before),
                                Some(_) => None,
                                None => runtime,
                            });
                        }
                    }
                },
                _ = async {
                    match tag_refresh.as_mut() {
                        Some(t) => t.tick().await,
                        None => std::future::pending().await,
                    }
                }, if inputs.lease.borrow().is_some() => {
                    self.start_refresh(&mut state, None, &mut refreshes);
                }
                Some(ended) = refreshes.next() => match ended {
                    Ended::Done(done) => self.finish_refresh(&mut state, &mut queue, done, &mut refreshes),
                    Ended::Lost { key, error } => {
                        tracing::error!(image = key, %error, "a refresh task failed");
                        self.lost_refresh(&mut state, key, &mut refreshes);
                    }
                },
                Some(t) = inputs.observed.recv() => match t {
                    Trigger::Workspace(id) => queue.add(id),
                    Trigger::All => self.enqueue_all(&state, &mut queue),
                },
                () = &mut resync => {
                    let next = tokio::time::Instant::now() + jittered(self.resync_interval);
                    resync.as_mut().reset(next);
                    self.reread(&mut state, &mut queue).await;
                    // A refresh may be about to use an image nothing runs yet.
                    if state.refreshing.is_empty() {
                        let busy = state.busy_repositories();
                        self.sweep_images(&inputs.lease, &busy, retention::Sweep::IfDue)
                            .await;
                    }
                }
                _ = queue.next_timer() => {}
                _ = turn.tick() => {}
                // A pass parked behind a build: its slot is free for others.
                () = self.executor.pass_parked() => {}
                Some(ended) = workers.next() => match ended {
                    Ended::Done(done) => {
                        state.ensuring.remove(&done.id);
                        let stale = finish::stale_reference(&done);
                        let id = done.id;
                        self.finish(&mut state, &mut queue, done).await;
                        if let Some((image, source)) = stale {
                            tracing::warn!(workspace = %id, image = image.as_str(), "the tag's known digest is gone from the registry: resolving the tag again");
                            self.refresh_reference(&mut state, image, source, &mut refreshes);
                        }
                    }
                    Ended::Lost { key, error } => {
                        // A bug, not an input: the workspace is tried again
                        // with backoff rather than left in flight forever.
                        state.ensuring.remove(&key);
                        queue.done(&key);
                        let delay = queue.retry(key);
                        self.metrics.workqueue_retries_total.inc();
                        self.metrics.reconcile_errors_total.with_label_values(&["panic"]).inc();
                        tracing::error!(workspace = %key, %error, retry_in = ?delay, "a reconcile pass failed");
                    }
                },
                Ok(()) = inputs.lease.changed() => {
                    let lease = inputs.lease.borrow().clone();
                    self.on_lease(&lease);
                    if let Some(held) = &lease {
                        state.take_lease(held.epoch);
                    }
                    if lease.is_none() {
                        // Without the database session the rows read are
                        // stale: the desired side is incomplete until the
                        // reread that follows the session's return.
                        self.set_desired_complete(&mut state, false);
                    } else {
                        self.reread(&mut state, &mut queue).await;
                        if let Some(runtime) = state.pending_refresh.take() {
                            self.start_refresh(&mut state, runtime.as_deref(), &mut refreshes);
                        }
                    }
                }
            }
        }
        refreshes.abort_all();
        tracing::info!(
            in_flight = workers.len(),
            "stopping: no new passes; waiting for those in flight"
        );
        // Each pass that ends is followed through as in the loop: a restore
        // that ends now still halts its rollout, and its trail is written.
        let drained = tokio::time::timeout(grace, async {
            while let Some(ended) = workers.next().await {
                if let Ended::Done(done) = ended {
                    state.ensuring.remove(&done.id);
                    self.finish(&mut state, &mut queue, done).await;
                }
            }
            let held = inputs.lease.borrow().clone();
            if let Some(lease) = held {
                state.backlog.flush(&self.pool, &lease).await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = workers.len(),
                "shutdown grace over; abandoning passes in flight"
            );
            workers.abort_all();
            // Dropped, each abandoned pass leaves the step it was in: the
            // trail says it was sent and not seen to end.
            while workers.next().await.is_some() {}
            state.cut_short.record(&self.pool).await;
        }
    }

    /// Keeps `berth_leader` and `/readyz` in step with the lease as the
    /// session changes it, not when the loop next turns: a loop waiting on
    /// a stalled database must not go on saying it leads.
    fn follow_leadership(&self, mut lease: watch::Receiver<Option<Lease>>) {
        let (metrics, readiness) = (self.metrics.clone(), self.readiness.clone());
        tokio::spawn(async move {
            loop {
                let held = lease.borrow_and_update().is_some();
                metrics.leader.set(i64::from(held));
                readiness.set_leader(held);
                if lease.changed().await.is_err() {
                    break;
                }
            }
        });
    }

    /// Without the lease the row gauges say nothing of this instance's
    /// (`berth_leader` and `/readyz` follow the lease in
    /// `follow_leadership`).
    fn on_lease(&self, lease: &Option<Lease>) {
        if lease.is_none() {
            self.count_rows(&State::default());
        }
    }

    /// Rereads every row of this host and the catalogue, then queues every
    /// key. A failed read leaves the desired side incomplete (no deletions)
    /// and is retried at the next resync.
    async fn reread(&self, state: &mut State, queue: &mut WorkQueue<WorkspaceId>) {
        // Cleared whether or not the read succeeds: a failed read leaves
        // the catalogue as stale as before the notice, and passes go on.
        state.pins_moved = false;
        if self.load_desired(state).await {
            self.retry_pin_write_backs(state).await;
            self.forget_the_gone(state, queue);
            if state.rows.is_empty() != state.no_rows_said {
                state.no_rows_said = state.rows.is_empty();
                if state.no_rows_said {
                    // Said once: a wrong BERTH_HOST_ID shows in the log.
                    let others = desired::hosts_with_rows(&self.pool)
                        .await
                        .unwrap_or_default();
                    let notice = desired::no_rows_notice(&self.settings.host_id, &others);
                    tracing::warn!("{notice}");
                }
            }
            self.count_rows(state);
            self.seed_images(state);
        }
        self.enqueue_all(state, queue);
        self.prune(state);
    }

    /// Drops what is kept per image reference and per workspace once
    /// nothing names it: no row choosing the reference (its knowledge,
    /// held-back target, refresh failure); no row and no observed object
    /// for a key (what a month of churn would pile up).
    fn forget_the_gone(&self, state: &mut State, queue: &mut WorkQueue<WorkspaceId>) {
        let (containers, volumes, complete) = self.observed.snapshot();
        let engine = complete.then_some((containers.as_slice(), volumes.as_slice()));
        state.forget_the_gone(&self.settings, engine, queue);
    }

    /// Reads every row of this host and the catalogue into `state`; false
    /// (and the desired side incomplete: no deletions) when that failed.
    async fn load_desired(&self, state: &mut State) -> bool {
        let host = &self.settings.host_id;
        let read = async {
            let rows = desired::load_rows(&self.pool, host).await?;
            let catalogue = desired::load_catalogue(&self.pool).await?;
            Ok::<_, desired::ReadError>((rows, catalogue))
        };
        match desired::within(desired::LOOP_READ_DEADLINE, read).await {
            Ok((rows, catalogue)) => {
                state.rows = rows.into_iter().map(|r| (r.id, r)).collect();
                state.catalogue = catalogue;
                state.desired_complete = true;
            }
            Err(error) => {
                tracing::error!(%error, "reading the desired state failed");
                state.desired_complete = false;
            }
        }
        self.set_desired_complete(state, state.desired_complete);
        state.desired_complete
    }

    /// Whether the desired side is complete, in the state, `/readyz` and
    /// `snapshot_complete{side="desired"}`.
    fn set_desired_complete(&self, state: &mut State, complete: bool) {
        state.desired_complete = complete;
        self.readiness.set_desired_complete(complete);
        self.metrics
            .snapshot_complete
            .with_label_values(&["desired"])
            .set(i64::from(complete));
    }

    /// Every key: this host's rows and every workspace its objects name.
    /// Objects of other hosts (listed by name, to see clashes) are no key
    /// of their own: a pass for them finds nothing to do.
    fn enqueue_all(&self, state: &State, queue: &mut WorkQueue<WorkspaceId>) {
        let (containers, volumes, complete) = self.observed.snapshot();
        self.readiness.set_observed_complete(complete);
        self.metrics
            .snapshot_complete
            .with_label_values(&["observed"])
            .set(i64::from(complete));
        let mut keys: BTreeSet<WorkspaceId> = state.rows.keys().copied().collect();
        let host = self.settings.host_id.as_str();
        keys.extend(
            containers
                .iter()
                .filter(|c| c.owned_by(host))
                .filter_map(|c| c.workspace()),
        );
        keys.extend(
            volumes
                .iter()
                .filter(|v| v.owned_by(host))
                .filter_map(|v| v.workspace()),
        );
        for key in keys {
            queue.add(key);
        }
    }

    /// `workspaces{status}`, unconverged rows and the oldest of them
    /// (from the desired change, or from the status that fell short).
    fn count_rows(&self, state: &State) {
        if self.metrics.leader.get() == 0 {
            // A standby reports none: sums over a host's instances count
            // each row once.
            self.metrics.workspaces.reset();
            self.metrics.unconverged_workspaces.set(0);
            self.metrics.oldest_unconverged_age_seconds.set(0);
            return;
        }
        let now = Utc::now();
        let mut by_status: BTreeMap<&str, i64> = BTreeMap::new();
        let mut unconverged = 0;
        let mut oldest = 0i64;
        for row in state.rows.values() {
            let status = row.status.map_or("unknown", |s| s.as_str());
            *by_status.entry(status).or_default() += 1;
            // A paused row's pending change waits for the operator, not
            // for berth: it shows on the row (`GEN`), not as lag here.
            // A row short of its desired state counts as well as one whose
            // change berth has not yet looked at: a row stuck provisioning
            // or failed is the lag an operator is paged for.
            if row.paused {
                continue;
            }
            let since = if row.observed_generation < row.generation {
                Some(row.desired_changed_at)
            } else if !row.shows_desired() {
                Some(row.status_changed_at.unwrap_or(row.desired_changed_at))
            } else {
                None
            };
            if let Some(since) = since {
                unconverged += 1;
                oldest = oldest.max((now - since).num_seconds());
            }
        }
        self.metrics.workspaces.reset();
        for (status, n) in by_status {
            self.metrics.workspaces.with_label_values(&[status]).set(n);
        }
        self.metrics.unconverged_workspaces.set(unconverged);
        self.metrics.oldest_unconverged_age_seconds.set(oldest);
    }

    /// Deletes events past retention, at most hourly, off the loop (a
    /// large backlog must not stall it).
    fn prune(&self, state: &mut State) {
        let due = state
            .last_prune
            .is_none_or(|t| t.elapsed() > Duration::from_secs(3600));
        if !due {
            return;
        }
        state.last_prune = Some(tokio::time::Instant::now());
        let (pool, retention) = (self.pool.clone(), self.events_retention);
        tokio::spawn(async move {
            match desired::prune_events(&pool, retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "pruned old workspace events"),
                Err(error) => tracing::warn!(%error, "pruning workspace events failed"),
            }
        });
    }
}

#[cfg(test)]
mod tests;
