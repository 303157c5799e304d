//! One round of dispatch: take the keys that may run now, reread their
//! rows, plan the whole host (the delete guard spans the pass), and start
//! a pass for each taken key that has something to do.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::Utc;
use tokio::sync::watch;

use super::rollout::{Gate, Rollouts, image_replace};
use super::work::{Done, Work, carry_out};
use super::{Controller, State, WorkQueue};
use crate::desired::{self, Event, Lease};
use crate::model::{ObservedContainer, WorkspaceId, WorkspaceRow};
use crate::plan::{self, Plan, Probes, Snapshot};

/// The most keys one round takes from the queue.
const BATCH: usize = 1024;

impl Controller {
    pub(super) async fn dispatch(
        &self,
        state: &mut State,
        queue: &mut WorkQueue<WorkspaceId>,
        workers: &mut super::Tasks<WorkspaceId, Done>,
        lease_rx: &watch::Receiver<Option<Lease>>,
    ) {
        let Some(lease) = desired::holding(lease_rx) else {
            return;
        };
        if !state.backlog.is_empty() {
            state.backlog.flush(&self.pool, &lease).await;
        }
        if !state.trail_read && !self.read_trail(state).await {
            return;
        }
        if !state.undone_pins_seen && state.desired_complete && self.observed.is_complete() {
            state.undone_pins_seen = true;
            self.halt_undone_pins(state).await;
        }
        // A pin edit was announced and not yet read: passes wait for the
        // reread (see `State::pins_moved`).
        if state.pins_moved {
            return;
        }
        // A pass parked behind another's build of the same runtime does
        // no work: its slot goes to other workspaces meanwhile. At most
        // `concurrency` of them are not counted, so no more than twice the
        // limit act at once when a build ends.
        let parked = self.executor.parked_on_builds().min(self.concurrency);
        let busy = workers.len().saturating_sub(parked);
        let free = self.concurrency.saturating_sub(busy);
        // Keys that need nothing cost no slot: a round looks at a batch
        // (a resync queues every key) and starts at most `free` passes;
        // keys with work beyond that go back, first in line.
        let mut taken = Vec::new();
        if free == 0 {
            return;
        }
        while taken.len() < free.max(BATCH) {
            let Some((id, waited)) = queue.pop() else {
                break;
            };
            self.metrics
                .workqueue_queue_duration_seconds
                .observe(waited.as_secs_f64());
            taken.push(id);
        }
        if taken.is_empty() {
            return;
        }
        let started = std::time::Instant::now();

        // Each pass rereads its row; a row that is gone is gone from the
        // snapshot too.
        let read = desired::load_rows_by_id(&self.pool, &self.settings.host_id, &taken);
        match desired::within(desired::LOOP_READ_DEADLINE, read).await {
            Ok(rows) => {
                let had = taken
                    .iter()
                    .filter(|id| state.rows.contains_key(id))
                    .count();
                for id in &taken {
                    state.rows.remove(id);
                }
                let vanished = had > rows.len();
                state.rows.extend(rows.into_iter().map(|r| (r.id, r)));
                if vanished {
                    // A row went: others may have gone with it (a mass
                    // delete). All rows are read again before planning, so
                    // every orphan is seen at once and the delete guard
                    // weighs them together.
                    self.load_desired(state).await;
                }
            }
            Err(error) => {
                tracing::error!(%error, "rereading rows failed; retrying those keys");
                for id in taken {
                    queue.done(&id);
                    queue.retry(id);
                }
                return;
            }
        }

        self.forget_repinned(state);
        let (containers, volumes, observed_complete) = self.observed.snapshot();
        self.readiness.set_observed_complete(observed_complete);
        let probes: BTreeMap<WorkspaceId, Probes> = taken
            .iter()
            .filter_map(|id| state.rows.get(id))
            .map(|row| (row.id, probe(row)))
            .collect();
        let snapshot = Snapshot {
            rows: state.rows.values().cloned().collect(),
            catalogue: state.catalogue.clone(),
            containers,
            volumes,
            images: state.images.clone(),
            refresh_failures: state.refresh_failures.clone(),
            desired_complete: state.desired_complete,
            observed_complete,
            memory: state.memory.clone(),
            probes,
            guard_held: state.guard_held.clone(),
            guard_held_limit: state.guard_held_limit,
        };
        let now = Utc::now();
        let pass = plan::plan_pass(&snapshot, &self.settings, now);
        let resumed = self.track_rollouts(state, &pass, lease_rx).await;
        // Orphans are counted from their first sighting in any round, not
        // only when their key is taken: all orphans of a mass deletion
        // ripen together, and the delete guard sees them in one pass.
        let in_round: std::collections::BTreeSet<WorkspaceId> = taken.iter().copied().collect();
        for p in &pass.plans {
            if p.memory.orphan_since.is_some() && !in_round.contains(&p.id) {
                let kept = state.memory.entry(p.id).or_default();
                kept.orphan_since = kept.orphan_since.or(p.memory.orphan_since);
                kept.orphan_sightings = kept.orphan_sightings.max(p.memory.orphan_sightings);
            }
        }
        self.follow_guard(state, &pass, &lease, now).await;
        let mut plans: BTreeMap<WorkspaceId, Plan> =
            pass.plans.into_iter().map(|p| (p.id, p)).collect();
        let mut passes = 0;
        let guard_limit = pass.guard_held_limit;
        // Built once a round, for the first plan held back for its wave.
        let mut held_ix: Option<plan::PassIndex> = None;

        for id in taken {
            let Some(mut plan) = plans.remove(&id) else {
                // Nothing names this key any more.
                state.memory.remove(&id);
                queue.done(&id);
                continue;
            };
            let row = state.rows.get(&id).cloned();
            // The container column names what runs, once the engine's
            // picture is complete (a paused row's container removed by
            // hand is not shown as there).
            let shown = main_container(&snapshot.containers, id, &self.settings.host_id);
            // A paused row keeps the place its replace holds in a rollout
            // (see `track_rollouts`), and its column goes on saying so.
            let kept_column = row
                .as_ref()
                .filter(|r| r.paused)
                .and_then(|_| state.rollouts.held_by(id))
                .map(|key| state.rollouts.replacing(&key, id));
            let complete = (observed_complete, state.desired_complete);
            let steady = is_steady(&plan, row.as_ref(), shown.as_ref(), state.noted.get(&id), complete)
                // A row showing a rollout it no longer waits for is
                // written (the column cleared).
                && !(plan.status.is_some()
                    && row.as_ref().is_some_and(|r| r.rollout.is_some() && r.rollout != kept_column));
            if !steady && passes >= free {
                queue.put_back(id);
                continue;
            }
            // A replace onto a new pin, tag digest or build waits for its
            // wave; one under way already holds its place.
            let mut rollout = resumed
                .get(&id)
                .map(|key| state.rollouts.replacing(key, id))
                .or(kept_column);
            // A replace held back for its wave (or by a halt), and the
            // `rollout` column its row shows meanwhile.
            let mut held_back = None;
            let mut held_column = None;
            // The spec a held plan was made on: its pass is recorded
            // against that spec's hash, not the rollout target's.
            let mut held_spec = None;
            if let Some(row) = &row
                && let Some(replace) = image_replace(&plan, &row.runtime)
            {
                let held = state.rollouts.holds(&replace.key, id);
                if !state.rollouts.knows(&replace.key) {
                    self.take_up_failures(state, &replace, true).await;
                }
                match state
                    .rollouts
                    .gate(&replace, id, &self.rollout, self.pin_debounce)
                {
                    Gate::Go => {
                        // The replace begins now: the wait for its wave
                        // (berth's own holding back) does not count
                        // against its provision timeout.
                        if !held {
                            plan.memory.provisioning_since = Some(now);
                            // A workspace broken by itself before (crash
                            // looping, failed) proves nothing about the
                            // image. A status of this very rollout's
                            // replace (berth died mid-way and tries it
                            // again) says nothing either way: the column
                            // the replace wrote says what was judged.
                            let own = Rollouts::column_names(row.rollout.as_ref(), &replace.key);
                            // A row showing an earlier rollout's replace
                            // undone (one that counted) ran its own spec
                            // well before: that undo was the image's, and
                            // a failure now is this image's too.
                            let undone_by_image = state.memory.get(&id).is_some_and(|m| {
                                m.rolled_back_rollout.as_ref().is_some_and(|c| {
                                    !Rollouts::column_names(Some(c), &replace.key)
                                        && !Rollouts::column_unproven(Some(c))
                                })
                            });
                            let troubled = row.broken() || (row.troubled() && !undone_by_image);
                            if (troubled && !own)
                                || (own && Rollouts::column_unproven(row.rollout.as_ref()))
                            {
                                state.rollouts.unproven(&replace.key, id);
                            }
                        }
                        rollout = Some(state.rollouts.replacing(&replace.key, id));
                    }
                    Gate::Wait(after) => held_back = Some(("waiting", after)),
                    Gate::Halted => {
                        held_back = Some(("halted", std::time::Duration::from_secs(5)));
                    }
                }
                if let Some((what, after)) = held_back {
                    self.show_rollout(&lease, row, &replace.key, what, state)
                        .await;
                    // The image waits; the row's wishes that keep its
                    // container do not. One that replaces it (an env
                    // edit) goes with the image: a replace onto the held
                    // spec would be undone as soon as the pass after it
                    // plans on the real one. Meanwhile that container is
                    // looked after as it is.
                    let ix = held_ix
                        .get_or_insert_with(|| plan::PassIndex::new(&snapshot, &self.settings));
                    let held_plan = match shown
                        .as_ref()
                        .map(|c| ix.plan_held(id, &held_image(c), now))
                    {
                        Some((p, _)) if p.guarded_removals() > 0 => None,
                        Some((p, _))
                            if p.actions
                                .iter()
                                .any(|a| matches!(a.why, plan::Why::Replace(_))) =>
                        {
                            let why = kept_words(what, &replace.key.to);
                            Some((ix.plan_kept(id, why, now), None))
                        }
                        held => held,
                    };
                    let wait = |p: Option<&Plan>| {
                        p.and_then(|p| p.requeue_after)
                            .map_or(after, |a| a.min(after))
                    };
                    match held_plan {
                        Some((p, spec))
                            if !is_steady(
                                &p,
                                Some(row),
                                shown.as_ref(),
                                state.noted.get(&id),
                                complete,
                            ) =>
                        {
                            if passes >= free {
                                queue.put_back(id);
                                continue;
                            }
                            plan = p;
                            plan.requeue_after = Some(wait(Some(&plan)));
                            held_spec = Some(spec);
                            held_column = Some(state.rollouts.describe(&replace.key, what));
                        }
                        held_plan => {
                            queue.done(&id);
                            queue.add_after(id, wait(held_plan.as_ref().map(|(p, _)| p)));
                            continue;
                        }
                    }
                }
            }
            // What an undo of this pass's replace (or of a rollout's
            // replace it resumes) records as the rollout it belonged to.
            plan.memory.rollout_replace = rollout.clone();
            state.memory.insert(id, plan.memory.clone());
            // Notes made on an incomplete picture (the waits of a berth
            // just started) are passing: they go on record only once both
            // snapshots are complete and the notes still hold.
            // Of a changed set, only the notes the last one lacked are new.
            let new_notes: Vec<&String> = if !(observed_complete && state.desired_complete) {
                Vec::new()
            } else if plan.notes.is_empty() {
                state.noted.remove(&id);
                Vec::new()
            } else if state.noted.get(&id) == Some(&plan.notes) {
                Vec::new()
            } else {
                let before = state
                    .noted
                    .insert(id, plan.notes.clone())
                    .unwrap_or_default();
                plan.notes.iter().filter(|n| !before.contains(n)).collect()
            };
            let note_events: Vec<Event> = new_notes
                .into_iter()
                .map(|note| Event {
                    workspace: id,
                    action: "note".into(),
                    reason: note.clone(),
                    detail: super::guard::note_detail(note, guard_limit),
                    at: now,
                })
                .collect();
            if steady {
                // Steady state: nothing to do, nothing new to write. A
                // failure still backing off keeps its backoff.
                queue.done(&id);
                if plan
                    .memory
                    .failure
                    .as_ref()
                    .is_none_or(|f| f.retry_at <= now)
                {
                    queue.forget(&id);
                }
                if let Some(after) = plan.requeue_after {
                    queue.add_after(id, after);
                }
                self.metrics
                    .reconcile_total
                    .with_label_values(&["success"])
                    .inc();
                continue;
            }
            let spec = held_spec.unwrap_or_else(|| {
                row.as_ref()
                    .and_then(|r| plan::spec(r, &state.catalogue, &self.settings).ok())
            });
            let current = main_container(&snapshot.containers, id, &self.settings.host_id);
            let work = Work {
                plan,
                row,
                spec,
                current,
                lease: lease.clone(),
                rollout: rollout.or(held_column),
            };
            let (executor, pool, lease_rx, metrics, observed) = (
                self.executor.clone(),
                self.pool.clone(),
                lease_rx.clone(),
                self.metrics.clone(),
                self.observed.clone(),
            );
            let held = lease.clone();
            passes += 1;
            let repositories: Vec<String> = work
                .plan
                .actions
                .iter()
                .filter_map(|a| match &a.op {
                    plan::Op::EnsureImage { image, .. } => {
                        Some(crate::act::repository(image).to_string())
                    }
                    _ => None,
                })
                .collect();
            if !repositories.is_empty() {
                state.ensuring.insert(id, repositories);
            }
            let cut = state.cut_short.clone();
            workers.spawn(id, async move {
                if !note_events.is_empty() {
                    let _ = desired::record_events(&pool, &held, &note_events).await;
                }
                let begun = std::time::Instant::now();
                let span = tracing::info_span!("reconcile", workspace = %id);
                let done = tracing::Instrument::instrument(
                    carry_out(work, &executor, &pool, &lease_rx, &metrics, &observed, &cut),
                    span,
                )
                .await;
                metrics
                    .workqueue_work_duration_seconds
                    .observe(begun.elapsed().as_secs_f64());
                done
            });
        }
        self.metrics
            .reconcile_time_seconds
            .observe(started.elapsed().as_secs_f64());
    }
}

