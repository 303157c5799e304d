use std::collections::HashMap;

use super::*;

const DB: &str = "postgres://berth:s3cret-pw@db.internal:5432/berth";

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    Config::from_sources(&HashMap::new(), env_of(pairs))
}

fn errors(pairs: &[(&str, &str)]) -> Vec<ConfigError> {
    match config(pairs) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(ConfigErrors(errors)) => errors,
    }
}

#[test]
fn defaults_follow_the_design_table() {
    let c = config(&[("DATABASE_URL", DB)]).unwrap();
    assert_eq!(c.host_id, "default");
    assert_eq!(c.listen.to_string(), "127.0.0.1:9464");
    assert_eq!(c.concurrency, 8);
    assert_eq!(c.resync_interval, Duration::from_secs(30));
    assert_eq!(c.orphan_grace, Duration::from_secs(300));
    assert_eq!(c.delete_guard, DeleteGuard::Default);
    assert_eq!(c.provision_timeout, Duration::from_secs(600));
    assert_eq!(c.ready_min_uptime, Duration::from_secs(30));
    assert_eq!(c.crash_backoff_initial, Duration::from_secs(10));
    assert_eq!(c.crash_backoff_max, Duration::from_secs(300));
    assert_eq!(c.crash_loop_restarts, 5);
    assert_eq!(c.stop_timeout, Duration::from_secs(10));
    assert_eq!(c.shutdown_grace, Duration::from_secs(30));
    assert_eq!(c.pull_progress_timeout, Duration::from_secs(120));
    assert_eq!(c.pull_timeout, Duration::from_secs(900));
    assert_eq!(c.build_progress_timeout, Duration::from_secs(600));
    assert_eq!(c.build_timeout, Duration::from_secs(45 * 60));
    assert_eq!(c.tag_refresh, None);
    assert_eq!(
        c.rollout,
        Rollout {
            canary: 1,
            max_parallel: 1,
            max_failure_ratio: 0.0
        }
    );
    assert_eq!(c.pin_debounce, Duration::from_secs(5));
    assert_eq!(c.lease_ttl, Duration::from_secs(15));
    assert_eq!(c.network, "molecule-monorepo-net");
    assert!(c.workspace_roots.is_empty());
    assert!(!c.allow_host_root_tier);
    assert_eq!(c.events_retention, Duration::from_secs(30 * 86400));
    assert_eq!(c.log_format, LogFormat::Auto);
    assert!(matches!(c.images, ImageMode::LocalBuild { .. }));
    assert_eq!(c.tiers, TierOverrides::default());
    assert!(!c.local_override);
    assert_eq!(c.registry_auth, None);
}

#[test]
fn three_bad_values_are_reported_together() {
    let errs = errors(&[
        ("DATABASE_URL", DB),
        ("BERTH_CONCURRENCY", "lots"),
        ("BERTH_RESYNC_INTERVAL", "soon"),
        ("TIER2_MEMORY_MB", "-5"),
    ]);
    let names: Vec<&str> = errs.iter().map(|e| e.name).collect();
    assert_eq!(
        names,
        [
            "BERTH_CONCURRENCY",
            "BERTH_RESYNC_INTERVAL",
            "TIER2_MEMORY_MB"
        ]
    );
    let text = ConfigErrors(errs).to_string();
    assert!(
        text.contains("BERTH_CONCURRENCY=\"lots\": not a positive whole number"),
        "{text}"
    );
    assert!(
        text.contains("BERTH_RESYNC_INTERVAL=\"soon\": not a duration"),
        "{text}"
    );
}

#[test]
fn durations_beyond_ten_years_and_concurrency_beyond_the_cap_are_refused() {
    let errs = errors(&[
        ("DATABASE_URL", DB),
        ("BERTH_RESYNC_INTERVAL", "300000000000y"),
        ("BERTH_TAG_REFRESH", "11y"),
        ("BERTH_CONCURRENCY", "100000"),
    ]);
    let names: Vec<&str> = errs.iter().map(|e| e.name).collect();
    assert_eq!(
        names,
        [
            "BERTH_CONCURRENCY",
            "BERTH_RESYNC_INTERVAL",
            "BERTH_TAG_REFRESH"
        ]
    );
    let text = ConfigErrors(errs).to_string();
    assert!(text.contains("longer than 3650d"), "{text}");
    assert!(text.contains("more than 256"), "{text}");
    let c = config(&[
        ("DATABASE_URL", DB),
        ("BERTH_EVENTS_RETENTION", "3650d"),
        ("BERTH_CONCURRENCY", "256"),
    ])
    .unwrap();
    assert_eq!(c.events_retention, Duration::from_secs(3650 * 86400));
    assert_eq!(c.concurrency, 256);
}

