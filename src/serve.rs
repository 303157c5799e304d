//! `berth run`: assembles the session (LISTEN + lease), the observer, the
//! controller and the admin HTTP, and runs them until a signal.
//!
//! The first SIGTERM or SIGINT stops intake and lets passes in flight
//! finish within `BERTH_SHUTDOWN_GRACE`; then the lease is released and
//! everything stops. A second signal exits at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::act::{Executor, ExecutorSettings};
use crate::cli::Exit;
use crate::config::Config;
use crate::controller::{Controller, Inputs};
use crate::desired::{self, Session, instance_id};
use crate::http::{self, Readiness};
use crate::metrics::Metrics;
use crate::observed::Observer;

/// Runs the controller until a signal; returns the exit code.
pub async fn run(config: &Config, migrate: bool) -> Exit {
    let pool_size = u32::try_from(config.concurrency.saturating_add(4)).unwrap_or(32);
    let pool = match desired::connect(&config.database_url, pool_size, Duration::from_secs(10))
        .await
    {
        Ok(pool) => pool,
        Err(error) => {
            tracing::error!(%error, database = %config.database_url, "cannot connect to the database");
            return crate::cli::schema_exit(&error);
        }
    };
    let schema = if migrate {
        desired::migrate(&pool).await.map(|report| {
            for (version, description) in report.applied {
                tracing::info!(version, %description, "migration applied");
            }
        })
    } else {
        desired::check_ready(&pool).await.map(|_| ())
    };
    let schema = match schema {
        Ok(()) => desired::check_run_privileges(&pool).await,
        failed => failed,
    };
    if let Err(error) = schema {
        let may_not_migrate = migrate
            && error.refused_user()
            && !matches!(error, desired::SchemaError::Privileges { .. });
        let what = if may_not_migrate {
            "database schema: this role may not migrate; run `berth migrate` as the owner of berth's tables, then start `berth run` as this role again (with nothing left to migrate it asks nothing of the role)"
        } else {
            "database schema"
        };
        tracing::error!(%error, "{what}");
        return crate::cli::schema_exit(&error);
    }
    let docker = match crate::docker::connect(config.docker_host.as_deref()).await {
        Ok(docker) => docker,
        Err(error) => {
            tracing::error!(%error, "cannot reach the Docker Engine");
            return Exit::Unavailable;
        }
    };
    let metrics = match Metrics::new() {
        Ok(m) => m,
        Err(error) => {
            tracing::error!(%error, "registering metrics");
            return Exit::Failure;
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(error) => {
            tracing::error!(%error, listen = %config.listen, "cannot bind the admin listener");
            return Exit::Failure;
        }
    };
    // The address bound, which tells the port when asked for port 0.
    let listen = listener.local_addr().unwrap_or(config.listen);
    for caution in config.cautions() {
        tracing::warn!("{caution}");
    }

    let readiness = Arc::new(Readiness::default());
    // `rest` stops the session, observer and HTTP; `intake` stops the
    // controller first, so passes in flight keep the lease while draining.
    let rest = CancellationToken::new();
    let intake = CancellationToken::new();
    tokio::spawn(signals(intake.clone()));

    let http_task = tokio::spawn(http::serve(
        listener,
        readiness.clone(),
        metrics.clone(),
        rest.clone(),
    ));
    let (observer, observed, observed_rx) =
        Observer::new(docker.clone(), &config.host_id, config.resync_interval);
    let observer_task = tokio::spawn(observer.run(rest.clone()));
    let (desired_tx, desired_rx) = mpsc::unbounded_channel();
    let (lease_tx, lease_rx) = watch::channel(None);
    let holder = instance_id();
    let session = Session {
        url: config.database_url.clone(),
        host: config.host_id.clone(),
        holder: holder.clone(),
        ttl: config.lease_ttl,
        retry_max: config.resync_interval.min(Duration::from_secs(30)),
    };
    let session_task = tokio::spawn(session.run(desired_tx, lease_tx, rest.clone()));
    let executor = Executor::new(
        docker,
        ExecutorSettings::from_config(config, config.docker_config_file.clone()),
    );
    let controller = Controller {
        settings: config.plan_settings(),
        concurrency: config.concurrency,
        resync_interval: config.resync_interval,
        events_retention: config.events_retention,
        rollout: config.rollout,
        pin_debounce: config.pin_debounce,
        tag_refresh: config.tag_refresh,
        pool,
        executor,
        observed,
        metrics,
        readiness: readiness.clone(),
    };
    tracing::info!(host = %config.host_id, instance = %holder, %listen, "berth running");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let watchdog = tokio::spawn(watchdog(readiness));

    controller
        .run(
            Inputs {
                desired: desired_rx,
                observed: observed_rx,
                lease: lease_rx,
            },
            intake,
            config.shutdown_grace,
        )
        .await;
    rest.cancel();
    watchdog.abort();
    let _ = tokio::join!(session_task, observer_task, http_task);
    tracing::info!("berth stopped");
    Exit::Success
}

/// The first SIGTERM/SIGINT stops intake; the second exits at once.
async fn signals(intake: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    for n in 0.. {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if n == 0 {
            tracing::info!("signal: draining (a second signal exits at once)");
            // Said now, not after the drain: the loop stops turning, and a
            // stopping service is not held to the watchdog.
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            intake.cancel();
        } else {
            tracing::warn!("second signal: exiting now");
            std::process::exit(Exit::Failure as i32);
        }
    }
}

/// Pings the systemd watchdog at half its interval while the control loop
/// turns; a stalled loop stops the pings, and systemd restarts berth.
async fn watchdog(readiness: Arc<Readiness>) {
    // A zero interval (WATCHDOG_USEC=0 set by hand) is no watchdog.
    let Some(every) = sd_notify::watchdog_enabled().filter(|d| !d.is_zero()) else {
        return;
    };
    let mut tick = tokio::time::interval(every / 2);
    let mut quiet = false;
    loop {
        tick.tick().await;
        if readiness.stalled(every) {
            if !quiet {
                tracing::error!(
                    stalled_s = readiness.since_turned().unwrap_or_default().as_secs(),
                    "the control loop stopped turning; the systemd watchdog is no longer pinged"
                );
            }
            quiet = true;
            continue;
        }
        quiet = false;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
    }
}
