use super::*;
use chrono::{DateTime, TimeZone, Utc};

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, minute, 0).unwrap()
}

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn image(id: &str, runtime: Option<&str>, digest: Option<String>, made: Made) -> HostImage {
    HostImage {
        image_id: format!("sha256:{id}"),
        reference: format!("reg/x:{id}"),
        runtime: runtime.map(str::to_string),
        digest,
        made,
        made_at: at(0),
        last_used_at: at(0),
    }
}

fn pulled(id: &str, runtime: &str, d: char) -> HostImage {
    image(id, Some(runtime), Some(digest(d)), Made::Pulled)
}

fn used_at(mut i: HostImage, minute: u32) -> HostImage {
    i.last_used_at = at(minute);
    i
}

fn ids(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|i| format!("sha256:{i}")).collect()
}

fn kept(keep: &BTreeMap<String, Keep>) -> Vec<(&str, Keep)> {
    keep.iter()
        .map(|(id, why)| (id.trim_start_matches("sha256:"), *why))
        .collect()
}

fn pins(runtime: &str, current: &[char], previous: &[char], stable: bool) -> PinFacts {
    let set = |ds: &[char]| ds.iter().map(|c| digest(*c)).collect::<BTreeSet<_>>();
    PinFacts {
        current: BTreeMap::from([(runtime.to_string(), set(current))]),
        previous: BTreeMap::from([(runtime.to_string(), set(previous))]),
        before: BTreeMap::new(),
        stable_pinned: if stable {
            BTreeSet::from([runtime.to_string()])
        } else {
            BTreeSet::new()
        },
    }
}

#[test]
fn a_pinned_runtime_keeps_what_runs_and_the_previous_stable_and_drops_the_rest() {
    let records = [
        pulled("v1", "agent", '1'),
        pulled("v2", "agent", '2'),
        pulled("v3", "agent", '3'),
        pulled("v0", "agent", '0'),
    ];
    // v3 is pinned and runs; a rollback would return to v2.
    let keep = retain(
        &records,
        &ids(&["v3"]),
        &pins("agent", &['3'], &['2'], true),
    );
    assert_eq!(
        kept(&keep),
        [("v2", Keep::PreviousStable), ("v3", Keep::InUse)]
    );
}

#[test]
fn the_digest_pinned_just_before_stays_though_never_stable() {
    let records = [
        pulled("v1", "agent", '1'),
        pulled("v2", "agent", '2'),
        pulled("v3", "agent", '3'),
    ];
    // v1 was stable, v2 was pinned after it and never marked, v3 runs:
    // a halt elsewhere writes v2 back, a rollback returns to v1.
    let mut facts = pins("agent", &['3'], &['1'], true);
    facts.before = BTreeMap::from([("agent".to_string(), BTreeSet::from([digest('2')]))]);
    let keep = retain(&records, &ids(&["v3"]), &facts);
    assert_eq!(
        kept(&keep),
        [
            ("v1", Keep::PreviousStable),
            ("v2", Keep::PreviousPin),
            ("v3", Keep::InUse)
        ]
    );
}

#[test]
fn the_current_pin_stays_before_any_container_runs_it() {
    let records = [pulled("v1", "agent", '1'), pulled("v2", "agent", '2')];
    let keep = retain(
        &records,
        &ids(&["v1"]),
        &pins("agent", &['2'], &['1'], true),
    );
    assert_eq!(kept(&keep), [("v1", Keep::InUse), ("v2", Keep::CurrentPin)]);
}

#[test]
fn a_moving_tag_keeps_the_unused_image_used_last() {
    let records = [
        used_at(pulled("old", "agent", 'a'), 5),
        used_at(pulled("prev", "agent", 'b'), 20),
        used_at(pulled("now", "agent", 'c'), 30),
        used_at(pulled("other", "codex", 'd'), 1),
    ];
    let keep = retain(&records, &ids(&["now"]), &PinFacts::default());
    assert_eq!(
        kept(&keep),
        [
            ("now", Keep::InUse),
            ("other", Keep::LastUsed),
            ("prev", Keep::LastUsed)
        ]
    );
}

#[test]
fn local_builds_keep_the_unused_build_used_last_even_beside_a_stable_pin() {
    let built = |id: &str, minute| used_at(image(id, Some("agent"), None, Made::Built), minute);
    let records = [built("b1", 1), built("b2", 2), built("b3", 3)];
    let keep = retain(&records, &ids(&["b3"]), &pins("agent", &['9'], &[], true));
    assert_eq!(kept(&keep), [("b2", Keep::LastUsed), ("b3", Keep::InUse)]);
}

#[test]
fn an_explicit_image_stays_only_while_used() {
    let explicit = |id: &str| image(id, None, Some(digest('e')), Made::Pulled);
    let records = [explicit("e1"), explicit("e2")];
    let keep = retain(&records, &ids(&["e2"]), &PinFacts::default());
    assert_eq!(kept(&keep), [("e2", Keep::InUse)]);
}

#[test]
fn a_digest_pinned_for_another_runtime_does_not_keep_an_image() {
    let records = [pulled("x", "codex", '2')];
    let keep = retain(&records, &ids(&[]), &pins("agent", &['2'], &['2'], true));
    assert_eq!(
        kept(&keep),
        [("x", Keep::LastUsed)],
        "codex follows its tag"
    );
    let mut both = pins("agent", &['2'], &['2'], true);
    both.stable_pinned.insert("codex".into());
    assert!(retain(&records, &ids(&[]), &both).is_empty());
}

#[test]
fn nothing_recorded_means_nothing_to_decide() {
    let keep = retain(&[], &ids(&["a"]), &pins("agent", &['1'], &['2'], true));
    assert!(keep.is_empty());
}
