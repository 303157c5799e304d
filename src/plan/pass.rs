//! One pass over every key of a host: the union of this host's rows and
//! the workspaces its owned objects name. The guards that need the whole
//! pass live here: who keeps a contested container name, the one T4 per
//! host, and the delete guard.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::model::{
    DesiredState, ObservedContainer, ObservedVolume, Reason, ResolvedImage, Tier, WorkspaceId,
    WorkspaceRow,
};

use super::{Catalogue, Facts, InvalidSpec, Memory, Plan, Probes, Settings, plan, spec};

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
    pub desired_complete: bool,
    pub observed_complete: bool,
    pub memory: BTreeMap<WorkspaceId, Memory>,
    pub probes: BTreeMap<WorkspaceId, Probes>,
}

/// The plans of a pass, ordered by key.
#[derive(Clone, Debug, PartialEq)]
pub struct PassPlan {
    pub plans: Vec<Plan>,
    /// Set when the delete guard withheld every orphan and duplicate
    /// removal of the pass: (removals wanted, limit). An alarm: log it at
    /// error level, count `delete_guard_blocked_total`, write an event.
    pub guard_blocked: Option<(usize, usize)>,
    /// Owned objects that name no workspace berth can tell (a legacy name
    /// matching no row or several): kept and reported, never touched.
    pub unattributed: Vec<String>,
}

fn id12_of(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("ws-")?;
    rest.get(..12)
        .filter(|_| rest.len() == 12 || rest[12..].starts_with('-'))
}

pub fn plan_pass(s: &Snapshot, settings: &Settings, now: DateTime<Utc>) -> PassPlan {
    let rows: Vec<&WorkspaceRow> = s
        .rows
        .iter()
        .filter(|r| r.host == settings.host_id)
        .collect();
    let by_id12 = claims(&rows);

    let mut containers: BTreeMap<WorkspaceId, Vec<&ObservedContainer>> = BTreeMap::new();
    let mut volumes: BTreeMap<WorkspaceId, Vec<&ObservedVolume>> = BTreeMap::new();
    let mut unattributed = Vec::new();
    let legacy_owner = |name: &str| -> Option<WorkspaceId> {
        let id12 = id12_of(name)?;
        match by_id12.get(id12).map(Vec::as_slice) {
            Some([only]) => Some(only.id),
            _ => None,
        }
    };
    let named_owner = |name: &str| -> Option<WorkspaceId> {
        let id12 = id12_of(name)?;
        by_id12.get(id12)?.first().map(|r| r.id)
    };
    for c in &s.containers {
        let key = c
            .workspace()
            .or_else(|| c.is_legacy().then(|| legacy_owner(&c.name)).flatten());
        match key {
            Some(id) => containers.entry(id).or_default().push(c),
            None if c.owned_by(&settings.host_id) => unattributed.push(c.name.clone()),
            None => {}
        }
        // A container holding a row's name under another label is that
        // row's conflict.
        if let Some(id) = named_owner(&c.name).filter(|id| Some(*id) != key) {
            containers.entry(id).or_default().push(c);
        }
    }
    for v in &s.volumes {
        let full = v
            .name
            .strip_prefix("ws-")
            .and_then(|n| n.strip_suffix("-workspace"));
        let by_full = full.and_then(|f| f.parse::<WorkspaceId>().ok());
        let legacy = || by_full.or_else(|| legacy_owner(&v.name));
        let key = v
            .workspace()
            .or_else(|| v.is_legacy().then(legacy).flatten());
        match key {
            Some(id) => volumes.entry(id).or_default().push(v),
            None if v.owned_by(&settings.host_id) => unattributed.push(v.name.clone()),
            None => {}
        }
        let named = by_full
            .or_else(|| named_owner(&v.name))
            .filter(|id| Some(*id) != key);
        if let Some(id) = named {
            volumes.entry(id).or_default().push(v);
        }
    }

    let t4_holder = rows
        .iter()
        .filter(|r| Tier::from_row(r.tier) == Tier::T4 && r.desired_state != DesiredState::Removed)
        .min_by_key(|r| (r.created_at, r.id))
        .map(|r| r.id);

    let row_by_id: BTreeMap<WorkspaceId, &WorkspaceRow> = rows.iter().map(|r| (r.id, *r)).collect();
    let keys: BTreeSet<WorkspaceId> = row_by_id
        .keys()
        .chain(containers.keys())
        .chain(volumes.keys())
        .copied()
        .collect();

    let mut plans = Vec::with_capacity(keys.len());
    for id in keys {
        let row = row_by_id.get(&id).copied();
        let mut facts = Facts::empty(settings, id);
        facts.row = row;
        facts.desired_complete = s.desired_complete;
        facts.observed_complete = s.observed_complete;
        facts.containers = containers.remove(&id).unwrap_or_default();
        facts.volumes = volumes.remove(&id).unwrap_or_default();
        facts.memory = s.memory.get(&id).cloned().unwrap_or_default();
        facts.probes = s.probes.get(&id).cloned().unwrap_or_default();
        if let Some(row) = row {
            if let Some(rt) = s.catalogue.runtime(&row.runtime) {
                facts.provision_timeout =
                    rt.provision_timeout.unwrap_or(settings.provision_timeout);
            }
            let built = pass_guards(row, &by_id12, t4_holder)
                .and_then(|()| spec(row, &s.catalogue, settings));
            if let Ok(spec) = &built {
                facts.image = s
                    .images
                    .get(spec.image.as_str())
                    .cloned()
                    .unwrap_or_default();
            }
            facts.spec = Some(built);
        }
        plans.push(plan(&facts, now));
    }
    let limit = settings.delete_guard.limit(plans.len());
    let guard_blocked = apply_delete_guard(&mut plans, limit);
    unattributed.sort();
    unattributed.dedup();
    PassPlan {
        plans,
        guard_blocked,
        unattributed,
    }
}

/// Rows by the 12 characters their names share, oldest first.
fn claims<'a>(rows: &[&'a WorkspaceRow]) -> BTreeMap<String, Vec<&'a WorkspaceRow>> {
    let mut by: BTreeMap<String, Vec<&WorkspaceRow>> = BTreeMap::new();
    for r in rows {
        by.entry(r.id.id12()).or_default().push(r);
    }
    for list in by.values_mut() {
        list.sort_by_key(|r| (r.created_at, r.id));
    }
    by
}

/// The older row keeps a contested name; only the oldest T4 row holds the
/// host's one T4.
fn pass_guards(
    row: &WorkspaceRow,
    by_id12: &BTreeMap<String, Vec<&WorkspaceRow>>,
    t4_holder: Option<WorkspaceId>,
) -> Result<(), InvalidSpec> {
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

/// Rule 3: when the pass's orphan and duplicate removals exceed `limit`,
/// none of them is made. Returns (wanted, limit) when it withheld them.
pub fn apply_delete_guard(plans: &mut [Plan], limit: usize) -> Option<(usize, usize)> {
    let wanted: usize = plans.iter().map(Plan::guarded_removals).sum();
    if wanted <= limit {
        return None;
    }
    for p in plans.iter_mut().filter(|p| p.guarded_removals() > 0) {
        p.actions.retain(|a| !a.is_guarded_removal());
        p.notes.push(format!(
            "delete guard: the pass wanted {wanted} orphan/duplicate removals, over the limit of {limit}; none made"
        ));
    }
    Some((wanted, limit))
}
