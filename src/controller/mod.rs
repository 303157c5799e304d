//! The controller: triggers feed a keyed queue; each pass rereads the row
//! and the observed facts, plans, executes and writes the status back.
//!
//! Triggers carry only keys ("this workspace" or "everything"). The loop
//! owns the queue and the per-key memory; passes run as tasks, at most
//! `concurrency` at once and one per key, only while this instance holds
//! the host lease.

mod queue;
mod refresh;
mod retention;
mod rollout;
mod round;
mod work;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use queue::WorkQueue;
pub use retention::{Keep, PinFacts, SweepError, Swept, retain, sweep_images};
pub use rollout::{Gate, Halt, Rollouts, Track};

pub use work::{Done, Failed, Work, carry_out};

use crate::act::Executor;
use crate::desired::{self, DesiredTrigger, Lease};
use crate::http::Readiness;
use crate::metrics::Metrics;
use crate::model::{Digest, ResolvedImage, Status, WorkspaceId, WorkspaceRow};
use crate::observed::{Observed, Trigger};
use crate::plan::{Catalogue, Failure, Memory, Settings};

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

/// What the loop knows between passes.
#[derive(Debug, Default)]
struct State {
    rows: BTreeMap<WorkspaceId, WorkspaceRow>,
    catalogue: Catalogue,
    desired_complete: bool,
    memory: BTreeMap<WorkspaceId, Memory>,
    /// What is known of each image reference now (digest, local id).
    images: BTreeMap<String, ResolvedImage>,
    last_prune: Option<tokio::time::Instant>,
    rollouts: Rollouts,
    /// Image references whose rollout onto a target halted, with that
    /// target (a digest or an image ID): a refresh that finds it again
    /// keeps the previous image.
    held_back: BTreeMap<String, String>,
    /// Image references a refresh is resolving now.
    refreshing: BTreeSet<String>,
    /// References asked to refresh again while one was resolving.
    refresh_again: BTreeMap<String, (crate::model::ImageRef, crate::model::ImageSource)>,
    /// A refresh asked for while this instance did not hold the lease:
    /// `Some(None)` for every runtime.
    pending_refresh: Option<Option<String>>,
}