#[test]
fn a_missing_database_url_is_an_error() {
    let errs = errors(&[]);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].name, "DATABASE_URL");
    assert_eq!(errs[0].message, "is required");
}

#[test]
fn a_bad_database_url_is_reported_without_its_password() {
    for url in [
        "mysql://root:topsecret@h/db",
        "host=127.0.0.1 user=berth password=topsecret dbname=berth",
    ] {
        let errs = errors(&[("DATABASE_URL", url)]);
        let text = ConfigErrors(errs).to_string();
        assert!(text.contains("DATABASE_URL"), "{text}");
        assert!(!text.contains("topsecret"), "{text}");
    }
}

#[test]
fn a_database_url_demanding_tls_is_refused_and_shown_without_its_password() {
    for mode in ["require", "verify-ca", "verify-full"] {
        let url = format!("postgres://berth:topsecret@db.example/berth?sslmode={mode}");
        let errs = errors(&[("DATABASE_URL", &url)]);
        let text = ConfigErrors(errs).to_string();
        assert!(
            text.contains(&format!("sslmode={mode} needs TLS")),
            "{text}"
        );
        assert!(text.contains("postgres://berth:***@db.example"), "{text}");
        assert!(!text.contains("topsecret"), "{text}");
    }
    for mode in ["disable", "prefer"] {
        let url = format!("postgres://berth:pw@db/berth?sslmode={mode}");
        assert!(config(&[("DATABASE_URL", &url)]).is_ok(), "{mode}");
    }
}

#[test]
fn a_docker_host_needing_tls_is_refused_and_plain_ones_pass() {
    let errs = errors(&[
        ("DATABASE_URL", DB),
        ("DOCKER_HOST", "https://docker.example:2376"),
    ]);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].name, "DOCKER_HOST");
    assert!(errs[0].message.contains("needs TLS"), "{}", errs[0].message);
    for ok in [
        "unix:///var/run/docker.sock",
        "tcp://10.0.0.2:2375",
        "http://10.0.0.2:2375",
    ] {
        assert!(
            config(&[("DATABASE_URL", DB), ("DOCKER_HOST", ok)]).is_ok(),
            "{ok}"
        );
    }
}

#[test]
fn secrets_never_appear_in_debug_output_or_effective_values() {
    let c = config(&[
        ("DATABASE_URL", DB),
        ("GHCR_USER", "bot"),
        ("GHCR_TOKEN", "ghp_tokenvalue123"),
        ("MOLECULE_GITEA_TOKEN", "gitea-tokenvalue-456"),
        (
            "MOLECULE_LOCAL_TEMPLATE_REPO_PREFIX",
            "https://bot:inline-pass-789@git.example/t-",
        ),
    ])
    .unwrap();
    let debug = format!("{c:?} {c:#?}");
    let effective = format!("{:?}", c.effective);
    for secret in [
        "s3cret-pw",
        "ghp_tokenvalue123",
        "gitea-tokenvalue-456",
        "inline-pass-789",
    ] {
        assert!(!effective.contains(secret), "{secret} in {effective}");
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(effective.contains("postgres://berth:***@db.internal:5432/berth"));
    assert_eq!(c.database_url.expose(), DB);
}

#[test]
fn a_flag_wins_over_the_environment() {
    let flags = HashMap::from([("BERTH_HOST_ID", "from-flag".to_string())]);
    let c = Config::from_sources(
        &flags,
        env_of(&[("DATABASE_URL", DB), ("BERTH_HOST_ID", "from-env")]),
    )
    .unwrap();
    assert_eq!(c.host_id, "from-flag");
    let shown = c
        .effective
        .iter()
        .find(|e| e.name == "BERTH_HOST_ID")
        .unwrap();
    assert_eq!(shown.source, Source::Flag);
}

#[test]
fn every_setting_is_shown_exactly_once() {
    let c = config(&[("DATABASE_URL", DB)]).unwrap();
    for setting in SETTINGS {
        let n = c.effective.iter().filter(|e| e.name == setting.env).count();
        assert_eq!(n, 1, "{} shown {n} times", setting.env);
    }
    assert_eq!(c.effective.len(), SETTINGS.len());
}

#[test]
fn the_provision_timeout_alias_is_whole_seconds_and_conflicts_with_the_new_name() {
    let c = config(&[("DATABASE_URL", DB), ("PROVISION_TIMEOUT_SECONDS", "180")]).unwrap();
    assert_eq!(c.provision_timeout, Duration::from_secs(180));
    let errs = errors(&[
        ("DATABASE_URL", DB),
        ("PROVISION_TIMEOUT_SECONDS", "180"),
        ("BERTH_PROVISION_TIMEOUT", "3m"),
    ]);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].message.contains("set only one"));
}

