//! `dashboards/`: every metric the Grafana dashboard and the alert rules
//! query is one berth exposes, with labels it has; the rules pass
//! `promtool check rules` and their unit tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use berth::metrics::Metrics;

fn file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("dashboards")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Labels Prometheus adds to every scraped series (job, instance) and the
/// `host` target label the scrape config gives each berth.
const TARGET_LABELS: &[&str] = &["job", "instance", "host", "le"];

/// Every `berth_…` metric a text mentions, with the label keys and values
/// of its selectors.
pub fn queried(text: &str) -> BTreeMap<String, BTreeSet<(String, String)>> {
    let mut found: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while let Some(at) = text[i..].find("berth_").map(|p| p + i) {
        i = at + 6;
        if at > 0 && word(bytes[at - 1]) {
            continue;
        }
        let mut end = at;
        while end < bytes.len() && word(bytes[end]) {
            end += 1;
        }
        let labels = found.entry(text[at..end].to_string()).or_default();
        if bytes.get(end) == Some(&b'{')
            && let Some(close) = text[end..].find('}')
        {
            for matcher in text[end + 1..end + close].split(',') {
                let (key, value) = matcher
                    .split_once("=~")
                    .or_else(|| matcher.split_once("!="))
                    .or_else(|| matcher.split_once('='))
                    .unwrap_or((matcher, ""));
                let value = value.trim().trim_matches(|c| c == '"' || c == '\\');
                labels.insert((key.trim().to_string(), value.to_string()));
            }
        }
        i = end;
    }
    found
}

/// What `Metrics::render()` exposes once every labelled metric has a
/// child: sample name → label keys.
fn exposed() -> BTreeMap<String, BTreeSet<String>> {
    let m = Metrics::new().unwrap();
    m.reconcile_total.with_label_values(&["success"]).inc();
    m.reconcile_errors_total
        .with_label_values(&["docker"])
        .inc();
    m.workspaces.with_label_values(&["online"]).set(1);
    m.docker_actions_total
        .with_label_values(&["create", "success"])
        .inc();
    m.rollbacks_total.with_label_values(&["readiness"]).inc();
    m.provision_timeouts_total
        .with_label_values(&["pull"])
        .inc();
    samples(&m.render())
}

/// Sample name → label keys, from the text exposition format.
pub fn samples(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let keys = out.entry(line[..name_end].to_string()).or_default();
        if line.as_bytes().get(name_end) == Some(&b'{')
            && let Some(close) = line.find('}')
        {
            for pair in line[name_end + 1..close].split(',') {
                if let Some((k, _)) = pair.split_once('=') {
                    keys.insert(k.to_string());
                }
            }
        }
    }
    out
}

/// The bounded values a label may take in a query.
fn allowed(label: &str) -> Option<Vec<&'static str>> {
    match label {
        "result" => Some(vec!["success", "error", "requeue"]),
        "side" => Some(vec!["desired", "observed"]),
        "status" => Some(
            berth::model::Status::ALL
                .iter()
                .map(|s| s.as_str())
                .collect(),
        ),
        _ => None,
    }
}

pub fn check_queries(source: &str, text: &str, exposed: &BTreeMap<String, BTreeSet<String>>) {
    let queried = queried(text);
    assert!(!queried.is_empty(), "{source} queries no berth metric");
    for (name, selectors) in &queried {
        let keys = exposed
            .get(name)
            .unwrap_or_else(|| panic!("{source} queries {name}, which berth does not expose"));
        for (key, value) in selectors {
            if TARGET_LABELS.contains(&key.as_str()) {
                continue;
            }
            assert!(keys.contains(key), "{source}: {name} has no label {key}");
            if let Some(values) = allowed(key)
                && !value.contains('$')
            {
                assert!(
                    values.contains(&value.as_str()),
                    "{source}: {name}{{{key}={value:?}}}"
                );
            }
        }
    }
}

