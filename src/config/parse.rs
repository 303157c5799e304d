//! From resolved settings to a `Config`: each setting parsed, the ones
//! that depend on each other judged together.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::resolve::Resolver;
use super::values::*;
use super::{
    Config, DEFAULT_TEMPLATE_REPO_PREFIX, ImageMode, LogFormat, RegistryAuth, Rollout, Source,
};
use crate::model::{Platform, TierOverrides};

pub(super) fn parse(r: &mut Resolver<'_>) -> Option<Config> {
    let database_url = r.required("DATABASE_URL", database_url, |u| u.masked());
    let docker_host = r.optional("DOCKER_HOST", docker_host, |h| h.clone());
    let home = r.raw("HOME").filter(|h| h.starts_with('/'));
    let default_docker_config = home.map(|h| format!("{h}/.docker")).unwrap_or_default();
    let docker_config_file = r.value(
        "DOCKER_CONFIG",
        &default_docker_config,
        |raw| {
            if raw.is_empty() {
                Ok(None)
            } else {
                absolute_path(raw).map(|dir| Some(dir.join("config.json")))
            }
        },
        |file| {
            file.as_ref()
                .map_or("(none: no HOME)".into(), |f| f.display().to_string())
        },
    );
    let host_id = r.value("BERTH_HOST_ID", "default", host_id, |h| h.clone());
    let listen = r.value("BERTH_LISTEN", "127.0.0.1:9464", socket_addr, |a| {
        a.to_string()
    });
    let concurrency = r.value("BERTH_CONCURRENCY", "8", concurrency, |n| n.to_string());
    let resync_interval = r.duration("BERTH_RESYNC_INTERVAL", "30s");
    let orphan_grace = r.duration("BERTH_ORPHAN_GRACE", "5m");
    let delete_guard = r.value("BERTH_DELETE_GUARD", "", delete_guard, |g| g.to_string());
    let provision_timeout = provision_timeout(r);
    let ready_min_uptime = r.duration("BERTH_READY_MIN_UPTIME", "30s");
    let crash_backoff_initial = r.duration("BERTH_CRASH_BACKOFF_INITIAL", "10s");
    let crash_backoff_max = r.duration("BERTH_CRASH_BACKOFF_MAX", "5m");
    let crash_loop_restarts = r.value("BERTH_CRASH_LOOP_RESTARTS", "5", positive::<u32>, |n| {
        n.to_string()
    });
    let stop_timeout = r.duration("BERTH_STOP_TIMEOUT", "10s");
    let shutdown_grace = r.duration("BERTH_SHUTDOWN_GRACE", "30s");
    let pull_progress_timeout = r.duration("BERTH_PULL_PROGRESS_TIMEOUT", "2m");
    let pull_timeout = r.duration("BERTH_PULL_TIMEOUT", "15m");
    let build_progress_timeout = r.duration("BERTH_BUILD_PROGRESS_TIMEOUT", "10m");
    let build_timeout = r.duration("BERTH_BUILD_TIMEOUT", "45m");
    let tag_refresh = r.value("BERTH_TAG_REFRESH", "off", duration_or_off, |d| match d {
        Some(d) => humantime::format_duration(*d).to_string(),
        None => "off".into(),
    });
    let canary = r.value("BERTH_ROLLOUT_CANARY", "1", positive::<u32>, |n| {
        n.to_string()
    });
    let max_parallel = r.value("BERTH_ROLLOUT_MAX_PARALLEL", "1", positive::<u32>, |n| {
        n.to_string()
    });
    let max_failure_ratio = r.value("BERTH_ROLLOUT_MAX_FAILURE_RATIO", "0", ratio, |x| {
        x.to_string()
    });
    let pin_debounce = r.value("BERTH_PIN_DEBOUNCE", "5s", duration_or_zero, fmt_duration);
    let lease_ttl = r.value("BERTH_LEASE_TTL", "15s", lease_ttl, fmt_duration);
    let network = r.value("BERTH_NETWORK", "molecule-monorepo-net", network, |n| {
        n.clone()
    });
    let workspace_roots = r.value("BERTH_WORKSPACE_ROOTS", "", workspace_roots, |roots| {
        roots
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    });
    let allow_host_root_tier = r.value("BERTH_ALLOW_HOST_ROOT_TIER", "false", boolean, |b| {
        b.to_string()
    });
    let events_retention = r.duration("BERTH_EVENTS_RETENTION", "30d");
    let log_format = r.value("BERTH_LOG_FORMAT", "", log_format, |f| {
        match f {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
            LogFormat::Auto => "auto (pretty on a terminal, else json)",
        }
        .into()
    });
    let log_filter = r.value("RUST_LOG", "info", log_filter, |f| f.clone());
    let images = image_mode(r);
    let platform = platform(r);
    let tiers = tier_overrides(r);
    let platform_url = r.value(
        "PLATFORM_URL",
        "http://host.docker.internal:8080",
        http_url,
        |u| u.clone(),
    );
    let local_override = r.value("WORKSPACE_IMAGE_LOCAL_OVERRIDE", "false", boolean, |b| {
        b.to_string()
    });
    let registry_auth = registry_auth(r);
    let operator = r.raw("SUDO_USER").or_else(|| r.raw("USER"));

    if let (Some(initial), Some(max)) = (crash_backoff_initial, crash_backoff_max)
        && initial > max
    {
        r.conflict(
            "BERTH_CRASH_BACKOFF_INITIAL",
            "is longer than BERTH_CRASH_BACKOFF_MAX".into(),
        );
    }
    if let (Some(progress), Some(total)) = (pull_progress_timeout, pull_timeout)
        && progress > total
    {
        r.conflict(
            "BERTH_PULL_PROGRESS_TIMEOUT",
            "is longer than BERTH_PULL_TIMEOUT".into(),
        );
    }
    if let (Some(progress), Some(total)) = (build_progress_timeout, build_timeout)
        && progress > total
    {
        r.conflict(
            "BERTH_BUILD_PROGRESS_TIMEOUT",
            "is longer than BERTH_BUILD_TIMEOUT".into(),
        );
    }

    Some(Config {
        database_url: database_url?,
        docker_host: docker_host?,
        docker_config_file: docker_config_file?,
        host_id: host_id?,
        listen: listen?,
        concurrency: concurrency?,
        resync_interval: resync_interval?,
        orphan_grace: orphan_grace?,
        delete_guard: delete_guard?,
        provision_timeout: provision_timeout?,
        ready_min_uptime: ready_min_uptime?,
        crash_backoff_initial: crash_backoff_initial?,
        crash_backoff_max: crash_backoff_max?,
        crash_loop_restarts: crash_loop_restarts?,
        stop_timeout: stop_timeout?,
        shutdown_grace: shutdown_grace?,
        pull_progress_timeout: pull_progress_timeout?,
        pull_timeout: pull_timeout?,
        build_progress_timeout: build_progress_timeout?,
        build_timeout: build_timeout?,
        tag_refresh: tag_refresh?,
        rollout: Rollout {
            canary: canary?,
            max_parallel: max_parallel?,
            max_failure_ratio: max_failure_ratio?,
        },
        pin_debounce: pin_debounce?,
        lease_ttl: lease_ttl?,
        network: network?,
        workspace_roots: workspace_roots?,
        allow_host_root_tier: allow_host_root_tier?,
        events_retention: events_retention?,
        log_format: log_format?,
        log_filter: log_filter?,
        images: images?,
        platform: platform?,
        tiers: tiers?,
        platform_url: platform_url?,
        local_override: local_override?,
        registry_auth: registry_auth?,
        operator,
        effective: Vec::new(),
    })
}

