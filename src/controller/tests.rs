//! The loop's knowledge between passes, from plain data.

use std::collections::BTreeMap;

use super::*;
use crate::model::{LABEL_MANAGED, LABEL_WORKSPACE, ObservedVolume, ResolvedImage, WorkspaceRow};
use crate::plan::{Catalogue, Memory, RefreshFailure};

fn id(n: u128) -> WorkspaceId {
    WorkspaceId(uuid::Uuid::from_u128(n))
}

fn volume_of(ws: WorkspaceId) -> ObservedVolume {
    ObservedVolume {
        name: ws.configs_volume(),
        labels: BTreeMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_WORKSPACE.to_string(), ws.to_string()),
        ]),
    }
}

#[tokio::test]
async fn what_nothing_names_is_forgotten_and_only_on_a_complete_picture_of_the_engine() {
    let settings = Settings::test();
    let mut state = State {
        catalogue: Catalogue::seeded(),
        ..State::default()
    };
    let (with_row, with_volume, gone) = (id(1), id(2), id(3));
    let row = WorkspaceRow::test(with_row, Utc::now());
    let used = crate::plan::choose_image(&row, &state.catalogue, &settings)
        .unwrap()
        .0
        .to_string();
    state.rows.insert(with_row, row);
    for ws in [with_row, with_volume, gone] {
        state.memory.insert(ws, Memory::default());
        state.noted.insert(ws, vec!["a note".into()]);
    }
    for reference in [used.clone(), "registry.test/ws/old:latest".to_string()] {
        state
            .images
            .insert(reference.clone(), ResolvedImage::default());
        state.held_back.insert(reference.clone(), "sha256:x".into());
        let failure = RefreshFailure {
            message: "no answer".into(),
            blocks_change: false,
        };
        state.refresh_failures.insert(reference, failure);
    }
    let mut queue = WorkQueue::new();
    for _ in 0..6 {
        queue.retry(gone);
    }

    let volumes = [volume_of(with_volume)];
    state.forget_the_gone(&settings, None, &mut queue);
    let kept: Vec<&String> = state.images.keys().collect();
    assert_eq!(kept, [&used], "references go on the rows alone");
    assert_eq!(state.held_back.keys().collect::<Vec<_>>(), [&used]);
    assert_eq!(state.refresh_failures.keys().collect::<Vec<_>>(), [&used]);
    assert_eq!(
        state.memory.len(),
        3,
        "no key goes on an incomplete picture"
    );

    state.forget_the_gone(&settings, Some((&[], &volumes)), &mut queue);
    let keys: Vec<WorkspaceId> = state.memory.keys().copied().collect();
    assert_eq!(
        keys,
        [with_row, with_volume],
        "a row or an object keeps a key"
    );
    assert_eq!(state.noted.keys().copied().collect::<Vec<_>>(), keys);
    assert!(
        queue.retry(gone) < Duration::from_secs(2),
        "the gone key's backoff starts over (it was past 32 s)"
    );
}

#[test]
fn memory_is_dropped_when_another_instance_held_the_host_since() {
    let mut state = State::default();
    let ws = id(1);
    let remember = |state: &mut State| {
        let memory = Memory {
            provisioning_since: Some(Utc::now() - chrono::TimeDelta::hours(1)),
            ..Memory::default()
        };
        state.memory.insert(ws, memory);
        state.noted.insert(ws, vec!["a note".into()]);
        state.trail_read = true;
        state.guard_held.insert(ws);
    };
    state.take_lease(3);
    remember(&mut state);
    state.take_lease(3);
    assert!(
        state.memory.contains_key(&ws) && state.trail_read,
        "the same lease again (a session back without anyone between) keeps it all"
    );
    state.take_lease(5);
    assert!(state.memory.is_empty(), "an old replace deadline survived");
    assert!(state.noted.is_empty() && state.guard_held.is_empty());
    assert!(
        !state.trail_read,
        "the guard's latch is read from the trail again"
    );
    assert_eq!(state.led, Some(5));
}

#[test]
fn a_volume_made_anew_for_a_row_that_had_a_container_is_noted_once() {
    use super::work::volume_gone;
    use crate::plan::{Action, Change, Op, Why};
    let ws = id(7);
    let mut row = WorkspaceRow::test(ws, Utc::now());
    let spec = crate::plan::spec(&row, &Catalogue::seeded(), &Settings::test()).unwrap();
    let volume = spec.volumes[0].clone();
    let ensure = |why| Action::new(Op::EnsureVolume(volume.clone()), why);
    // A new workspace: its volumes are made, nothing was lost.
    assert_eq!(
        volume_gone(Some(&row), &ensure(Why::Missing), &[], &[]),
        None
    );
    row.container_id = Some("c1".into());
    let note = volume_gone(Some(&row), &ensure(Why::Missing), &[], &[]).expect("a note");
    assert!(note.contains(&volume.name) && note.contains("made anew, empty"));
    // The planner said so already: not twice.
    let planned = crate::plan::volumes_gone_note(&[volume.name.as_str()]);
    assert_eq!(
        volume_gone(Some(&row), &ensure(Why::Missing), &[], &[planned]),
        None
    );
    // A replace that adds a volume the spec did not have before: nothing
    // was lost.
    let replace = Why::Replace(Change::SessionEpoch { from: 0, to: 1 });
    assert_eq!(volume_gone(Some(&row), &ensure(replace), &[], &[]), None);
    // A volume the same plan discarded (a new session epoch) is made anew
    // on purpose.
    let discard = Action::new(
        Op::RemoveVolume {
            name: volume.name.clone(),
            below_epoch: Some(1),
        },
        Why::Missing,
    );
    assert_eq!(
        volume_gone(Some(&row), &ensure(Why::Missing), &[discard], &[]),
        None
    );
}
