//! Every setting berth reads: its environment variable, whether it is a
//! secret or a URL, its default as shown in `--help`, and what it means. The flag of a
//! setting is derived from its variable (see [`flag_name`]).

#[derive(Debug)]
pub struct Setting {
    pub env: &'static str,
    /// Never shown: `***` in `berth config` and in errors.
    pub secret: bool,
    /// A URL that may carry credentials in its user info: shown masked
    /// (`mask_url`) in `berth config` and in errors, a bad value too.
    pub url: bool,
    pub default: &'static str,
    pub help: &'static str,
}

const fn s(env: &'static str, default: &'static str, help: &'static str) -> Setting {
    Setting {
        env,
        secret: false,
        url: false,
        default,
        help,
    }
}

const fn url(env: &'static str, default: &'static str, help: &'static str) -> Setting {
    Setting {
        env,
        secret: false,
        url: true,
        default,
        help,
    }
}

const fn secret(env: &'static str, help: &'static str) -> Setting {
    Setting {
        env,
        secret: true,
        url: false,
        default: "unset",
        help,
    }
}

/// `BERTH_HOST_ID` → `host-id`, `TIER2_MEMORY_MB` → `tier2-memory-mb`.
pub fn flag_name(env: &str) -> String {
    env.strip_prefix("BERTH_")
        .unwrap_or(env)
        .to_ascii_lowercase()
        .replace('_', "-")
}