#[test]
fn an_empty_platform_means_no_preference_and_a_bad_one_is_an_error() {
    let c = config(&[("DATABASE_URL", DB), ("MOLECULE_IMAGE_PLATFORM", "")]).unwrap();
    assert_eq!(c.platform, None);
    let c = config(&[
        ("DATABASE_URL", DB),
        ("MOLECULE_IMAGE_PLATFORM", "linux/arm64/v8"),
    ])
    .unwrap();
    assert_eq!(c.platform, Some(Platform("linux/arm64/v8".into())));
    let errs = errors(&[("DATABASE_URL", DB), ("MOLECULE_IMAGE_PLATFORM", "amd64")]);
    assert_eq!(errs[0].name, "MOLECULE_IMAGE_PLATFORM");
}

#[test]
fn the_registry_decides_the_image_mode() {
    let c = config(&[
        ("DATABASE_URL", DB),
        ("MOLECULE_IMAGE_REGISTRY", "ghcr.io/molecule-ai/"),
    ])
    .unwrap();
    assert_eq!(
        c.images,
        ImageMode::Registry {
            prefix: "ghcr.io/molecule-ai".into()
        }
    );
    let c = config(&[("DATABASE_URL", DB), ("MOLECULE_IMAGE_REGISTRY", "")]).unwrap();
    match c.images {
        ImageMode::LocalBuild {
            repo_prefix,
            cache_dir,
            gitea_token,
        } => {
            assert_eq!(repo_prefix.expose(), DEFAULT_TEMPLATE_REPO_PREFIX);
            assert!(cache_dir.is_absolute());
            assert!(gitea_token.is_none());
        }
        other => panic!("expected local-build mode, got {other:?}"),
    }
    let errs = errors(&[
        ("DATABASE_URL", DB),
        ("MOLECULE_IMAGE_REGISTRY", "https://GHCR.io"),
    ]);
    assert_eq!(errs[0].name, "MOLECULE_IMAGE_REGISTRY");
}

#[test]
fn registry_credentials_come_in_pairs() {
    let errs = errors(&[("DATABASE_URL", DB), ("GHCR_TOKEN", "t")]);
    assert_eq!(errs[0].name, "GHCR_USER");
    let errs = errors(&[("DATABASE_URL", DB), ("GHCR_USER", "u")]);
    assert_eq!(errs[0].name, "GHCR_TOKEN");
}

#[test]
fn delete_guard_accepts_counts_and_percentages() {
    let guard = |v: &str| {
        config(&[("DATABASE_URL", DB), ("BERTH_DELETE_GUARD", v)]).map(|c| c.delete_guard)
    };
    assert_eq!(guard("3").unwrap(), DeleteGuard::Count(3));
    assert_eq!(guard("25%").unwrap(), DeleteGuard::Percent(25));
    assert!(guard("101%").is_err());
    assert!(guard("some").is_err());
}

#[test]
fn tier_overrides_and_roots_are_parsed() {
    let c = config(&[
        ("DATABASE_URL", DB),
        ("TIER2_MEMORY_MB", "1024"),
        ("TIER3_CPU_SHARES", "512"),
        ("BERTH_WORKSPACE_ROOTS", "/srv/ws:/data/users/"),
    ])
    .unwrap();
    assert_eq!(c.tiers.memory_mb, [None, Some(1024), None, None]);
    assert_eq!(c.tiers.cpu_shares, [None, None, Some(512), None]);
    assert_eq!(
        c.workspace_roots,
        [PathBuf::from("/srv/ws"), PathBuf::from("/data/users")]
    );
    for bad in ["relative/dir", "/srv/../etc", "/"] {
        let errs = errors(&[("DATABASE_URL", DB), ("BERTH_WORKSPACE_ROOTS", bad)]);
        assert_eq!(errs[0].name, "BERTH_WORKSPACE_ROOTS", "{bad}");
    }
}