/// Every unlabelled metric the dashboard and the rules query is in a
/// running berth's `/metrics` (a labelled one shows once it has a child).
pub fn check_live(metrics: &str) {
    let live = samples(metrics);
    let exposed = exposed();
    for text in [file("berth.json"), file("alerts.yaml")] {
        for name in queried(&text).keys() {
            let unlabelled = exposed
                .get(name)
                .is_some_and(|keys| keys.iter().all(|k| k == "le"));
            if unlabelled {
                assert!(
                    live.contains_key(name),
                    "a running berth does not expose {name}"
                );
            }
        }
    }
}

#[test]
fn every_metric_the_dashboard_and_rules_query_is_exposed_with_its_labels() {
    let exposed = exposed();
    let dashboard = file("berth.json");
    let rules = file("alerts.yaml");
    check_queries("berth.json", &dashboard, &exposed);
    check_queries("alerts.yaml", &rules, &exposed);

    let json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let panels = json["panels"].as_array().unwrap();
    assert!(
        panels
            .iter()
            .all(|p| p["targets"].as_array().is_some_and(|t| !t.is_empty()))
    );
    // The dashboard covers what an operator watches.
    let shown = queried(&dashboard);
    for name in [
        "berth_time_to_converge_seconds_bucket",
        "berth_unconverged_workspaces",
        "berth_oldest_unconverged_age_seconds",
        "berth_reconcile_total",
        "berth_reconcile_errors_total",
        "berth_workqueue_depth",
        "berth_workqueue_retries_total",
        "berth_provision_timeouts_total",
        "berth_rollbacks_total",
        "berth_leader",
    ] {
        assert!(
            shown.contains_key(name),
            "the dashboard does not show {name}"
        );
    }
    // Every alert has a runbook line.
    let alerts = rules.matches("- alert:").count();
    assert_eq!(rules.matches("runbook:").count(), alerts);
    assert!(alerts >= 5);
}

/// increase() and rate() see no increase in a series born with its first
/// event, so every counter a rule takes them of is exposed at 0 by a berth
/// that has counted nothing yet, with each label value the rule selects.
#[test]
fn the_counters_the_rules_rate_are_exposed_at_zero_before_any_event() {
    let fresh = Metrics::new().unwrap().render();
    let rules = file("alerts.yaml");
    let mut rated = 0;
    for call in ["rate(", "increase("] {
        for (at, _) in rules.match_indices(call) {
            let start = at + call.len();
            let end = start + rules[start..].find(')').expect("a closed call");
            for (name, selectors) in queried(&rules[start..end]) {
                rated += 1;
                let wanted: Vec<String> = selectors
                    .iter()
                    .filter(|(key, _)| !TARGET_LABELS.contains(&key.as_str()))
                    .map(|(key, value)| format!("{key}=\"{value}\""))
                    .collect();
                let at_zero = fresh.lines().any(|line| {
                    line.strip_prefix(name.as_str())
                        .is_some_and(|rest| rest.starts_with(['{', ' ']))
                        && line.ends_with(" 0")
                        && wanted.iter().all(|w| line.contains(w.as_str()))
                });
                assert!(
                    at_zero,
                    "alerts.yaml rates {name}{wanted:?}, which a fresh berth does not expose at 0:\n{fresh}"
                );
            }
        }
    }
    assert!(rated >= 5, "alerts.yaml rates {rated} counters");
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    for args in [
        ["check", "rules", "alerts.yaml"],
        ["test", "rules", "alerts.test.yaml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian's prometheus package) is installed by scripts/lib.sh");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_query_scanner_reads_names_and_selectors() {
    let q = queried(
        r#"sum(rate(berth_reconcile_total{result="error", host=~"$host"}[5m])) / xberth_no"#,
    );
    let labels = &q["berth_reconcile_total"];
    assert!(labels.contains(&("result".to_string(), "error".to_string())));
    assert!(labels.contains(&("host".to_string(), "$host".to_string())));
    assert_eq!(q.len(), 1);
}
