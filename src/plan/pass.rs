//! One pass over every key of a host: the union of this host's rows and
//! the workspaces its owned objects name. The guards that need the whole
//! pass live here: who keeps a contested container name, the one T4 per
//! host, whose host directory stands (`dirs`), and the delete guard
//! (`delete_guard`).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::model::{
    DesiredState, LABEL_IMAGE_DIGEST, LABEL_IMAGE_ID, ObservedContainer, ObservedVolume, OtherDir,
    Reason, ResolvedImage, Tier, WorkspaceId, WorkspaceRow,
};

use super::delete_guard::apply_delete_guard;
use super::dirs::dir_refusals;
use super::{
    Catalogue, Facts, InvalidSpec, Memory, Plan, Probes, RefreshFailure, Settings, plan, spec,
};

/// Everything a pass reads.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Rows as read; rows of other hosts are ignored.
    pub rows: Vec<WorkspaceRow>,
    pub catalogue: Catalogue,
    /// Containers carrying the managed label or a `ws-` name.
    pub containers: Vec<ObservedContainer>,
    pub volumes: Vec<ObservedVolume>,
    /// By reference text: what is known of each image now.
    pub images: BTreeMap<String, ResolvedImage>,
    /// By reference text: why the last refresh of a moving tag or local
    /// build failed, while it has not succeeded since.
    pub refresh_failures: BTreeMap<String, RefreshFailure>,
    pub desired_complete: bool,
    pub observed_complete: bool,
    pub memory: BTreeMap<WorkspaceId, Memory>,
    pub probes: BTreeMap<WorkspaceId, Probes>,
    /// The delete guard's latch: workspaces whose removals an earlier pass
    /// (of this process, or one before it, from the trail)
    /// withheld ([`PassPlan::guard_held`]), and the limit it tripped
    /// under: a limit raised above it since lets the latch go (the
    /// operator's word that the rows went on purpose).
    pub guard_held: BTreeSet<WorkspaceId>,
    pub guard_held_limit: Option<usize>,
}

/// The plans of a pass, ordered by key.
#[derive(Clone, Debug, PartialEq)]
pub struct PassPlan {
    pub plans: Vec<Plan>,
    /// Set when the delete guard withheld every orphan and duplicate
    /// removal of the pass: (removals wanted, limit). An alarm: log it at
    /// error level, count `delete_guard_blocked_total`, write an event.
    pub guard_blocked: Option<(usize, usize)>,
    /// The latch for the next pass: the workspaces whose removals this pass
    /// withheld. While one of them still wants a removal, the guard holds
    /// every orphan and duplicate removal, whatever the count: rows put
    /// back one by one do not let the rest go part way.
    pub guard_held: BTreeSet<WorkspaceId>,
    /// The limit the latch tripped under.
    pub guard_held_limit: Option<usize>,
    /// This pass's limit.
    pub guard_limit: usize,
    /// Owned objects that name no workspace berth can tell (a legacy name
    /// matching no row or several): kept and reported, never touched.
    pub unattributed: Vec<String>,
}

fn id12_of(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("ws-")?;
    rest.get(..12)
        .filter(|_| rest.len() == 12 || rest[12..].starts_with('-'))
}

/// The indexes of a snapshot, built once per pass: which rows, containers
/// and volumes belong to each key, who keeps a contested name, which row
/// holds the host's one T4.
#[derive(Debug)]
pub struct PassIndex<'s> {
    snapshot: &'s Snapshot,
    settings: &'s Settings,
    rows: BTreeMap<WorkspaceId, &'s WorkspaceRow>,
    by_id12: BTreeMap<String, Vec<&'s WorkspaceRow>>,
    containers: BTreeMap<WorkspaceId, Vec<&'s ObservedContainer>>,
    volumes: BTreeMap<WorkspaceId, Vec<&'s ObservedVolume>>,
    t4_holder: Option<WorkspaceId>,
    /// Rows refused their host directory for another row's (see
    /// [`dir_refusals`]), with why, and the older rows' directories each
    /// kept one's create checks once symlinks are followed.
    dir_refused: BTreeMap<WorkspaceId, String>,
    older_dirs: BTreeMap<WorkspaceId, Vec<OtherDir>>,
    /// Owned objects that name no workspace berth can tell.
    pub unattributed: Vec<String>,
}

