//! Rule 9 and the provision clock: readiness by health, heartbeat or
//! uptime; when the clock starts (the row's change, a vanished container,
//! a restarted berth's memory) and the timeout naming the stalled phase.

use super::*;
use crate::model::{ContainerState, Reason, Status};
use crate::plan::{Failure, Phase, StatusUpdate};

#[test]
fn readiness_uses_health_then_heartbeat_then_uptime() {
    let s = Settings::test();
    let mut r = row(1);
    let mut c = container_for(&built(&r, &s), "c1");
    c.health = crate::model::Health::None;
    let cs = [c.clone()];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0() + TimeDelta::seconds(10));
    assert_eq!(reason(&p), Some(Reason::WaitingReady));
    r.last_heartbeat_at = Some(t0() + TimeDelta::seconds(5));
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0() + TimeDelta::seconds(10));
    assert_eq!(p.status, Some(StatusUpdate::plain(Status::Online)));
    r.last_heartbeat_at = None;
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0() + TimeDelta::seconds(31));
    assert_eq!(p.status, Some(StatusUpdate::plain(Status::Online)));
    c.health = crate::model::Health::Starting;
    let cs = [c];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0() + mins(5));
    assert_eq!(reason(&p), Some(Reason::WaitingReady));
}

#[test]
fn not_ready_within_the_provision_timeout_names_the_stalled_phase() {
    let s = Settings::test();
    let r = row(1);
    let mut c = container_for(&built(&r, &s), "c1");
    c.health = crate::model::Health::Unhealthy;
    let cs = [c];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0() + mins(11));
    assert_eq!(reason(&p), Some(Reason::ProvisionTimeout));
    assert!(
        detail(&p).contains("stalled in readiness"),
        "{}",
        detail(&p)
    );

    let mut f = facts_for(&s, &r, &[], &[]);
    f.memory.provisioning_since = Some(t0());
    f.memory.failure = Some(Failure {
        reason: Reason::RegistryRateLimited,
        phase: Phase::Pull,
        message: "toomanyrequests".into(),
        retry_at: t0() + mins(10),
        hash: "v1:other".into(),
    });
    let p = plan_at(&f, t0() + mins(10));
    assert_eq!(reason(&p), Some(Reason::ProvisionTimeout));
    assert!(detail(&p).contains("stalled in pull"), "{}", detail(&p));
}

fn wait_deadline(p: &Plan) -> Option<chrono::DateTime<chrono::Utc>> {
    p.actions.iter().find_map(|a| match a.op {
        Op::WaitReady { deadline, .. } => Some(deadline),
        _ => None,
    })
}

#[test]
fn the_provision_clock_starts_at_the_rows_change_not_when_berth_picks_it_up() {
    let s = Settings::test();
    let r = row(1);
    let p = plan_at(&facts_for(&s, &r, &[], &[]), t0() + mins(4));
    assert_eq!(wait_deadline(&p), Some(t0() + mins(10)));
}

#[test]
fn a_change_whose_deadline_passed_while_no_berth_ran_gets_a_full_attempt() {
    let s = Settings::test();
    let r = row(1);
    let p = plan_at(&facts_for(&s, &r, &[], &[]), t0() + mins(30));
    assert_eq!(reason(&p), Some(Reason::Pulling));
    assert_eq!(wait_deadline(&p), Some(t0() + mins(40)));
}

#[test]
fn a_vanished_container_of_an_observed_row_starts_the_clock_when_berth_notices() {
    let s = Settings::test();
    let mut r = row(1);
    r.observed_generation = r.generation;
    r.desired_changed_at = t0() - TimeDelta::days(1);
    let p = plan_at(&facts_for(&s, &r, &[], &[]), t0());
    assert_eq!(wait_deadline(&p), Some(t0() + mins(10)));
    assert_eq!(p.memory.provisioning_since, Some(t0()));
}