/// What the pure planner cannot see of a row's host paths: whether its
/// template dir is there and holds a config.yaml.
pub fn probe(row: &WorkspaceRow) -> Probes {
    Probes {
        template_has_config: row
            .template_path
            .as_deref()
            .map(|dir| Path::new(dir).join("config.yaml").is_file()),
        template_dir: row
            .template_path
            .as_deref()
            .map(|dir| std::fs::read_dir(dir).is_ok()),
        ..Probes::default()
    }
}

/// What a row whose own change waits for the image `to` shows while its
/// container serves on (`what`: the rollout is "waiting" for the wave, or
/// "halted").
fn kept_words(what: &str, to: &crate::model::Digest) -> String {
    let to = to.short();
    if what == "halted" {
        format!(
            "its change goes with the image {to}, whose rollout halted; its container serves on as it is"
        )
    } else {
        format!(
            "its change goes with the image {to}, in its rollout wave; its container serves on as it is until then"
        )
    }
}

/// The image `container` runs, which a replace held back keeps.
fn held_image(container: &ObservedContainer) -> crate::model::ResolvedImage {
    crate::model::ResolvedImage {
        digest: container
            .label(crate::model::LABEL_IMAGE_DIGEST)
            .and_then(|d| crate::model::Digest::parse(d).ok()),
        id: Some(container.image_id.clone()),
    }
}