impl<'s> PassIndex<'s> {
    /// Workspaces with a container of this host: the base of a percentage
    /// delete guard. Rows alone (invalid, not yet created) do not count, so
    /// no number of rows widens what one pass may delete.
    pub fn workspaces_with_containers(&self) -> usize {
        let host = &self.settings.host_id;
        self.containers
            .values()
            .filter(|cs| cs.iter().any(|c| c.owned_by(host)))
            .count()
    }

    pub fn new(s: &'s Snapshot, settings: &'s Settings) -> Self {
        let rows: Vec<&WorkspaceRow> = s
            .rows
            .iter()
            .filter(|r| r.host == settings.host_id)
            .collect();
        let (dir_refused, older_dirs) = dir_refusals(&rows, settings);
        let mut ix = PassIndex {
            snapshot: s,
            settings,
            by_id12: claims(&rows, &s.containers, &settings.host_id),
            t4_holder: rows
                .iter()
                .filter(|r| Tier::from_row(r.tier) == Tier::T4)
                .filter(|r| r.desired_state != DesiredState::Removed)
                .min_by_key(|r| (r.created_at, r.id))
                .map(|r| r.id),
            dir_refused,
            older_dirs,
            rows: rows.iter().map(|r| (r.id, *r)).collect(),
            containers: BTreeMap::new(),
            volumes: BTreeMap::new(),
            unattributed: Vec::new(),
        };
        for c in &s.containers {
            let legacy = || ix.legacy_owner(&c.name);
            let key = c
                .workspace()
                .or_else(|| c.is_legacy().then(legacy).flatten());
            // A container holding a row's name under another label is that
            // row's conflict as well.
            let named = ix.named_owner(&c.name).filter(|id| Some(*id) != key);
            match key {
                Some(id) => ix.containers.entry(id).or_default().push(c),
                None if c.owned_by(&settings.host_id) => ix.unattributed.push(c.name.clone()),
                None => {}
            }
            if let Some(id) = named {
                ix.containers.entry(id).or_default().push(c);
            }
        }
        for v in &s.volumes {
            let full = v
                .name
                .strip_prefix("ws-")
                .and_then(|n| n.strip_suffix("-workspace"))
                .and_then(|f| f.parse::<WorkspaceId>().ok());
            let legacy = || full.or_else(|| ix.legacy_owner(&v.name));
            let implicit = full.filter(|id| v.is_implicit_workspace_volume(*id));
            let key = v
                .workspace()
                .or(implicit)
                .or_else(|| v.is_legacy().then(legacy).flatten());
            let named = full
                .or_else(|| ix.named_owner(&v.name))
                .filter(|id| Some(*id) != key);
            match key {
                Some(id) => ix.volumes.entry(id).or_default().push(v),
                None if v.owned_by(&settings.host_id) => ix.unattributed.push(v.name.clone()),
                None => {}
            }
            if let Some(id) = named {
                ix.volumes.entry(id).or_default().push(v);
            }
        }
        ix.unattributed.sort();
        ix.unattributed.dedup();
        ix
    }

    /// A legacy object belongs to the row its name names, when exactly one
    /// row of this host matches.
    fn legacy_owner(&self, name: &str) -> Option<WorkspaceId> {
        match self.by_id12.get(id12_of(name)?).map(Vec::as_slice) {
            Some([only]) => Some(only.id),
            _ => None,
        }
    }

    /// The row that holds a name (the oldest of those that share it).
    fn named_owner(&self, name: &str) -> Option<WorkspaceId> {
        self.by_id12.get(id12_of(name)?)?.first().map(|r| r.id)
    }

    /// Every key of the pass: this host's rows and the workspaces its
    /// objects name, in order.
    pub fn keys(&self) -> BTreeSet<WorkspaceId> {
        self.rows
            .keys()
            .chain(self.containers.keys())
            .chain(self.volumes.keys())
            .copied()
            .collect()
    }