#[test]
fn durations_beyond_the_calendar_make_deadlines_that_never_come_not_panics() {
    let forever = std::time::Duration::from_secs(u64::MAX / 4);
    let s = Settings {
        provision_timeout: forever,
        ready_min_uptime: forever,
        crash_backoff_initial: forever,
        crash_backoff_max: forever,
        orphan_grace: forever,
        ..Settings::test()
    };
    let r = row(1);
    let mut c = container_for(&built(&r, &s), "c1");
    c.health = crate::model::Health::None;
    let cs = [c.clone()];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert_eq!(reason(&p), Some(Reason::WaitingReady));
    c.state = ContainerState::Exited;
    let cs = [c];
    assert_eq!(ops(&plan_at(&facts_for(&s, &r, &cs, &[]), t0())), ["start"]);
    assert!(
        !plan_at(&facts_for(&s, &r, &[], &[]), t0())
            .actions
            .is_empty()
    );
}

#[test]
fn a_berth_restarted_mid_attempt_keeps_the_attempts_clock_unless_it_is_long_past() {
    let s = Settings::test();
    let mut r = row(1);
    r.observed_generation = r.generation;
    r.desired_changed_at = t0() - TimeDelta::days(1);
    r.status = Some(Status::Provisioning);
    r.status_changed_at = Some(t0() - mins(4));
    let p = plan_at(&facts_for(&s, &r, &[], &[]), t0());
    assert_eq!(
        wait_deadline(&p),
        Some(t0() + mins(6)),
        "the attempt under way since t0-4m keeps its time"
    );
    // Provisioning since long before (no berth ran meanwhile): a fresh
    // attempt, not an instant timeout.
    r.status_changed_at = Some(t0() - TimeDelta::days(1));
    let p = plan_at(&facts_for(&s, &r, &[], &[]), t0());
    assert_eq!(wait_deadline(&p), Some(t0() + mins(10)));
    // A row that is not provisioning starts its attempt now.
    r.status = Some(Status::Online);
    r.status_changed_at = Some(t0() - mins(4));
    let p = plan_at(&facts_for(&s, &r, &[], &[]), t0());
    assert_eq!(wait_deadline(&p), Some(t0() + mins(10)));
}

#[test]
fn a_container_made_moments_ago_is_timed_from_its_creation_without_memory() {
    let s = Settings::test();
    let mut r = row(1);
    r.observed_generation = r.generation;
    r.desired_changed_at = t0() - TimeDelta::days(1);
    let mut c = container_for(&built(&r, &s), "c1");
    c.health = crate::model::Health::Starting;
    c.created = t0() - mins(1);
    c.started_at = Some(t0() - mins(1));
    let cs = [c];
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0());
    assert_eq!(
        reason(&p),
        Some(Reason::WaitingReady),
        "not timed out at once"
    );
    let p = plan_at(&facts_for(&s, &r, &cs, &[]), t0() + mins(10));
    assert_eq!(reason(&p), Some(Reason::ProvisionTimeout));
}

#[test]
fn past_the_provision_timeout_a_final_cause_stays_the_reason_not_a_stalled_pull() {
    let s = Settings::test();
    let mut r = row(1);
    r.template_path = Some("/srv/templates/gone".into());
    let mut f = facts_for(&s, &r, &[], &[]);
    f.probes.template_dir = Some(false);
    let late = plan_at(&f, t0() + f.provision_timeout + mins(5));
    assert_eq!(
        reason(&late),
        Some(Reason::InvalidSpec),
        "{}",
        detail(&late)
    );

    let r = row(2);
    let mut f = facts_for(&s, &r, &[], &[]);
    f.memory.provisioning_since = Some(t0());
    f.memory.failure = Some(failure(
        Reason::ConfigMissing,
        Phase::Create,
        "no config.yaml in /configs",
        &built(&r, &s).hash,
    ));
    let late = plan_at(&f, t0() + f.provision_timeout + mins(5));
    assert_eq!(reason(&late), Some(Reason::ConfigMissing));
    assert!(
        detail(&late).contains("given up after the provision timeout"),
        "{}",
        detail(&late)
    );
    // One for a spec the row no longer makes says nothing of this one.
    f.memory.failure.as_mut().unwrap().hash = "v1:old".into();
    let late = plan_at(&f, t0() + f.provision_timeout + mins(5));
    assert_eq!(reason(&late), Some(Reason::ProvisionTimeout));
}
