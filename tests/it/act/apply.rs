//! The planner's own plan for a missing container, run op by op through
//! `Executor::apply`, the way the controller runs it.

use berth::act::{Outcome, Run};
use berth::model::Secret;
use berth::plan::{self, Facts, Op, Target};

use super::Fixture;

#[tokio::test]
async fn the_planners_plan_for_a_missing_container_runs_through_apply() {
    let f = Fixture::new().await;
    let mut row = f.row();
    row.auth_token = Some(Secret::new("tok".into()));
    let spec = f.spec(&row);
    let mut facts = Facts::empty(&f.settings, row.id);
    facts.row = Some(&row);
    facts.spec = Some(Ok(spec.clone()));
    let plan = plan::plan(&facts, chrono::Utc::now());
    let names: Vec<&str> = plan.actions.iter().map(|a| a.op.name()).collect();
    assert_eq!(names.first(), Some(&"ensure_image"), "{names:?}");
    assert_eq!(names.last(), Some(&"wait_ready"), "{names:?}");

    let mut run = Run::default();
    let mut outcomes = Vec::new();
    for action in &plan.actions {
        outcomes.push(f.exec.apply(&action.op, &mut run).await.unwrap());
    }
    let created = run.created.clone().expect("the plan created a container");
    assert!(matches!(&outcomes[0], Outcome::Image(i) if !i.id.is_empty()));
    assert!(outcomes.contains(&Outcome::Created {
        id: created.clone()
    }));
    assert!(matches!(outcomes.last(), Some(Outcome::WaitReady { id, .. }) if *id == created));
    let info = f.inspect(&created).await;
    assert_eq!(info.state.unwrap().running, Some(true));
    let token = f.download(&created, "/configs/.auth_token").await;
    assert_eq!(token[0].2, b"tok");

    // The way back removes what this plan created; a second run of it
    // finds nothing left to do.
    let restore = plan.restore.expect("a create has a way back");
    for action in &restore.actions {
        assert_eq!(
            f.exec.apply(&action.op, &mut run).await.unwrap(),
            Outcome::Done
        );
        assert_eq!(
            f.exec.apply(&action.op, &mut run).await.unwrap(),
            Outcome::Done
        );
    }
    assert!(
        f.scope
            .docker
            .inspect_container(&created, None)
            .await
            .is_err()
    );
    // An op on "the created container" of a plan that created none is
    // skipped.
    let start = Op::Start {
        target: Target::Created,
    };
    let none = f.exec.apply(&start, &mut Run::default()).await.unwrap();
    assert_eq!(none, Outcome::Skipped);

    // A `removed` row's volumes go after the container.
    for v in &spec.volumes {
        let op = Op::RemoveVolume {
            name: v.name.clone(),
            below_epoch: None,
        };
        assert_eq!(f.exec.apply(&op, &mut run).await.unwrap(), Outcome::Done);
        assert!(f.scope.docker.inspect_volume(&v.name).await.is_err());
    }
}

#[tokio::test]
async fn a_session_discard_keeps_a_volume_that_already_records_the_epoch() {
    let f = Fixture::new().await;
    let mut row = f.row().with_runtime("claude-code");
    row.session_epoch = 2;
    let spec = f.spec(&row);
    let sessions = spec
        .volumes
        .iter()
        .find(|v| v.name == row.id.sessions_volume())
        .expect("a session volume");
    assert!(
        f.exec.ensure_volume(sessions).await.unwrap(),
        "made: it was not there"
    );
    assert!(
        !f.exec.ensure_volume(sessions).await.unwrap(),
        "there already: not made"
    );
    let discard = |epoch| Op::RemoveVolume {
        name: sessions.name.clone(),
        below_epoch: Some(epoch),
    };
    let mut run = Run::default();
    // The cache still showed the old epoch: the discard was made already.
    f.exec.apply(&discard(2), &mut run).await.unwrap();
    assert!(
        f.scope.docker.inspect_volume(&sessions.name).await.is_ok(),
        "a fresh session volume was discarded again"
    );
    f.exec.apply(&discard(3), &mut run).await.unwrap();
    assert!(f.scope.docker.inspect_volume(&sessions.name).await.is_err());
}