    /// The facts for one key.
    pub fn facts(&self, id: WorkspaceId) -> Facts<'s> {
        self.facts_holding(id, None)
    }

    /// Plans a workspace whose image change a rollout holds back (its
    /// wave has not come, or the rollout halted) onto the image its
    /// container runs (`held`: that image's digest and ID), with the spec
    /// it planned on: the changes of the row that keep its container (a
    /// stop, a start, an unpause, a restart, a container stopped by hand)
    /// go on while the image waits. The delete guard is not applied: the
    /// caller uses no plan with a guarded removal, nor one that replaces
    /// the container (an env edit goes with the image, in its wave).
    pub fn plan_held(
        &self,
        id: WorkspaceId,
        held: &ResolvedImage,
        now: DateTime<Utc>,
    ) -> (Plan, Option<crate::model::ContainerSpec>) {
        let facts = self.facts_holding(id, Some(held));
        let spec = facts.spec.clone().and_then(Result::ok);
        (plan(&facts, now), spec)
    }

    /// Plans a workspace whose own change (an env edit) waits for the
    /// image a rollout holds back, the change going with the image in its
    /// wave: only its container as it is, looked after in place (started
    /// when down, restarted for its epoch), the row showing `why` while it
    /// serves. No removal is planned.
    pub fn plan_kept(&self, id: WorkspaceId, why: String, now: DateTime<Utc>) -> Plan {
        let mut facts = self.facts_holding(id, None);
        facts.held_change = Some(why);
        plan(&facts, now)
    }

    /// The facts for one key, with its image held at `held` (see
    /// [`PassIndex::plan_held`]) when given.
    fn facts_holding(&self, id: WorkspaceId, held: Option<&ResolvedImage>) -> Facts<'s> {
        let (s, settings) = (self.snapshot, self.settings);
        let row = self.rows.get(&id).copied();
        let mut facts = Facts::empty(settings, id);
        facts.row = row;
        facts.desired_complete = s.desired_complete;
        facts.observed_complete = s.observed_complete;
        facts.containers = self.containers.get(&id).cloned().unwrap_or_default();
        facts.volumes = self.volumes.get(&id).cloned().unwrap_or_default();
        facts.memory = s.memory.get(&id).cloned().unwrap_or_default();
        facts.probes = s.probes.get(&id).cloned().unwrap_or_default();
        facts.shared_name = self.by_id12.get(&id.id12()).is_some_and(|l| l.len() > 1);
        if let Some(row) = row {
            if let Some(rt) = s.catalogue.runtime(&row.runtime) {
                facts.provision_timeout =
                    rt.provision_timeout.unwrap_or(settings.provision_timeout);
            }
            // The row's own faults are told first; then what other rows
            // stand in its way.
            let built = spec(row, &s.catalogue, settings).and_then(|spec| {
                let dir = self.dir_refused.get(&row.id);
                pass_guards(row, &self.by_id12, self.t4_holder, dir).map(|()| spec)
            });
            // A held pin names the digest the container runs: the spec is
            // made as if the pin still named it.
            let built = match (built, held.and_then(|h| h.digest.as_ref())) {
                (Ok(made), Some(digest)) => match &made.image_source {
                    crate::model::ImageSource::Pinned { ring } => {
                        let mut catalogue = s.catalogue.clone();
                        catalogue.set_pin(&row.runtime, ring, digest.clone());
                        spec(row, &catalogue, settings)
                    }
                    _ => Ok(made),
                },
                (built, _) => built,
            };
            let built = built.map(|mut spec| {
                facts.image = match held {
                    Some(held) => held.clone(),
                    None => s
                        .images
                        .get(spec.image.as_str())
                        .cloned()
                        .unwrap_or_default(),
                };
                facts.refresh_failure = s.refresh_failures.get(spec.image.as_str()).cloned();
                if let Some(digest) = &facts.image.digest {
                    spec.labels
                        .insert(LABEL_IMAGE_DIGEST.into(), digest.to_string());
                }
                if let Some(image_id) = &facts.image.id {
                    spec.labels.insert(LABEL_IMAGE_ID.into(), image_id.clone());
                }
                spec.other_dirs = self.older_dirs.get(&id).cloned().unwrap_or_default();
                spec
            });
            facts.spec = Some(built);
        }
        facts
    }
}