#[test]
fn build_deadlines_are_their_own_and_reach_the_executor() {
    let c = config(&[
        ("DATABASE_URL", DB),
        ("BERTH_PULL_PROGRESS_TIMEOUT", "1m"),
        ("BERTH_PULL_TIMEOUT", "2m"),
        ("BERTH_BUILD_PROGRESS_TIMEOUT", "20m"),
        ("BERTH_BUILD_TIMEOUT", "1h30m"),
    ])
    .unwrap();
    assert_eq!(c.build_progress_timeout, Duration::from_secs(20 * 60));
    assert_eq!(c.build_timeout, Duration::from_secs(90 * 60));
    let shown = |name: &str| {
        let e = c.effective.iter().find(|e| e.name == name).unwrap();
        (e.value.clone(), e.source)
    };
    assert_eq!(
        shown("BERTH_BUILD_TIMEOUT"),
        ("1h 30m".to_string(), Source::Env)
    );
    let exec = crate::act::ExecutorSettings::from_config(&c, None);
    let crate::act::Images::LocalBuild(build) = exec.images else {
        panic!("local-build mode");
    };
    assert_eq!(build.progress_timeout, c.build_progress_timeout);
    assert_eq!(build.timeout, c.build_timeout);
    assert_eq!(exec.pull_timeout, Duration::from_secs(120));

    let errs = errors(&[
        ("DATABASE_URL", DB),
        ("BERTH_BUILD_PROGRESS_TIMEOUT", "1h"),
        ("BERTH_BUILD_TIMEOUT", "30m"),
    ]);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].name, "BERTH_BUILD_PROGRESS_TIMEOUT");
    let errs = errors(&[("DATABASE_URL", DB), ("BERTH_BUILD_TIMEOUT", "0s")]);
    assert_eq!(errs[0].name, "BERTH_BUILD_TIMEOUT");
}

#[test]
fn the_executor_binds_under_the_configured_roots() {
    let c = config(&[("DATABASE_URL", DB), ("BERTH_WORKSPACE_ROOTS", "/srv/ws")]).unwrap();
    let exec = crate::act::ExecutorSettings::from_config(&c, None);
    assert_eq!(exec.workspace_roots, [PathBuf::from("/srv/ws")]);
}

#[test]
fn backoff_bounds_must_be_ordered() {
    let errs = errors(&[
        ("DATABASE_URL", DB),
        ("BERTH_CRASH_BACKOFF_INITIAL", "10m"),
        ("BERTH_CRASH_BACKOFF_MAX", "1m"),
    ]);
    assert_eq!(errs[0].name, "BERTH_CRASH_BACKOFF_INITIAL");
}

#[test]
fn mask_url_hides_passwords_and_a_user_alone() {
    assert_eq!(mask_url("postgres://u:p@h/db"), "postgres://u:***@h/db");
    // A user alone may be a token.
    assert_eq!(mask_url("postgres://u@h/db"), "postgres://***@h/db");
    assert_eq!(
        mask_url("postgres://h/db?password=x&sslmode=disable"),
        "postgres://h/db?password=***&sslmode=disable"
    );
    assert_eq!(
        mask_url("https://tok:x-oauth@git.example/a/b-"),
        "https://tok:***@git.example/a/b-"
    );
    assert_eq!(mask_url("/srv/templates/t-"), "/srv/templates/t-");
}

#[test]
fn flag_names_derive_from_the_variable() {
    assert_eq!(flag_name("BERTH_HOST_ID"), "host-id");
    assert_eq!(flag_name("TIER2_MEMORY_MB"), "tier2-memory-mb");
    assert_eq!(flag_name("DATABASE_URL"), "database-url");
}

#[test]
fn plan_settings_carry_the_parsed_values() {
    let c = config(&[
        ("DATABASE_URL", DB),
        ("BERTH_HOST_ID", "tenant-3"),
        ("MOLECULE_IMAGE_REGISTRY", "127.0.0.1:5000/team"),
        ("BERTH_ALLOW_HOST_ROOT_TIER", "yes"),
        ("TIER4_MEMORY_MB", "8192"),
    ])
    .unwrap();
    let s = c.plan_settings();
    assert_eq!(s.host_id, "tenant-3");
    assert_eq!(s.registry_prefix.as_deref(), Some("127.0.0.1:5000/team"));
    assert!(s.allow_host_root_tier);
    assert_eq!(s.tiers.memory_mb[3], Some(8192));
    assert_eq!(s.provision_timeout, c.provision_timeout);
    let local = config(&[("DATABASE_URL", DB)]).unwrap().plan_settings();
    assert_eq!(local.registry_prefix, None);
}