/// `BERTH_PROVISION_TIMEOUT`, or its Go-era alias `PROVISION_TIMEOUT_SECONDS`
/// (whole seconds); both set is an error.
fn provision_timeout(r: &mut Resolver<'_>) -> Option<Duration> {
    let alias = r.raw("PROVISION_TIMEOUT_SECONDS");
    let own = r.raw("BERTH_PROVISION_TIMEOUT");
    match (own, alias) {
        (Some(_), Some(_)) => {
            r.conflict(
                "PROVISION_TIMEOUT_SECONDS",
                "is an alias of BERTH_PROVISION_TIMEOUT: set only one".into(),
            );
            r.show(
                "PROVISION_TIMEOUT_SECONDS",
                "(conflict)".into(),
                Source::Env,
            );
            r.show("BERTH_PROVISION_TIMEOUT", "(conflict)".into(), Source::Env);
            None
        }
        (None, Some(_)) => {
            let d = r.value("PROVISION_TIMEOUT_SECONDS", "", seconds, fmt_duration);
            r.show(
                "BERTH_PROVISION_TIMEOUT",
                "(from PROVISION_TIMEOUT_SECONDS)".into(),
                Source::Env,
            );
            d
        }
        _ => {
            r.show(
                "PROVISION_TIMEOUT_SECONDS",
                "(unset)".into(),
                Source::Default,
            );
            r.duration("BERTH_PROVISION_TIMEOUT", "10m")
        }
    }
}