/// Plans every key of the snapshot and applies the delete guard.
pub fn plan_pass(s: &Snapshot, settings: &Settings, now: DateTime<Utc>) -> PassPlan {
    let ix = PassIndex::new(s, settings);
    let mut plans: Vec<Plan> = ix
        .keys()
        .into_iter()
        .map(|id| plan(&ix.facts(id), now))
        .collect();
    let limit = settings.delete_guard.limit(ix.workspaces_with_containers());
    // A limit raised above the one the latch tripped under lets it go.
    let latched = match s.guard_held_limit {
        Some(tripped) if limit > tripped => BTreeSet::new(),
        _ => s.guard_held.clone(),
    };
    let (guard_blocked, mut guard_held) = apply_delete_guard(&mut plans, limit, &latched);
    let mut guard_held_limit = match guard_blocked {
        Some((wanted, _)) if wanted > limit => Some(limit),
        _ if !guard_held.is_empty() => s.guard_held_limit.or(Some(limit)),
        _ => None,
    };
    // No removal is planned on incomplete knowledge, which says nothing of
    // whether the held ones are still wanted: the latch stays.
    if !(s.desired_complete && s.observed_complete) {
        guard_held = s.guard_held.clone();
        guard_held_limit = s.guard_held_limit;
    }
    PassPlan {
        plans,
        guard_blocked,
        guard_held,
        guard_held_limit,
        guard_limit: limit,
        unattributed: ix.unattributed,
    }
}

/// Plans one key with the pass-wide name and T4 guards. The delete guard
/// spans a pass: a caller planning key by key counts
/// [`Plan::guarded_removals`] itself (or uses [`apply_delete_guard`]).
pub fn plan_key(s: &Snapshot, settings: &Settings, id: WorkspaceId, now: DateTime<Utc>) -> Plan {
    plan(&PassIndex::new(s, settings).facts(id), now)
}

/// Rows by the 12 characters their names share, the one that holds the
/// names first: the row whose own container (by label) bears them, else
/// the oldest. A row inserted later (with an earlier `created_at`, say)
/// never takes the names from the workspace running under them.
fn claims<'a>(
    rows: &[&'a WorkspaceRow],
    containers: &[ObservedContainer],
    host: &str,
) -> BTreeMap<String, Vec<&'a WorkspaceRow>> {
    let mut by: BTreeMap<String, Vec<&WorkspaceRow>> = BTreeMap::new();
    for r in rows {
        by.entry(r.id.id12()).or_default().push(r);
    }
    let shared = |list: &Vec<&WorkspaceRow>| list.len() > 1;
    for list in by.values_mut().filter(|l| shared(l)) {
        let holds = |r: &WorkspaceRow| {
            containers.iter().any(|c| {
                c.owned_by(host)
                    && c.workspace() == Some(r.id)
                    && (c.name == r.id.container_name() || c.name == r.id.prev_container_name())
            })
        };
        list.sort_by_key(|r| (!holds(r), r.created_at, r.id));
    }
    by
}

/// The older row keeps a contested name; only the oldest T4 row holds the
/// host's one T4; `dir_refused` says why the row may not mount its
/// directory (see [`dir_refusals`]).
fn pass_guards(
    row: &WorkspaceRow,
    by_id12: &BTreeMap<String, Vec<&WorkspaceRow>>,
    t4_holder: Option<WorkspaceId>,
    dir_refused: Option<&String>,
) -> Result<(), InvalidSpec> {
    if let Some(why) = dir_refused {
        return Err(InvalidSpec::invalid(why.clone()));
    }
    if let Some(first) = by_id12.get(&row.id.id12()).and_then(|l| l.first())
        && first.id != row.id
    {
        return Err(InvalidSpec::new(
            Reason::NameConflict,
            format!(
                "container name {} is held by the older workspace {}",
                row.id.container_name(),
                first.id
            ),
        ));
    }
    if Tier::from_row(row.tier) == Tier::T4
        && let Some(holder) = t4_holder
        && holder != row.id
    {
        return Err(InvalidSpec::new(
            Reason::TierNotAllowed,
            format!("workspace {holder} already holds this host's one tier 4"),
        ));
    }
    Ok(())
}
