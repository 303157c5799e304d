//! Properties over generated hosts: rows in every desired state beside
//! containers in every Docker state, named and labelled every way berth
//! may find them.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;

use super::host_model::Host;
use super::*;
use crate::model::{DeleteGuard, DesiredState, LABEL_HOST, LABEL_SESSION_EPOCH, Status};
use crate::plan::{Change, PassPlan, Snapshot, Target, plan_pass};

/// Cases per property.
pub const CASES: u32 = 512;

#[derive(Clone, Debug)]
struct RowGen {
    state: DesiredState,
    paused: bool,
    tier: i32,
    claude: bool,
    env: u8,
    restart_epoch: i64,
    session_epoch: i64,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Current,
    Stale,
    Legacy,
    Foreign,
    OtherHost,
}

#[derive(Clone, Copy, Debug)]
enum Name {
    Main,
    Prev,
    Odd,
}

#[derive(Clone, Debug)]
struct ContainerGen {
    kind: Kind,
    name: Name,
    state: ContainerState,
    health: crate::model::Health,
    age_min: i64,
}

#[derive(Clone, Debug)]
struct WsGen {
    row: Option<RowGen>,
    containers: Vec<ContainerGen>,
    configs_volume: bool,
    sessions_epoch: Option<i64>,
}

#[derive(Clone, Debug)]
struct World {
    workspaces: Vec<WsGen>,
    desired_complete: bool,
    observed_complete: bool,
}

fn row_gen() -> impl Strategy<Value = RowGen> {
    (
        prop_oneof![
            6 => Just(DesiredState::Running),
            2 => Just(DesiredState::Stopped),
            2 => Just(DesiredState::Removed)
        ],
        prop::bool::weighted(0.1),
        0..4i32,
        any::<bool>(),
        0..3u8,
        0..2i64,
        0..2i64,
    )
        .prop_map(
            |(state, paused, tier, claude, env, restart_epoch, session_epoch)| RowGen {
                state,
                paused,
                tier,
                claude,
                env,
                restart_epoch,
                session_epoch,
            },
        )
}

fn container_gen() -> impl Strategy<Value = ContainerGen> {
    use crate::model::Health;
    (
        prop_oneof![
            5 => Just(Kind::Current),
            3 => Just(Kind::Stale),
            1 => Just(Kind::Legacy),
            1 => Just(Kind::Foreign),
            1 => Just(Kind::OtherHost)
        ],
        prop_oneof![4 => Just(Name::Main), 2 => Just(Name::Prev), 1 => Just(Name::Odd)],
        prop_oneof![
            5 => Just(ContainerState::Running),
            2 => Just(ContainerState::Exited),
            1 => Just(ContainerState::Created),
            1 => Just(ContainerState::Restarting),
            1 => Just(ContainerState::Dead)
        ],
        prop_oneof![
            Just(Health::Healthy),
            Just(Health::None),
            Just(Health::Starting),
            Just(Health::Unhealthy)
        ],
        0..60i64,
    )
        .prop_map(|(kind, name, state, health, age_min)| ContainerGen {
            kind,
            name,
            state,
            health,
            age_min,
        })
}

fn world(complete: bool) -> impl Strategy<Value = World> {
    let ws = (
        prop::option::weighted(0.8, row_gen()),
        prop::collection::vec(container_gen(), 0..4),
        any::<bool>(),
        prop::option::of(0..3i64),
    )
        .prop_map(|(row, containers, configs_volume, sessions_epoch)| WsGen {
            row,
            containers,
            configs_volume,
            sessions_epoch,
        });
    let flags = if complete {
        Just((true, true)).boxed()
    } else {
        (any::<bool>(), any::<bool>()).boxed()
    };
    (prop::collection::vec(ws, 1..7), flags).prop_map(|(workspaces, (d, o))| World {
        workspaces,
        desired_complete: d,
        observed_complete: o,
    })
}