/// Whether `plan` changes nothing and writes nothing new: no action, the
/// row shows its status already with the container that runs (once the
/// engine's picture is complete: a paused row's container removed by hand
/// is not shown as there), and no note it did not make before (`noted`;
/// notes count only once both snapshots are complete).
fn is_steady(
    plan: &Plan,
    row: Option<&WorkspaceRow>,
    shown: Option<&ObservedContainer>,
    noted: Option<&Vec<String>>,
    (observed_complete, desired_complete): (bool, bool),
) -> bool {
    let notes_new = observed_complete
        && desired_complete
        && !plan.notes.is_empty()
        && noted != Some(&plan.notes);
    let written = match (row, &plan.status) {
        (Some(row), Some(update)) => {
            update.shown_by(row)
                && (!observed_complete
                    || row.container_id.as_deref() == shown.map(|c| c.id.as_str()))
        }
        _ => true,
    };
    plan.actions.is_empty() && written && !notes_new
}

/// The workspace's own container (by name and label, on this host), if
/// observed: another host's under its name is no status of this row.
fn main_container(
    containers: &[ObservedContainer],
    id: WorkspaceId,
    host: &str,
) -> Option<ObservedContainer> {
    containers.iter().find(|c| c.is_main_of(id, host)).cloned()
}