impl Controller {
    /// Runs until `stop`; then lets passes in flight finish within `grace`.
    pub async fn run(self, mut inputs: Inputs, stop: CancellationToken, grace: Duration) {
        let mut state = State::default();
        let mut queue: WorkQueue<WorkspaceId> = WorkQueue::new();
        let mut workers: JoinSet<Done> = JoinSet::new();
        let mut resync = tokio::time::interval(self.resync_interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refreshes: JoinSet<refresh::Refreshed> = JoinSet::new();
        let mut tag_refresh = self.tag_refresh.map(|every| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        self.on_lease(&inputs.lease.borrow().clone());
        loop {
            if inputs.lease.borrow().is_some() {
                self.dispatch(&mut state, &mut queue, &mut workers, &inputs.lease)
                    .await;
            }
            self.metrics.workqueue_depth.set(queue.depth() as i64);
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(t) = inputs.desired.recv() => match t {
                    DesiredTrigger::Workspace(id) => queue.add(id),
                    DesiredTrigger::Pin { .. } | DesiredTrigger::All => {
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
                Some(joined) = refreshes.join_next() => match joined {
                    Ok(done) => self.finish_refresh(&mut state, &mut queue, done, &mut refreshes),
                    Err(e) => tracing::error!(error = %e, "a refresh task failed"),
                },
                Some(t) = inputs.observed.recv() => match t {
                    Trigger::Workspace(id) => queue.add(id),
                    Trigger::All => self.enqueue_all(&state, &mut queue),
                },
                _ = resync.tick() => {
                    // Jitter keeps many hosts from rereading in step.
                    let jitter = self.resync_interval.mul_f64(fastrand::f64() * 0.1);
                    tokio::time::sleep(jitter).await;
                    self.reread(&mut state, &mut queue).await;
                    // A refresh may be about to use an image nothing runs yet.
                    if state.refreshing.is_empty() {
                        let in_flight = queue.in_flight();
                        self.sweep_images(&inputs.lease, in_flight, retention::Sweep::IfDue)
                            .await;
                    }
                }
                _ = queue.next_timer() => {}
                // A pass parked behind a build: its slot is free for others.
                () = self.executor.pass_parked() => {}
                Some(joined) = workers.join_next() => match joined {
                    Ok(done) => self.finish(&mut state, &mut queue, done).await,
                    Err(e) => tracing::error!(error = %e, "a reconcile task failed"),
                },
                Ok(()) = inputs.lease.changed() => {
                    let lease = inputs.lease.borrow().clone();
                    self.on_lease(&lease);
                    if lease.is_some() {
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
        let drained = tokio::time::timeout(grace, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = workers.len(),
                "shutdown grace over; abandoning passes in flight"
            );
            workers.abort_all();
        }
    }

    fn on_lease(&self, lease: &Option<Lease>) {
        self.metrics.leader.set(i64::from(lease.is_some()));
        self.readiness.set_leader(lease.is_some());
    }

    /// Rereads every row of this host and the catalogue, then queues every
    /// key. A failed read leaves the desired side incomplete (no deletions)
    /// and is retried at the next resync.
    async fn reread(&self, state: &mut State, queue: &mut WorkQueue<WorkspaceId>) {
        let host = &self.settings.host_id;
        let read = async {
            let rows = desired::load_rows(&self.pool, host).await?;
            let catalogue = desired::load_catalogue(&self.pool).await?;
            Ok::<_, desired::ReadError>((rows, catalogue))
        };
        match read.await {
            Ok((rows, catalogue)) => {
                state.rows = rows.into_iter().map(|r| (r.id, r)).collect();
                state.catalogue = catalogue;
                state.desired_complete = true;
                self.count_rows(state);
                self.seed_images(state);
            }
            Err(error) => {
                tracing::error!(%error, "reading the desired state failed");
                state.desired_complete = false;
            }
        }
        self.readiness.set_desired_complete(state.desired_complete);
        self.metrics
            .snapshot_complete
            .with_label_values(&["desired"])
            .set(i64::from(state.desired_complete));
        self.enqueue_all(state, queue);
        self.prune(state).await;
    }

    /// Every key: this host's rows and every workspace its objects name.
    fn enqueue_all(&self, state: &State, queue: &mut WorkQueue<WorkspaceId>) {
        let (containers, volumes, complete) = self.observed.snapshot();
        self.readiness.set_observed_complete(complete);
        self.metrics
            .snapshot_complete
            .with_label_values(&["observed"])
            .set(i64::from(complete));
        let mut keys: BTreeSet<WorkspaceId> = state.rows.keys().copied().collect();
        keys.extend(containers.iter().filter_map(|c| c.workspace()));
        keys.extend(volumes.iter().filter_map(|v| v.workspace()));
        for key in keys {
            queue.add(key);
        }
        self.metrics.workqueue_adds_total.reset();
        self.metrics.workqueue_adds_total.inc_by(queue.adds());
    }

    /// `workspaces{status}`, unconverged rows and the oldest of them.
    fn count_rows(&self, state: &State) {
        let now = Utc::now();
        let mut by_status: BTreeMap<&str, i64> = BTreeMap::new();
        let mut unconverged = 0;
        let mut oldest = 0i64;
        for row in state.rows.values() {
            let status = row.status.map_or("unknown", |s| s.as_str());
            *by_status.entry(status).or_default() += 1;
            if row.observed_generation < row.generation {
                unconverged += 1;
                oldest = oldest.max((now - row.desired_changed_at).num_seconds());
            }
        }
        self.metrics.workspaces.reset();
        for (status, n) in by_status {
            self.metrics.workspaces.with_label_values(&[status]).set(n);
        }
        self.metrics.unconverged_workspaces.set(unconverged);
        self.metrics.oldest_unconverged_age_seconds.set(oldest);
    }

    /// Deletes events past retention, at most hourly.
    async fn prune(&self, state: &mut State) {
        let due = state
            .last_prune
            .is_none_or(|t| t.elapsed() > Duration::from_secs(3600));
        if !due {
            return;
        }
        state.last_prune = Some(tokio::time::Instant::now());
        match desired::prune_events(&self.pool, self.events_retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned old workspace events"),
            Err(error) => tracing::warn!(%error, "pruning workspace events failed"),
        }
    }

    /// Takes a finished pass's outcome into memory, the queue and the
    /// rollouts.
    async fn finish(&self, state: &mut State, queue: &mut WorkQueue<WorkspaceId>, done: Done) {
        let id = done.id;
        queue.done(&id);
        // What the pass made local is known first, so that a halt the pass
        // causes puts the previous image back over it, not the reverse.
        for (image, known) in &done.images {
            let key = image.as_str().to_string();
            let target = known
                .digest
                .as_ref()
                .map(|d| d.as_str().to_string())
                .or_else(|| known.id.clone());
            if target.is_some() && state.held_back.get(&key) == target.as_ref() {
                continue;
            }
            state.images.insert(key, known.clone());
        }
        self.follow_rollouts(state, &done).await;
        for waiting in state.rollouts.take_wakeups() {
            queue.add(waiting);
        }
        let was_timed_out = state.rows.get(&id).and_then(|r| r.status_reason)
            == Some(crate::model::Reason::ProvisionTimeout);
        if done.lost_lease {
            return;
        }
        let memory = state.memory.entry(id).or_default();
        let result = match (&done.failure, &done.write_error) {
            (Some(failed), _) => {
                let delay = queue.retry(id);
                self.metrics.workqueue_retries_total.inc();
                self.metrics
                    .reconcile_errors_total
                    .with_label_values(&[failed.error.kind()])
                    .inc();
                if let (Some(reason), Some(hash)) = (failed.error.reason(), &done.hash) {
                    memory.record_failure(Failure {
                        reason,
                        phase: failed.phase,
                        message: failed.error.to_string(),
                        retry_at: Utc::now()
                            + chrono::TimeDelta::from_std(delay).unwrap_or_default(),
                        hash: hash.clone(),
                    });
                    // Plan again at once: that pass only reports the
                    // failure on the row; the retry waits for the backoff.
                    queue.add(id);
                }
                if failed.restored {
                    if let Some(hash) = &done.hash {
                        memory.record_rollback(hash);
                    }
                    self.metrics
                        .rollbacks_total
                        .with_label_values(&[failed.phase.to_string().as_str()])
                        .inc();
                }
                "error"
            }
            (None, Some(error)) => {
                tracing::error!(workspace = %id, %error, "writing the outcome failed");
                queue.retry(id);
                self.metrics.workqueue_retries_total.inc();
                self.metrics
                    .reconcile_errors_total
                    .with_label_values(&["database"])
                    .inc();
                "error"
            }
            (None, None) => {
                // A pass that only reported a failure still backing off
                // is no success: the backoff keeps growing until a pass
                // acts and succeeds.
                let waiting = done.plan.actions.is_empty()
                    && memory
                        .failure
                        .as_ref()
                        .is_some_and(|f| f.retry_at > Utc::now());
                if !waiting {
                    queue.forget(&id);
                    memory.failure = None;
                }
                if done.plan.requeue_after.is_some() {
                    "requeue"
                } else {
                    "success"
                }
            }
        };
        if let Some(after) = done.plan.requeue_after {
            queue.add_after(id, after);
        }
        self.metrics
            .reconcile_total
            .with_label_values(&[result])
            .inc();
        if let Some(update) = &done.plan.status
            && update.status == Status::Failed
            && update.reason == Some(crate::model::Reason::ProvisionTimeout)
            && !was_timed_out
        {
            // Counted when a row turns provision_timeout.
            let phase = update
                .detail
                .as_deref()
                .and_then(|d| d.split_whitespace().find_map(phase_word))
                .unwrap_or("readiness");
            self.metrics
                .provision_timeouts_total
                .with_label_values(&[phase])
                .inc();
        }
    }
}

impl Controller {
    /// What a finished pass means for the rollouts: a replace finished
    /// ready, one undone (a readiness failure, which may halt its rollout),
    /// or one that did not start after all.
    async fn follow_rollouts(&self, state: &mut State, done: &Done) {
        use crate::plan::Why;
        let id = done.id;
        let whys = || done.plan.actions.iter().map(|a| &a.why);
        let restored = done.failure.as_ref().is_some_and(|f| f.restored)
            || (done.failure.is_none() && whys().any(|w| *w == Why::Restore));
        // A transient engine error (a 5xx, a timeout) says nothing about
        // the image: the replace was undone and is tried again later, but
        // it does not count towards a halt.
        let transient = done
            .failure
            .as_ref()
            .is_some_and(|f| f.error.is_transient());
        if restored && !transient {
            for halt in state.rollouts.failed(id, &self.rollout) {
                self.halt(state, halt).await;
            }
        } else if restored
            || done.failure.as_ref().is_some_and(|f| {
                matches!(
                    f.phase,
                    crate::plan::Phase::Pull | crate::plan::Phase::Build
                )
            })
        {
            // The image could not be made local (nothing was touched), or
            // the engine failed on the way: the slot goes to the next
            // workspace.
            state.rollouts.release(id);
        } else if whys().any(|w| *w == Why::FinishReplace) {
            state.rollouts.succeeded(id);
        }
    }
}

impl Controller {
    /// Puts a halted rollout's previous image back: into the pin row for
    /// a pin (the history says berth did it and why), into the image
    /// knowledge for a tag or a build (so the planner sees the old image
    /// as current, and a refresh that finds the halted target again keeps
    /// it out). Workspaces the rollout changed are replaced back onto it.
    async fn halt(&self, state: &mut State, halt: Halt) {
        self.metrics.rollout_halts_total.inc();
        let Halt {
            key,
            from,
            image,
            failed,
            tried,
        } = halt;
        let runtime = &key.runtime;
        let track = key.track.as_str();
        tracing::error!(runtime, track, to = %key.to, failed, tried, "rollout halted");
        // A pin goes back to its previous stable digest (what `berth
        // rollback` would choose) when the history marks one; else to the
        // digest the workspaces ran before.
        let from = match &key.track {
            Track::Pin(ring) => self.stable_before(runtime, ring, &key.to).await.or(from),
            _ => from,
        };
        let Some(from) = from else {
            tracing::error!(
                runtime,
                track,
                "no previous image known: nothing more rolls out onto the halted one"
            );
            return;
        };
        match &key.track {
            Track::Pin(ring) => {
                let note = format!(
                    "halted by berth on host {}: {failed} of {tried} replaces onto {} failed readiness",
                    self.settings.host_id,
                    key.to.short()
                );
                match desired::halt_pin(
                    &self.pool,
                    runtime,
                    ring,
                    key.to.as_str(),
                    from.as_str(),
                    &note,
                )
                .await
                {
                    Ok(true) => tracing::warn!(runtime, ring, back_to = %from, "pin written back"),
                    Ok(false) => {
                        tracing::warn!(runtime, ring, "pin already changed; not written back")
                    }
                    Err(error) => tracing::error!(%error, "writing the pin back failed"),
                }
            }
            Track::Tag | Track::Build => {
                let previous = match key.track {
                    Track::Tag => ResolvedImage {
                        digest: Some(from.clone()),
                        id: None,
                    },
                    _ => ResolvedImage {
                        digest: None,
                        id: Some(from.as_str().to_string()),
                    },
                };
                tracing::warn!(runtime, track, image, back_to = %from, "previous image is current again");
                state.images.insert(image.clone(), previous);
                state.held_back.insert(image, key.to.as_str().to_string());
            }
        }
    }
}

impl Controller {
    /// The newest digest of (`runtime`, `ring`) marked stable before `to`
    /// was pinned, if any.
    async fn stable_before(&self, runtime: &str, ring: &str, to: &Digest) -> Option<Digest> {
        match desired::rollback_target(&self.pool, runtime, ring, to.as_str()).await {
            Ok(Some(t)) if t.stable_at.is_some() => Digest::parse(&t.digest).ok(),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, "reading the pin history failed; going back to the digest the workspaces ran");
                None
            }
        }
    }
}

fn phase_word(word: &str) -> Option<&'static str> {
    let word = word.trim_matches(|c: char| !c.is_ascii_alphabetic());
    ["pull", "build", "create", "start", "readiness"]
        .into_iter()
        .find(|p| *p == word)
}