fn make_row(n: u32, g: &RowGen) -> WorkspaceRow {
    let mut r = row(n)
        .with_state(g.state)
        .with_tier(g.tier)
        .with_runtime(if g.claude { "claude-code" } else { "langgraph" })
        .with_env(json!({"V": g.env.to_string()}));
    r.paused = g.paused;
    r.restart_epoch = g.restart_epoch;
    r.session_epoch = g.session_epoch;
    r.desired_changed_at = t0() - mins(30);
    r
}

/// The host and rows a generated world describes (names stay unique).
fn build(w: &World, settings: &Settings) -> (Vec<WorkspaceRow>, Host) {
    let mut rows = Vec::new();
    let mut host = Host::default();
    for (i, g) in w.workspaces.iter().enumerate() {
        let n = i as u32 + 1;
        let id = wid(n);
        let r = g.row.as_ref().map(|rg| make_row(n, rg));
        let base = r.clone().unwrap_or_else(|| row(n));
        let current = built(
            &WorkspaceRow {
                paused: false,
                ..base.clone()
            }
            .with_state(DesiredState::Running),
            settings,
        );
        let stale = built(&base.clone().with_env(json!({"V": "stale"})), settings);
        for (j, cg) in g.containers.iter().enumerate() {
            let mut c = match cg.kind {
                Kind::Current | Kind::Foreign | Kind::OtherHost => container_for(&current, ""),
                Kind::Stale => container_for(&stale, ""),
                Kind::Legacy => legacy_container(id, ""),
            };
            c.id = format!("w{n}-c{j}");
            c.name = match cg.name {
                Name::Main => id.container_name(),
                Name::Prev => id.prev_container_name(),
                Name::Odd => format!("ws-odd-{n}-{j}"),
            };
            if matches!(cg.kind, Kind::Legacy) {
                c.name = id.container_name();
            }
            match cg.kind {
                Kind::Foreign => c.labels = BTreeMap::new(),
                Kind::OtherHost => {
                    c.labels.insert(LABEL_HOST.into(), "other".into());
                }
                _ => {}
            }
            // A stranger under another name may mount anything; berth does
            // not see it, and Docker's refusal to remove a volume it holds
            // is the executor's error to report, not a plan to test here.
            if matches!(
                (cg.kind, cg.name),
                (Kind::Foreign | Kind::OtherHost, Name::Odd)
            ) {
                c.material = None;
            }
            c.state = cg.state;
            c.health = cg.health;
            c.created = t0() - mins(cg.age_min + 1);
            c.started_at = (cg.state != ContainerState::Created).then(|| t0() - mins(cg.age_min));
            if host.by_name(&c.name).is_none() {
                host.containers.push(c);
            }
        }
        if g.configs_volume {
            host.volumes
                .push(volume(id, &id.configs_volume(), "default"));
        }
        if let Some(epoch) = g.sessions_epoch {
            let mut v = volume(id, &id.sessions_volume(), "default");
            v.labels
                .insert(LABEL_SESSION_EPOCH.into(), epoch.to_string());
            host.volumes.push(v);
        }
        rows.extend(r);
    }
    (rows, host)
}

fn snapshot(rows: &[WorkspaceRow], host: &Host, w: &World) -> Snapshot {
    Snapshot {
        rows: rows.to_vec(),
        catalogue: Catalogue::seeded(),
        containers: host.containers.clone(),
        volumes: host.volumes.clone(),
        desired_complete: w.desired_complete,
        observed_complete: w.observed_complete,
        ..Snapshot::default()
    }
}

fn loose() -> Settings {
    Settings {
        delete_guard: DeleteGuard::Count(1000),
        ..Settings::test()
    }
}

