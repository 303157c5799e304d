//! `berth config` and the command line's exit codes, through the binary.

use crate::harness::berth;

const DB: &str = "postgres://berth:db-secret-1@db.internal:5432/berth";

#[tokio::test]
async fn three_bad_values_are_all_reported_with_exit_64() {
    let (code, out, err) = berth(
        &["config"],
        &[
            ("DATABASE_URL", DB),
            ("BERTH_LISTEN", "everywhere"),
            ("BERTH_ORPHAN_GRACE", "a while"),
            ("BERTH_ROLLOUT_MAX_FAILURE_RATIO", "2"),
        ],
    )
    .await;
    assert_eq!(code, 64, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("3 bad configuration value(s)"), "{err}");
    for name in [
        "BERTH_LISTEN",
        "BERTH_ORPHAN_GRACE",
        "BERTH_ROLLOUT_MAX_FAILURE_RATIO",
    ] {
        assert!(err.contains(name), "{name} missing from: {err}");
    }
    assert!(!err.contains("db-secret-1") && !out.contains("db-secret-1"));
}

#[tokio::test]
async fn a_bad_secret_is_reported_without_its_value() {
    // A scheme berth does not speak, and passwords typed with a character
    // that ends a URL's authority (generated ones have them).
    for url in [
        "mysql://u:db-secret-2@h/x",
        "postgres://u:db-secret-2#x@h/x",
        "postgres://u:db-secret-2/x@h/x",
        "postgres://u:db-secret-2?x@h/x",
    ] {
        let (code, out, err) = berth(&["config"], &[("DATABASE_URL", url)]).await;
        assert_eq!(code, 64, "{url}");
        assert!(err.contains("DATABASE_URL"), "{err}");
        assert!(
            !err.contains("db-secret-2") && !out.contains("db-secret-2"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn config_masks_every_secret_in_both_formats() {
    let env = [
        ("DATABASE_URL", DB),
        ("GHCR_USER", "bot"),
        ("GHCR_TOKEN", "ghcr-secret-3"),
        ("MOLECULE_GITEA_TOKEN", "gitea-secret-4"),
        ("BERTH_HOST_ID", "tenant-7"),
    ];
    for args in [&["config"][..], &["config", "--json"][..]] {
        let (code, out, err) = berth(args, &env).await;
        assert_eq!(code, 0, "{args:?}: {err}");
        for secret in ["db-secret-1", "ghcr-secret-3", "gitea-secret-4"] {
            assert!(!out.contains(secret), "{secret} shown by {args:?}:\n{out}");
        }
        assert!(
            out.contains("postgres://berth:***@db.internal:5432/berth"),
            "{out}"
        );
        assert!(out.contains("tenant-7"), "{out}");
    }
    let (_, out, _) = berth(&["config", "--json"], &env).await;
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["BERTH_HOST_ID"]["value"], "tenant-7");
    assert_eq!(json["BERTH_HOST_ID"]["source"], "env");
    assert_eq!(json["GHCR_TOKEN"]["value"], "***");
    // No MOLECULE_IMAGE_REGISTRY: local-build mode, said in words.
    let mode = json["image_mode"]["value"].as_str().unwrap_or_default();
    assert!(mode.starts_with("local-build (templates from "), "{mode}");
    let mut with_registry = env.to_vec();
    with_registry.push(("MOLECULE_IMAGE_REGISTRY", "registry.example/ws"));
    let (_, out, _) = berth(&["config"], &with_registry).await;
    assert!(
        out.contains("image mode: registry (images from registry.example/ws)"),
        "{out}"
    );
}

#[tokio::test]
async fn a_flag_overrides_the_environment() {
    let (code, out, _) = berth(
        &["config", "--host-id", "from-flag"],
        &[("DATABASE_URL", DB), ("BERTH_HOST_ID", "from-env")],
    )
    .await;
    assert_eq!(code, 0);
    let line = out
        .lines()
        .find(|l| l.starts_with("BERTH_HOST_ID"))
        .unwrap();
    assert!(
        line.contains("from-flag") && line.ends_with("(flag)"),
        "{line}"
    );
}

#[tokio::test]
async fn usage_errors_exit_64_and_help_exits_0() {
    let (code, _, err) = berth(&["no-such-command"], &[]).await;
    assert_eq!(code, 64, "{err}");
    let (code, _, _) = berth(&["config", "--no-such-flag"], &[]).await;
    assert_eq!(code, 64);
    for args in [
        &["--help"][..],
        &["migrate", "--help"][..],
        &["config", "--help"][..],
    ] {
        let (code, out, _) = berth(args, &[]).await;
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains("Exit codes:"), "{args:?}: {out}");
    }
}

#[tokio::test]
async fn every_value_in_the_table_reads_as_something_and_no_roots_say_what_they_mean() {
    let (code, out, err) = berth(&["config"], &[("DATABASE_URL", DB)]).await;
    assert_eq!(code, 0, "{err}");
    let settings: Vec<&str> = out.lines().take_while(|l| !l.is_empty()).collect();
    let width = settings.iter().map(|l| l.find(' ').unwrap()).max().unwrap();
    for line in &settings {
        let value = &line[width + 2..];
        assert!(!value.starts_with(' '), "a blank value: {line:?}");
    }
    let roots = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("BERTH_WORKSPACE_ROOTS"))
            .unwrap()
            .to_string()
    };
    assert!(
        roots(&out).contains("(none: no host directory may be bound)  (default)"),
        "{out}"
    );
    let (_, out, _) = berth(
        &["config"],
        &[("DATABASE_URL", DB), ("BERTH_WORKSPACE_ROOTS", "/srv/ws")],
    )
    .await;
    assert!(roots(&out).contains("/srv/ws  (env)"), "{out}");
}