pub const SETTINGS: &[Setting] = &[
    url(
        "DATABASE_URL",
        "unset",
        "PostgreSQL URL (required; no TLS: sslmode=require and verify-* are refused)",
    ),
    url(
        "DOCKER_HOST",
        "local socket",
        "Docker Engine endpoint (unix://, tcp://, http://; no TLS)",
    ),
    s(
        "DOCKER_CONFIG",
        "$HOME/.docker",
        "docker CLI config dir whose config.json has registry auths and credential helpers",
    ),
    s(
        "BERTH_HOST_ID",
        "default",
        "which rows and containers are this host's",
    ),
    s(
        "BERTH_LISTEN",
        "127.0.0.1:9464",
        "admin HTTP address: /metrics, /healthz, /readyz",
    ),
    s(
        "BERTH_CONCURRENCY",
        "8",
        "reconcile passes in flight at once",
    ),
    s(
        "BERTH_RESYNC_INTERVAL",
        "30s",
        "full relist and reread, jittered",
    ),
    s(
        "BERTH_ORPHAN_GRACE",
        "5m",
        "age before an orphan container may go (and two sightings)",
    ),
    s(
        "BERTH_DELETE_GUARD",
        "max(5, 10%)",
        "most orphan/duplicate removals per pass: N or N%",
    ),
    s(
        "BERTH_PROVISION_TIMEOUT",
        "10m",
        "readiness deadline when the runtime row sets none",
    ),
    s(
        "PROVISION_TIMEOUT_SECONDS",
        "unset",
        "alias of BERTH_PROVISION_TIMEOUT, in seconds",
    ),
    s(
        "BERTH_READY_MIN_UPTIME",
        "30s",
        "readiness when no health signal exists",
    ),
    s(
        "BERTH_CRASH_BACKOFF_INITIAL",
        "10s",
        "first delay of berth's restarts of a stopped container",
    ),
    s(
        "BERTH_CRASH_BACKOFF_MAX",
        "5m",
        "longest delay of berth's restarts of a stopped container",
    ),
    s(
        "BERTH_CRASH_LOOP_RESTARTS",
        "5",
        "restarts within 10 min that make crash_loop",
    ),
    s(
        "BERTH_STOP_TIMEOUT",
        "10s",
        "SIGTERM to SIGKILL for a workspace container",
    ),
    s(
        "BERTH_SHUTDOWN_GRACE",
        "30s",
        "berth's own drain on SIGTERM",
    ),
    s(
        "BERTH_PULL_PROGRESS_TIMEOUT",
        "2m",
        "a pull with no progress for this long fails",
    ),
    s(
        "BERTH_PULL_TIMEOUT",
        "15m",
        "a pull taking longer than this fails",
    ),
    s(
        "BERTH_BUILD_PROGRESS_TIMEOUT",
        "10m",
        "a local build silent this long fails (a git HEAD check, a build step with no output)",
    ),
    s(
        "BERTH_BUILD_TIMEOUT",
        "45m",
        "a local build's clone and image build taking longer than this fail",
    ),
    s(
        "BERTH_TAG_REFRESH",
        "off",
        "moving-tag re-resolution interval, or off",
    ),
    s(
        "BERTH_ROLLOUT_CANARY",
        "1",
        "replaces in a pin rollout's first wave",
    ),
    s(
        "BERTH_ROLLOUT_MAX_PARALLEL",
        "1",
        "replaces at a time in later waves",
    ),
    s(
        "BERTH_ROLLOUT_MAX_FAILURE_RATIO",
        "0",
        "failed share of a rollout that halts it (0..1)",
    ),
    s(
        "BERTH_PIN_DEBOUNCE",
        "5s",
        "how long a pin must hold before it rolls out",
    ),
    s("BERTH_LEASE_TTL", "15s", "host lease lifetime"),
    s(
        "BERTH_NETWORK",
        "molecule-monorepo-net",
        "workspace network",
    ),
    s(
        "BERTH_WORKSPACE_ROOTS",
        "none",
        "host dirs a row may mount, :-separated absolute paths",
    ),
    s(
        "BERTH_ALLOW_HOST_ROOT_TIER",
        "false",
        "allow tier 4 (privileged, host root)",
    ),
    s(
        "BERTH_EVENTS_RETENTION",
        "30d",
        "how long workspace_events rows are kept",
    ),
    s(
        "BERTH_LOG_FORMAT",
        "pretty on a TTY, else json",
        "log format: pretty or json",
    ),
    s(
        "RUST_LOG",
        "info",
        "log filter (tracing's EnvFilter syntax, e.g. info,berth=debug)",
    ),
    url(
        "MOLECULE_IMAGE_REGISTRY",
        "unset: local-build mode",
        "image registry prefix, e.g. ghcr.io/molecule-ai",
    ),
    s(
        "MOLECULE_IMAGE_PLATFORM",
        "linux/amd64 on arm64, else none",
        "platform for pull and create; empty = none",
    ),
    url(
        "MOLECULE_LOCAL_TEMPLATE_REPO_PREFIX",
        "the platform's template repositories",
        "git URL prefix of template repositories (local-build mode)",
    ),
    s(
        "MOLECULE_LOCAL_BUILD_CACHE",
        "$XDG_CACHE_HOME/berth/builds, else $HOME/.cache/berth/builds, else /var/cache/berth/builds",
        "build context cache (local-build mode)",
    ),
    secret(
        "MOLECULE_GITEA_TOKEN",
        "token for https template fetches (local-build mode)",
    ),
    s(
        "TIER1_MEMORY_MB",
        "unlimited",
        "memory limit of tier 1, MiB",
    ),
    s(
        "TIER1_CPU_SHARES",
        "unlimited",
        "CPU of tier 1 (1024 = 1 CPU)",
    ),
    s("TIER2_MEMORY_MB", "512", "memory limit of tier 2, MiB"),
    s("TIER2_CPU_SHARES", "1024", "CPU of tier 2 (1024 = 1 CPU)"),
    s("TIER3_MEMORY_MB", "2048", "memory limit of tier 3, MiB"),
    s("TIER3_CPU_SHARES", "2048", "CPU of tier 3 (1024 = 1 CPU)"),
    s("TIER4_MEMORY_MB", "4096", "memory limit of tier 4, MiB"),
    s("TIER4_CPU_SHARES", "4096", "CPU of tier 4 (1024 = 1 CPU)"),
    url(
        "PLATFORM_URL",
        "http://host.docker.internal:8080",
        "platform URL given to workspaces (PLATFORM_URL, MOLECULE_URL)",
    ),
    s(
        "WORKSPACE_IMAGE_LOCAL_OVERRIDE",
        "false",
        "use local tags as found, ignore pins, never pull",
    ),
    s(
        "GHCR_USER",
        "unset",
        "registry user for the registry of MOLECULE_IMAGE_REGISTRY",
    ),
    secret(
        "GHCR_TOKEN",
        "registry token for the registry of MOLECULE_IMAGE_REGISTRY",
    ),
];
