//! Properties over the generated hosts of `world`, carried out on the
//! host model of `host_model`.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::host_model::Host;
use super::world::{World, build, snapshot, world};
use super::*;
use crate::model::{DeleteGuard, DesiredState, Status};
use crate::plan::{Change, PassPlan, Target, plan_pass};

/// Cases per property.
pub const CASES: u32 = 512;

fn loose() -> Settings {
    Settings {
        delete_guard: DeleteGuard::Count(1000),
        ..Settings::test()
    }
}

/// The objects of `id` berth owns in `host`, read from the labels as
/// DESIGN §1.3 spells them (not through the model's own ownership test,
/// which the planner uses): the managed label and this host with the
/// workspace's label, or the managed label alone (the Go provisioner's)
/// under one of the workspace's names; and the Go provisioner's
/// unlabelled /workspace volume.
fn owned_ids(host: &Host, id: WorkspaceId, settings: &Settings) -> (Vec<String>, Vec<String>) {
    let ours = |labels: &BTreeMap<String, String>, names: &[String], name: &str| {
        let get = |k: &str| labels.get(k).map(String::as_str);
        let managed = get("molecule.platform.managed") == Some("true");
        let labelled = get("berth.host") == Some(settings.host_id.as_str())
            && get("berth.workspace") == Some(id.to_string().as_str());
        let go = ["berth.host", "berth.workspace", "berth.spec-hash"]
            .iter()
            .all(|k| get(k).is_none())
            && names.iter().any(|n| n == name);
        managed && (labelled || go)
    };
    let container_names = [id.container_name(), id.prev_container_name()];
    let containers = host
        .containers
        .iter()
        .filter(|c| ours(&c.labels, &container_names, &c.name))
        .map(|c| c.id.clone())
        .collect();
    let volume_names = id.volume_names();
    let volumes = host
        .volumes
        .iter()
        .filter(|v| {
            ours(&v.labels, &volume_names, &v.name)
                || (v.labels.is_empty() && v.name == format!("ws-{id}-workspace"))
        })
        .map(|v| v.name.clone())
        .collect();
    (containers, volumes)
}

/// Whether an object berth does not own (by [`owned_ids`]) holds one of
/// `id`'s container or volume names.
fn conflicted(host: &Host, id: WorkspaceId, settings: &Settings) -> bool {
    let (containers, volumes) = owned_ids(host, id, settings);
    let names = [id.container_name(), id.prev_container_name()];
    host.containers
        .iter()
        .any(|c| names.contains(&c.name) && !containers.contains(&c.id))
        || host
            .volumes
            .iter()
            .any(|v| id.volume_names().contains(&v.name) && !volumes.contains(&v.name))
}