/// The objects of `id` berth owns in `host`.
fn owned_ids(host: &Host, id: WorkspaceId, settings: &Settings) -> (Vec<String>, Vec<String>) {
    let names = [id.container_name(), id.prev_container_name()];
    let containers = host
        .containers
        .iter()
        .filter(|c| c.owned_by(&settings.host_id))
        .filter(|c| c.workspace() == Some(id) || (c.is_legacy() && names.contains(&c.name)))
        .map(|c| c.id.clone())
        .collect();
    let vnames = id.volume_names();
    let volumes = host
        .volumes
        .iter()
        .filter(|v| v.owned_by(&settings.host_id))
        .filter(|v| v.workspace() == Some(id) || (v.is_legacy() && vnames.contains(&v.name)))
        .map(|v| v.name.clone())
        .collect();
    (containers, volumes)
}

fn run_rounds(
    w: &World,
    settings: &Settings,
) -> Result<(Vec<WorkspaceRow>, Host, PassPlan), TestCaseError> {
    let (rows, mut host) = build(w, settings);
    let mut memory = BTreeMap::new();
    let mut now = t0();
    for _ in 0..8 {
        let mut snap = snapshot(&rows, &host, w);
        snap.memory = memory.clone();
        let pass = plan_pass(&snap, settings, now);
        if pass.plans.iter().all(|p| p.actions.is_empty()) {
            return Ok((rows, host, pass));
        }
        memory.clear();
        for p in &pass.plans {
            host.apply(p, now)
                .map_err(|e| TestCaseError::fail(format!("{}: {e}", p.id)))?;
            memory.insert(p.id, p.memory.clone());
        }
        now += mins(10);
        host.settle();
    }
    Err(TestCaseError::fail("no fixpoint within 8 passes"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// Idempotence: carrying out the plans on a model of the host and
    /// planning again reaches a pass with no action, and at most one
    /// container per workspace that is not failed or paused.
    #[test]
    fn plans_reach_a_fixpoint_with_one_container_per_workspace(w in world(true)) {
        let settings = loose();
        let (rows, host, last) = run_rounds(&w, &settings)?;
        for p in &last.plans {
            let row = rows.iter().find(|r| r.id == p.id);
            let failed_or_paused = matches!(
                p.status.as_ref().map(|s| s.status),
                Some(Status::Failed | Status::Paused)
            );
            if row.is_some() && !failed_or_paused {
                let (owned, _) = owned_ids(&host, p.id, &settings);
                prop_assert!(owned.len() <= 1, "{}: {owned:?}", p.id);
            }
            if !failed_or_paused && row.is_some_and(|r| r.desired_state == DesiredState::Removed) {
                prop_assert_eq!(owned_ids(&host, p.id, &settings), (vec![], vec![]));
            }
        }
    }

    /// No action, restore path included, addresses an object the
    /// workspace does not own; no volume goes unless its row says
    /// `removed` or the session epoch moved.
    #[test]
    fn actions_touch_only_owned_objects_and_volumes_only_on_removal(w in world(false)) {
        let settings = Settings::test();
        let (rows, host) = build(&w, &settings);
        let pass = plan_pass(&snapshot(&rows, &host, &w), &settings, t0());
        for p in &pass.plans {
            let (containers, volumes) = owned_ids(&host, p.id, &settings);
            let row = rows.iter().find(|r| r.id == p.id);
            let restore = p.restore.iter().flat_map(|r| r.actions.iter());
            for a in p.actions.iter().chain(restore) {
                if let Some(Target::Id(id)) = a.op.target() {
                    prop_assert!(containers.contains(id), "{a} on {id} not owned by {}", p.id);
                }
                if let Op::RemoveVolume { name } = &a.op {
                    prop_assert!(volumes.contains(name), "{a}");
                    let removed = row.is_some_and(|r| r.desired_state == DesiredState::Removed);
                    let session = matches!(a.why, Why::Replace(Change::SessionEpoch { .. }));
                    prop_assert!(removed || (session && *name == p.id.sessions_volume()), "{a}");
                }
            }
        }
    }

    /// Orphan and duplicate removals: none on incomplete knowledge, never
    /// more in a pass than the guard allows.
    #[test]
    fn guarded_removals_need_complete_knowledge_and_stay_under_the_guard(w in world(false), grace_seen in any::<bool>()) {
        let settings = Settings { delete_guard: DeleteGuard::Count(2), ..Settings::test() };
        let (rows, host) = build(&w, &settings);
        let mut snap = snapshot(&rows, &host, &w);
        if grace_seen {
            let seen = crate::plan::Memory { orphan_since: Some(t0() - mins(60)), orphan_sightings: 3, ..Default::default() };
            snap.memory = (1..=7).map(|n| (wid(n), seen.clone())).collect();
        }
        let pass = plan_pass(&snap, &settings, t0());
        let removals: usize = pass.plans.iter().map(Plan::guarded_removals).sum();
        if !(w.desired_complete && w.observed_complete) {
            prop_assert_eq!(removals, 0);
        }
        prop_assert!(removals <= 2);
    }

    /// A replace orders ensure image → stop old → rename old → create →
    /// start → ready → remove old; failing at any step after the stop and
    /// running the restore path brings the old container back under its
    /// name, running.
    #[test]
    fn a_replace_is_ordered_and_its_restore_brings_the_old_container_back(w in world(true), fail_at in 0usize..16) {
        let settings = loose();
        let (rows, host) = build(&w, &settings);
        let pass = plan_pass(&snapshot(&rows, &host, &w), &settings, t0());
        for p in &pass.plans {
            let Some(restore) = &p.restore else { continue };
            let Some(old) = &restore.previous else { continue };
            let seq: Vec<&str> = ops(p);
            let old_t = Target::Id(old.clone());
            let pos = |f: &dyn Fn(&Op) -> bool| p.actions.iter().position(|a| f(&a.op));
            let order = [
                pos(&|op| matches!(op, Op::EnsureImage { .. })),
                pos(&|op| matches!(op, Op::Stop { target, .. } if *target == old_t)),
                pos(&|op| matches!(op, Op::Rename { target, to } if *target == old_t && *to == p.id.prev_container_name())),
                pos(&|op| matches!(op, Op::Create(_))),
                pos(&|op| matches!(op, Op::Start { target: Target::Created })),
                pos(&|op| matches!(op, Op::WaitReady { target: Target::Created, .. })),
            ];
            prop_assert!(order.iter().all(Option::is_some), "{seq:?}");
            prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "{seq:?}");
            let last = p.actions.last().map(|a| &a.op);
            prop_assert_eq!(last, Some(&Op::RemoveContainer { target: Target::Id(old.clone()) }));
            prop_assert_eq!(p.actions[restore.from].op.name(), "stop");

            let k = restore.from + fail_at % (p.actions.len() - 1 - restore.from);
            let mut model = host.clone();
            let mut created = None;
            model.run(&p.actions[..k], &mut created, t0()).map_err(TestCaseError::fail)?;
            model.run(&restore.actions, &mut created, t0()).map_err(TestCaseError::fail)?;
            let back = model.by_name(&p.id.container_name());
            prop_assert!(back.is_some_and(|c| c.id == *old && c.state == ContainerState::Running), "{back:?}");
            prop_assert!(model.by_name(&p.id.prev_container_name()).is_none());
        }
    }

    /// A paused row gets no action, whatever its containers look like.
    #[test]
    fn a_paused_row_gets_no_action(w in world(false)) {
        let settings = Settings::test();
        let (mut rows, host) = build(&w, &settings);
        for r in &mut rows {
            r.paused = true;
        }
        let pass = plan_pass(&snapshot(&rows, &host, &w), &settings, t0());
        for p in pass.plans.iter().filter(|p| rows.iter().any(|r| r.id == p.id)) {
            prop_assert!(p.actions.is_empty(), "{:?}", p.actions);
            prop_assert_eq!(p.status.as_ref().map(|s| s.status), Some(Status::Paused));
        }
    }
}
