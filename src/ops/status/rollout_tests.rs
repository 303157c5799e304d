use super::{HostLease, StatusView, host_views, render_hosts, rollout_cell};

fn row(host: &str) -> StatusView {
    StatusView {
        id: uuid::Uuid::nil(),
        name: "w".into(),
        host: host.into(),
        runtime: "agent".into(),
        ring: "stable".into(),
        desired_state: "running".into(),
        paused: false,
        status: Some("online".into()),
        status_reason: None,
        last_error: None,
        runtime_image_digest: None,
        wanted_digest: None,
        image: None,
        container_id: None,
        url: None,
        generation: 1,
        observed_generation: Some(1),
        status_changed_at: None,
        restart_count: 0,
        rollout: None,
    }
}

#[test]
fn each_host_says_whether_a_berth_holds_it() {
    let rows = [row("a"), row("b"), row("b"), row("c"), row("d"), row("e")];
    let leases = [
        HostLease {
            host: "a".into(),
            holder: "vm1:42".into(),
            renewed_secs_ago: Some(2.0),
            ttl_secs: None,
        },
        HostLease {
            host: "b".into(),
            holder: "vm2:7".into(),
            renewed_secs_ago: Some(300.0),
            ttl_secs: None,
        },
        // Its holder runs with a 10-minute term: 5 minutes is no lapse.
        HostLease {
            host: "e".into(),
            holder: "vm4:9".into(),
            renewed_secs_ago: Some(300.0),
            ttl_secs: Some(600.0),
        },
        HostLease {
            host: "d".into(),
            holder: "vm3:1".into(),
            renewed_secs_ago: None,
            ttl_secs: Some(15.0),
        },
    ];
    let views = host_views(&rows, &leases, std::time::Duration::from_secs(15));
    let held: Vec<(&str, bool, bool)> = views
        .iter()
        .map(|v| (v.host.as_str(), v.held, v.released))
        .collect();
    assert_eq!(
        held,
        [
            ("a", true, false),
            ("b", false, false),
            ("c", false, false),
            ("d", false, true),
            ("e", true, false)
        ]
    );
    let out = render_hosts(&views);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(
        lines[0].starts_with("host a: held by berth vm1:42"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("host b: NO berth holds it")
            && lines[1].contains("300s ago, past its 15s term"),
        "{out}"
    );
    assert!(lines[4].starts_with("host e: held by berth vm4:9"), "{out}");
    assert!(
        lines[2].starts_with("host c: NO berth has ever held it"),
        "{out}"
    );
    assert!(lines[3].contains("vm3:1 stopped and released it"), "{out}");
}

#[test]
fn row_text_cannot_break_the_table_or_paint_the_terminal() {
    let raw = "evil\n\x1b[2Jfake\tline";
    let mut r = row("h\x1b[31m1");
    r.name = raw.into();
    r.last_error = Some("pull failed\r\x1b[32mall good".into());
    let out = super::render_status(std::slice::from_ref(&r), chrono::Utc::now());
    assert!(!out.contains(['\x1b', '\t', '\r']), "{out:?}");
    // The header, one row, the footer.
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.contains(r#""evil\n\u{1b}[2Jfake\tline""#), "{out}");
    assert!(out.contains(r#""h\u{1b}[31m1""#), "{out}");
    assert!(
        out.contains(r#""pull failed\r\u{1b}[32mall good""#),
        "{out}"
    );
    let hosts = render_hosts(&host_views(
        std::slice::from_ref(&r),
        &[],
        std::time::Duration::from_secs(15),
    ));
    assert!(!hosts.contains('\x1b'), "{hosts:?}");
    // A host no BERTH_HOST_ID can name is not told to set one to it.
    assert!(hosts.contains("no berth can hold it"), "{hosts}");
    assert!(!hosts.contains("is BERTH_HOST_ID set"), "{hosts}");
    let plain = render_hosts(&host_views(
        &[row("h1")],
        &[],
        std::time::Duration::from_secs(15),
    ));
    assert!(plain.contains("is BERTH_HOST_ID set to \"h1\""), "{plain}");
    // JSON keeps the raw value.
    assert_eq!(serde_json::to_value(&r).unwrap()["name"], raw);
}

fn digest(c: char) -> Option<String> {
    Some(format!("sha256:{}", c.to_string().repeat(64)))
}

#[test]
fn pending_is_a_change_not_observed_a_state_not_reached_or_an_image_not_yet_the_wanted_one() {
    let converged = row("h");
    // GEN behind.
    let mut behind = row("h");
    behind.generation = 2;
    // The controller never observes a paused row's change.
    let mut paused = behind.clone();
    paused.paused = true;
    paused.desired_state = "running".into();
    // A pin rollout: the pin wants b, the container runs a.
    let mut rolling = row("h");
    rolling.runtime_image_digest = digest('a');
    rolling.wanted_digest = digest('b');
    let mut waiting = row("h");
    waiting.rollout = Some(serde_json::json!({"state": "waiting", "wave": 1}));
    let mut halted = row("h");
    halted.rollout = Some(serde_json::json!({"state": "halted", "failed": 1}));
    // Not comparable, or not to be replaced: a local build (no
    // digest), the row's own image, a stopped row.
    let mut built = row("h");
    built.wanted_digest = digest('b');
    let mut own = rolling.clone();
    own.image = Some("registry.test/own:1".into());
    let mut stopped = rolling.clone();
    stopped.desired_state = "stopped".into();
    stopped.status = Some("stopped".into());
    // The change observed, the status short of the desired state.
    let mut stuck = row("h");
    stuck.status = Some("provisioning".into());
    stuck.status_reason = Some("image_not_found".into());
    let mut failed = row("h");
    failed.status = Some("failed".into());
    failed.status_reason = Some("invalid_spec".into());
    let mut undone = row("h");
    undone.status_reason = Some("rolled_back".into());
    let mut paused_rolling = rolling.clone();
    paused_rolling.paused = true;

    for (what, r, pending) in [
        ("converged", &converged, false),
        ("behind", &behind, true),
        ("paused", &paused, false),
        ("rolling", &rolling, true),
        ("waiting", &waiting, true),
        ("halted", &halted, false),
        ("built", &built, false),
        ("own image", &own, false),
        ("stopped", &stopped, false),
        ("paused, rolling", &paused_rolling, false),
        ("stuck provisioning", &stuck, true),
        ("failed", &failed, true),
        ("rolled back", &undone, true),
    ] {
        assert_eq!(r.pending(), pending, "{what}");
    }

    let rows = [converged, behind, paused, rolling];
    let out = super::render_status(&rows, chrono::Utc::now());
    assert!(
        out.contains("4 workspace(s); 2 not yet converged")
            && out.contains("; 1 paused (berth does not act on them)"),
        "{out}"
    );
    let marked: Vec<bool> = out
        .lines()
        .skip(1)
        .take(4)
        .map(|l| l.contains(" * ") || l.ends_with(" *"))
        .collect();
    assert_eq!(marked, [false, true, false, true], "{out}");
}

#[test]
fn a_rollout_reads_as_state_wave_and_progress() {
    assert_eq!(rollout_cell(None), "-");
    let r = serde_json::json!({"state": "replacing", "wave": 1, "done": 3, "failed": 0});
    assert_eq!(rollout_cell(Some(&r)), "replacing w1 (3 done)");
    let r = serde_json::json!({"state": "halted", "wave": 0, "done": 0, "failed": 1});
    assert_eq!(rollout_cell(Some(&r)), "halted (1 failed)");
}

#[test]
fn a_halt_reads_as_the_digest_put_back_or_the_pin_removed() {
    let halt = |new: Option<String>| super::RecentHalt {
        template_name: "agent".into(),
        ring: "canary".into(),
        old_digest: digest('f'),
        new_digest: new,
        note: Some("halted by berth".into()),
        secs_ago: 120.0,
    };
    let out = super::render_halts(&[halt(digest('a')), halt(None)]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("halted 2m ago, back to sha256:aaaaaaaaaaaa"),
        "{out}"
    );
    assert!(
        lines[1].contains("pin removed, the ring follows what it did before"),
        "{out}"
    );
}

#[test]
fn a_removed_row_wants_no_image() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let mut removed = row("h");
    removed.desired_state = "removed".into();
    removed.wanted_digest = Some(digest.clone());
    let mut running = row("h");
    running.name = "kept".into();
    running.wanted_digest = Some(digest);
    let out = super::render_status(&[removed, running], chrono::Utc::now());
    let cells = |name: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row {name}:\n{out}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert!(
        !cells("w").contains(&"sha256:aaaaaaaaaaaa".to_string()),
        "{out}"
    );
    assert!(
        cells("kept").contains(&"sha256:aaaaaaaaaaaa".to_string()),
        "{out}"
    );
}