fn run_rounds(
    w: &World,
    settings: &Settings,
) -> Result<(Vec<WorkspaceRow>, Host, PassPlan), TestCaseError> {
    let (rows, mut host) = build(w, settings);
    let mut memory = BTreeMap::new();
    let mut held = Default::default();
    let mut now = t0();
    for _ in 0..8 {
        let mut snap = snapshot(&rows, &host, w);
        snap.memory = memory.clone();
        snap.guard_held = held;
        let pass = plan_pass(&snap, settings, now);
        held = pass.guard_held.clone();
        // A pass with nothing to do while a container is still proving
        // itself (an old one kept beside it until then) is no fixpoint:
        // time passes and the checks settle first.
        let proving = pass.plans.iter().any(|p| {
            p.status.as_ref().and_then(|s| s.reason) == Some(crate::model::Reason::WaitingReady)
        });
        // Nor is one whose removed rows still hold their volumes.
        let holding = pass.plans.iter().any(|p| {
            p.requeue_after.is_some()
                && rows
                    .iter()
                    .any(|r| r.id == p.id && r.desired_state == DesiredState::Removed)
        });
        if !proving && !holding && pass.plans.iter().all(|p| p.actions.is_empty()) {
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
    // No regression files: the layout keeps the top level clean, and every
    // case a property found is a named table test instead.
    #![proptest_config(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Idempotence: carrying out the plans on a model of the host and
    /// planning again reaches a pass with no action, and at most one
    /// container per workspace that is not failed or paused.
    #[test]
    fn plans_reach_a_fixpoint_with_one_container_per_workspace(w in world(true)) {
        let settings = loose();
        let (rows, host, last) = run_rounds(&w, &settings)?;
        for p in &last.plans {
            let row = rows.iter().find(|r| r.id == p.id);
            // A stranger under one of its names stops every action on
            // the workspace, a duplicate's removal included.
            let failed_or_paused = matches!(
                p.status.as_ref().map(|s| s.status),
                Some(Status::Failed | Status::Paused)
            ) || conflicted(&host, p.id, &settings);
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
    /// `removed` or the session epoch moved; every status is one of the
    /// closed table's pairs.
    #[test]
    fn actions_touch_only_owned_objects_and_volumes_only_on_removal(w in world(false)) {
        let settings = Settings::test();
        let (rows, host) = build(&w, &settings);
        let pass = plan_pass(&snapshot(&rows, &host, &w), &settings, t0());
        for p in &pass.plans {
            let (containers, volumes) = owned_ids(&host, p.id, &settings);
            let row = rows.iter().find(|r| r.id == p.id);
            // The status stays inside the closed table of DESIGN §1.2.
            if let Some(st) = &p.status {
                match st.reason {
                    Some(reason) => prop_assert_eq!(reason.status(), st.status),
                    None => prop_assert!(matches!(
                        st.status,
                        Status::Online | Status::Stopped | Status::Paused | Status::Removed
                    )),
                }
            }
            let restore = p.restore.iter().flat_map(|r| r.actions.iter());
            for a in p.actions.iter().chain(restore) {
                if let Some(Target::Id(id)) = a.op.target() {
                    prop_assert!(containers.contains(id), "{a} on {id} not owned by {}", p.id);
                }
                if let Op::RemoveVolume { name, .. } = &a.op {
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

    /// Any env object either makes a spec whose environment starts with
    /// the defaults and never repeats a key, or is `invalid_spec`.
    #[test]
    fn any_env_object_makes_unique_keys_or_an_invalid_spec(
        env in prop::collection::btree_map(
            "[A-Z_=\u{0}a-z]{0,6}",
            prop_oneof![
                4 => "[ -~\u{0}]{0,12}".prop_map(serde_json::Value::from),
                1 => any::<i64>().prop_map(serde_json::Value::from),
            ],
            0..8,
        )
    ) {
        let r = row(1).with_env(serde_json::Value::Object(env.into_iter().collect()));
        match spec(&r, &Catalogue::seeded(), &Settings::test()) {
            Ok(s) => {
                let keys: Vec<&str> = s.material.env.iter().map(|e| e.key.as_str()).collect();
                let unique: std::collections::BTreeSet<&&str> = keys.iter().collect();
                prop_assert_eq!(unique.len(), keys.len());
                prop_assert_eq!(&keys[..3], &["WORKSPACE_ID", "WORKSPACE_CONFIG_PATH", "PLATFORM_URL"]);
            }
            Err(e) => prop_assert_eq!(e.reason, crate::model::Reason::InvalidSpec),
        }
    }

    /// Image reference parsing never panics on any text.
    #[test]
    fn image_references_parse_any_text_without_panic(text in "[a-zA-Z0-9:/@._\\- ]{0,80}") {
        let _ = crate::model::ImageRef::parse(&text);
    }

    /// A reference built by the grammar parses, and its tag and digest
    /// are the ones it was built with; an upper-case letter in a path
    /// component or a digest of the wrong length is refused.
    #[test]
    fn grammatical_image_references_parse_into_their_parts(
        registry in proptest::option::of(prop_oneof![
            Just("localhost".to_string()),
            "[a-z]([a-z0-9-]{0,7}[a-z0-9])?(\\.[a-z]([a-z0-9-]{0,7}[a-z0-9])?){1,2}",
            "127\\.0\\.0\\.1:[1-9][0-9]{1,4}",
        ]),
        path in proptest::collection::vec("[a-z0-9]{1,6}([._-][a-z0-9]{1,4})?", 1..4),
        tag in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
        digest in proptest::option::of("[0-9a-f]{64}"),
        upper in 0..26u8,
    ) {
        let name = registry.iter().cloned().chain(path.iter().cloned()).collect::<Vec<_>>().join("/");
        let text = format!(
            "{name}{}{}",
            tag.as_ref().map(|t| format!(":{t}")).unwrap_or_default(),
            digest.as_ref().map(|d| format!("@sha256:{d}")).unwrap_or_default(),
        );
        let image = crate::model::ImageRef::parse(&text);
        prop_assert!(image.is_ok(), "{text}: {image:?}");
        let image = image.unwrap();
        prop_assert_eq!(image.as_str(), text.as_str());
        prop_assert_eq!(image.tag(), tag.as_deref());
        prop_assert_eq!(image.digest().map(|d| d.as_str().to_string()), digest.as_ref().map(|d| format!("sha256:{d}")));
        prop_assert_eq!(image.is_moving(), digest.is_none());
        // The last path component with an upper-case letter in front.
        let shouting = text.replacen(&format!("/{}", path[path.len() - 1]), &format!("/{}{}", char::from(b'A' + upper), path[path.len() - 1]), 1);
        if shouting != text {
            prop_assert!(crate::model::ImageRef::parse(&shouting).is_err(), "{shouting}");
        }
        if let Some(d) = &digest {
            let short = text.replace(d.as_str(), &d[1..]);
            prop_assert!(crate::model::ImageRef::parse(&short).is_err(), "{short}");
        }
    }
}