#[test]
fn the_docker_config_file_is_found_where_the_docker_cli_looks() {
    let c = config(&[
        ("DATABASE_URL", DB),
        ("DOCKER_CONFIG", "/etc/d"),
        ("HOME", "/root"),
    ])
    .unwrap();
    assert_eq!(
        c.docker_config_file,
        Some(PathBuf::from("/etc/d/config.json"))
    );
    let c = config(&[("DATABASE_URL", DB), ("HOME", "/root")]).unwrap();
    assert_eq!(
        c.docker_config_file,
        Some(PathBuf::from("/root/.docker/config.json"))
    );
    let c = config(&[("DATABASE_URL", DB)]).unwrap();
    assert_eq!(c.docker_config_file, None);
}

#[test]
fn the_operator_is_the_sudo_user_then_the_user_then_none() {
    let operator = |pairs: &[(&str, &str)]| {
        let mut all = vec![("DATABASE_URL", DB)];
        all.extend_from_slice(pairs);
        config(&all).unwrap().operator
    };
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        operator(&[("SUDO_USER", "alice"), ("USER", "root")]),
        s("alice")
    );
    assert_eq!(operator(&[("USER", "bob")]), s("bob"));
    assert_eq!(operator(&[("SUDO_USER", ""), ("USER", "bob")]), s("bob"));
    assert_eq!(operator(&[("USER", " ")]), None);
    assert_eq!(operator(&[]), None);
}

#[test]
fn berth_config_shows_the_values_in_effect_as_help_writes_the_defaults() {
    let c = config(&[("DATABASE_URL", DB), ("TIER3_MEMORY_MB", "1000")]).unwrap();
    let shown = |name: &str| {
        c.effective
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.value.clone())
            .unwrap_or_else(|| panic!("{name} not shown"))
    };
    assert_eq!(shown("TIER1_MEMORY_MB"), "unlimited (tier default)");
    assert_eq!(shown("TIER2_MEMORY_MB"), "512 (tier default)");
    assert_eq!(shown("TIER2_CPU_SHARES"), "1024 (tier default)");
    assert_eq!(shown("TIER3_MEMORY_MB"), "1000");
    assert_eq!(shown("BERTH_EVENTS_RETENTION"), "30d");
    assert_eq!(shown("BERTH_ORPHAN_GRACE"), "5m");
}

#[test]
fn a_bad_flag_value_is_reported_under_the_flag_typed() {
    let flags = HashMap::from([("BERTH_CONCURRENCY", "0".to_string())]);
    let env = env_of(&[("DATABASE_URL", DB), ("BERTH_RESYNC_INTERVAL", "soon")]);
    let Err(errors) = Config::from_sources(&flags, env) else {
        panic!("expected errors");
    };
    let text = errors.to_string();
    assert!(
        text.contains("--concurrency=\"0\" (BERTH_CONCURRENCY): not a positive whole number"),
        "{text}"
    );
    assert!(
        text.contains("BERTH_RESYNC_INTERVAL=\"soon\": not a duration"),
        "{text}"
    );
}

#[test]
fn values_that_work_against_the_operator_are_cautioned() {
    let c = config(&[("DATABASE_URL", DB)]).unwrap();
    assert_eq!(c.cautions(), Vec::<String>::new(), "the defaults are sound");
    let c = config(&[
        ("DATABASE_URL", DB),
        ("BERTH_STOP_TIMEOUT", "30s"),
        ("BERTH_SHUTDOWN_GRACE", "3s"),
        ("BERTH_LISTEN", "0.0.0.0:9464"),
    ])
    .unwrap();
    let cautions = c.cautions();
    assert_eq!(cautions.len(), 2, "{cautions:?}");
    assert!(
        cautions[0].contains("reachable beyond this machine"),
        "{cautions:?}"
    );
    assert!(
        cautions[1].starts_with("BERTH_STOP_TIMEOUT (30s) is not below BERTH_SHUTDOWN_GRACE (3s)"),
        "{cautions:?}"
    );
}