fn image_mode(r: &mut Resolver<'_>) -> Option<ImageMode> {
    let prefix = r.optional("MOLECULE_IMAGE_REGISTRY", registry_prefix, |p| p.clone());
    let repo_prefix = r.value(
        "MOLECULE_LOCAL_TEMPLATE_REPO_PREFIX",
        DEFAULT_TEMPLATE_REPO_PREFIX,
        repo_prefix,
        |p| p.masked(),
    );
    let default_cache = default_build_cache(|name| r.raw(name));
    let cache_dir = r.value(
        "MOLECULE_LOCAL_BUILD_CACHE",
        &default_cache.display().to_string(),
        absolute_path,
        |p| p.display().to_string(),
    );
    let gitea_token = r.optional("MOLECULE_GITEA_TOKEN", secret, |_| "***".into());
    match prefix? {
        Some(prefix) => Some(ImageMode::Registry { prefix }),
        None => Some(ImageMode::LocalBuild {
            repo_prefix: repo_prefix?,
            cache_dir: cache_dir?,
            gitea_token: gitea_token?,
        }),
    }
}

/// `$XDG_CACHE_HOME/berth/builds`, else `$HOME/.cache/berth/builds`, else
/// `/var/cache/berth/builds` (a system service without a home).
fn default_build_cache(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    let nonempty = |name: &str| env(name).filter(|v| v.starts_with('/'));
    if let Some(xdg) = nonempty("XDG_CACHE_HOME") {
        return Path::new(&xdg).join("berth/builds");
    }
    if let Some(home) = nonempty("HOME") {
        return Path::new(&home).join(".cache/berth/builds");
    }
    PathBuf::from("/var/cache/berth/builds")
}

/// `MOLECULE_IMAGE_PLATFORM`: set and empty is "no preference"; unset is
/// linux/amd64 on arm64 hosts (images are published for amd64) and no
/// preference elsewhere.
fn platform(r: &mut Resolver<'_>) -> Option<Option<Platform>> {
    const NAME: &str = "MOLECULE_IMAGE_PLATFORM";
    match r.raw_keep_empty(NAME) {
        Some((raw, source)) if raw.trim().is_empty() => {
            r.show(NAME, "(none: set but empty)".into(), source);
            Some(None)
        }
        Some((raw, source)) => match platform_value(&raw) {
            Ok(p) => {
                r.show(NAME, p.to_string(), source);
                Some(Some(p))
            }
            Err(message) => {
                r.bad(NAME, raw, message);
                None
            }
        },
        None => {
            let default =
                (std::env::consts::ARCH == "aarch64").then(|| Platform("linux/amd64".to_string()));
            let shown = match &default {
                Some(p) => format!("{p} (arm64 host)"),
                None => "(none)".into(),
            };
            r.show(NAME, shown, Source::Default);
            Some(default)
        }
    }
}

fn tier_overrides(r: &mut Resolver<'_>) -> Option<TierOverrides> {
    const MEMORY: [&str; 4] = [
        "TIER1_MEMORY_MB",
        "TIER2_MEMORY_MB",
        "TIER3_MEMORY_MB",
        "TIER4_MEMORY_MB",
    ];
    const CPU: [&str; 4] = [
        "TIER1_CPU_SHARES",
        "TIER2_CPU_SHARES",
        "TIER3_CPU_SHARES",
        "TIER4_CPU_SHARES",
    ];
    let mut tiers = TierOverrides::default();
    let mut ok = true;
    for (i, tier) in crate::model::Tier::ALL.into_iter().enumerate() {
        // The effective value, as `--help` shows the defaults.
        let (memory, cpu) = tier.defaults();
        let shown = |default: u64| {
            move |v: &Option<u64>| match (v, default) {
                (Some(n), _) => n.to_string(),
                (None, 0) => "unlimited (tier default)".to_string(),
                (None, d) => format!("{d} (tier default)"),
            }
        };
        match r.value(MEMORY[i], "", optional_positive, shown(memory)) {
            Some(v) => tiers.memory_mb[i] = v,
            None => ok = false,
        }
        match r.value(CPU[i], "", optional_positive, shown(cpu)) {
            Some(v) => tiers.cpu_shares[i] = v,
            None => ok = false,
        }
    }
    ok.then_some(tiers)
}

fn registry_auth(r: &mut Resolver<'_>) -> Option<Option<RegistryAuth>> {
    let user = r.optional("GHCR_USER", |s| Ok(s.to_string()), |u| u.clone());
    let token = r.optional("GHCR_TOKEN", secret, |_| "***".into());
    match (user?, token?) {
        (Some(user), Some(token)) => Some(Some(RegistryAuth { user, token })),
        (None, None) => Some(None),
        (Some(_), None) => {
            r.conflict("GHCR_TOKEN", "is required when GHCR_USER is set".into());
            None
        }
        (None, Some(_)) => {
            r.conflict("GHCR_USER", "is required when GHCR_TOKEN is set".into());
            None
        }
    }
}
