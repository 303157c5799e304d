//! The operator's commands: their flags, their help, and how their
//! outcome becomes output and an exit code. The logic is in `ops`.

use std::io::IsTerminal;

use clap::Subcommand;
use serde::Serialize;

use super::{EXIT_CODES, Exit, emit};
use crate::config::Config;
use crate::model::Digest;
use crate::ops::{self, Confirm, OpsError, PinChange, PinRequest, StatusFilter};

const PLAN_HELP: &str = "\
The plan reads this host's rows (BERTH_HOST_ID) and lists the Docker Engine
once; it takes no lease, makes no Docker call that changes anything and
writes nothing. Run it with the settings `berth run` has on the host (the
same environment file): the container specs are built from them. It starts without the running controller's memory (its
backoffs and rolled-back specs); an orphan counts as seen since its
container was created, so its removal shows once it is older than
BERTH_ORPHAN_GRACE (a running berth removes it then or later).

With --detailed-exitcode: 0 nothing pending, 2 the pass would act on
Docker or write a status, other codes as below.";

const PIN_HELP: &str = "\
Every workspace of the runtime on the ring (on `stable`, also those on a
ring without a pin of its own), without an explicit `image`, is replaced
onto the new digest by the berth of its host. The command lists them and
asks for confirmation; without a terminal it needs --yes. The change is
written only if the pin still holds the digest shown, and the pin history
records it (with --note and --by).";

/// The commands that read or change the rows for an operator.
#[derive(Debug, Subcommand)]
pub enum Ops {
    /// Show what one pass would do now on this host, changing nothing.
    ///
    /// Action by action, each with its reason, and the status each row
    /// would be given.
    #[command(after_long_help = format!("{PLAN_HELP}\n\n{EXIT_CODES}"))]
    Plan {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Exit 2 when actions or status writes are pending, 0 when none.
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Show desired against observed state per workspace.
    ///
    /// Per workspace, from the rows of every host (or those the filters
    /// name): desired state, status and reason, the image digest running
    /// and the one its pin wants, the age of the last status change, the
    /// restart count, whether the latest desired change is observed (GEN),
    /// and the first line of last_error.
    #[command(after_long_help = EXIT_CODES)]
    Status {
        /// Only the workspaces of this berth host [default: every host].
        #[arg(long, value_name = "HOST")]
        host: Option<String>,
        /// Only workspaces with this status: provisioning, online,
        /// degraded, failed, stopped, paused, removed.
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
        /// Only workspaces of this runtime.
        #[arg(long, value_name = "RUNTIME")]
        runtime: Option<String>,
        /// Print JSON (an array of workspaces) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a workspace's audit trail, oldest first.
    #[command(after_long_help = EXIT_CODES)]
    Events {
        /// The workspace's id, container name (ws-<id12>), those 12
        /// characters alone (as `berth status` shows them) or row name. A
        /// name several rows share lists them (exit 64).
        workspace: String,
        /// Show at most this many of the latest events (at least 1).
        #[arg(
            long,
            default_value_t = 100,
            value_name = "N",
            value_parser = clap::value_parser!(i64).range(1..)
        )]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Pin a runtime's image to a digest for a ring.
    #[command(after_long_help = format!("{PIN_HELP}\n\n{EXIT_CODES}"))]
    Pin {
        /// The runtime (its name in the catalogue).
        runtime: String,
        /// sha256:<64 lower-case hex>.
        digest: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Ask every running berth to re-resolve moving tags and local builds.
    ///
    /// Workspaces without a pin or an explicit image run from their
    /// runtime's moving tag (or, without a registry, a local build of its
    /// template repository). Each berth holding a host lease asks the
    /// registry for the tag's digest now (or the repository for its HEAD)
    /// and replaces the workspaces whose image moved, in rollout waves; an
    /// unchanged tag pulls and replaces nothing. The request reaches only
    /// the berths running now; the command names their hosts and exits 1
    /// when there is none.
    #[command(after_long_help = EXIT_CODES)]
    Refresh {
        /// Only this runtime's workspaces [default: every runtime].
        runtime: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Set a runtime's pin back to its previous digest.
    #[command(after_long_help = format!(
        "The target is --to, or else the pin history's newest digest before the \
         current one was set that differs from it, preferring one marked stable \
         (a rollout of it completed).\n\n{PIN_HELP}\n\n{EXIT_CODES}"
    ))]
    Rollback {
        /// The runtime (its name in the catalogue).
        runtime: String,
        /// Roll back to this digest instead of the one the history names.
        #[arg(long, value_name = "DIGEST")]
        to: Option<String>,
        #[command(flatten)]
        change: ChangeArgs,
    },
}

/// What `pin` and `rollback` share.
#[derive(Debug, clap::Args)]
pub struct ChangeArgs {
    /// The rollout ring.
    #[arg(long, default_value = "stable", value_name = "RING")]
    ring: String,
    /// Why, recorded in the pin and its history.
    #[arg(long, value_name = "TEXT")]
    note: Option<String>,
    /// Who, recorded as updated_by [default: the operator's login, $SUDO_USER
    /// or else $USER; without either, the database role].
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
    /// Confirm without asking (required without a terminal).
    #[arg(long, short = 'y')]
    yes: bool,
    /// Print the change as JSON (the question, if any, goes to stderr).
    #[arg(long)]
    json: bool,
}

impl ChangeArgs {
    /// `--by`, or else the operator's login.
    fn by(&self, config: &Config) -> Option<String> {
        self.by.clone().or_else(|| config.operator.clone())
    }
}

fn print(text: &str) -> Result<(), OpsError> {
    emit(text).map_err(OpsError::Output)
}

fn print_json<T: Serialize>(value: &T) -> Result<(), OpsError> {
    match serde_json::to_string_pretty(value) {
        Ok(text) => print(&format!("{text}\n")),
        Err(e) => {
            eprintln!("berth: rendering JSON: {e}");
            Ok(())
        }
    }
}

fn digest(flag: &str, raw: &str) -> Result<Digest, OpsError> {
    Digest::parse(raw).map_err(|e| OpsError::Usage(format!("{flag} {raw:?}: {e}")))
}

/// Runs an operator command; its exit code.
pub async fn run(command: Ops, config: &Config) -> Exit {
    match execute(command, config).await {
        Ok(exit) => exit,
        Err(error) => {
            eprintln!("berth: {error}");
            error.exit()
        }
    }
}

async fn execute(command: Ops, config: &Config) -> Result<Exit, OpsError> {
    let now = chrono::Utc::now();
    match command {
        Ops::Plan {
            json,
            detailed_exitcode,
        } => {
            let plan = ops::plan(config).await?;
            if json {
                print_json(&plan)?;
            } else {
                print(&plan.render())?;
            }
            Ok(if detailed_exitcode && plan.pending() > 0 {
                Exit::Pending
            } else {
                Exit::Success
            })
        }
        Ops::Status {
            host,
            status,
            runtime,
            json,
        } => {
            let pool = ops::connect(config).await?;
            let filter = StatusFilter {
                host,
                status,
                runtime,
            };
            let rows = ops::status(&pool, &filter).await;
            let rows = match rows {
                Ok(rows) => rows,
                Err(e) => {
                    pool.close().await;
                    return Err(e);
                }
            };
            let hosts: Vec<String> = rows.iter().map(|r| r.host.clone()).collect();
            let runtimes: Vec<String> = rows.iter().map(|r| r.runtime.clone()).collect();
            let leases = ops::host_leases(&pool, &hosts).await;
            let halts = ops::recent_halts(&pool, &runtimes).await;
            // Rows gone are what trips the guard: it is looked for on
            // every host the filter allows, not only those of the rows.
            let trips = ops::recent_guard_trips(&pool, filter.host.as_deref()).await;
            pool.close().await;
            let hosts = ops::host_views(&rows, &leases?, config.lease_ttl);
            let (halts, trips) = (halts?, trips?);
            if json {
                let rows: Vec<ops::StatusJson> = rows.iter().map(Into::into).collect();
                print_json(&serde_json::json!({
                    "workspaces": rows,
                    "hosts": hosts,
                    "halts": halts,
                    "delete_guard": trips,
                }))?;
            } else {
                let mut out = ops::render_status(&rows, now);
                out.push_str(&ops::render_hosts(&hosts));
                out.push_str(&ops::render_halts(&halts));
                out.push_str(&ops::render_guard_trips(&trips));
                print(&out)?;
            }
            Ok(Exit::Success)
        }
        Ops::Events {
            workspace,
            limit,
            json,
        } => {
            let pool = ops::connect(config).await?;
            let view = ops::events(&pool, &workspace, limit).await;
            pool.close().await;
            let view = view?;
            if json {
                print_json(&view)?;
            } else {
                print(&ops::render_events(&view))?;
            }
            Ok(Exit::Success)
        }
        Ops::Pin {
            runtime,
            digest: raw,
            change,
        } => {
            let digest = digest("digest", &raw)?;
            let pool = ops::connect(config).await?;
            let request = PinRequest {
                runtime,
                ring: change.ring.clone(),
                digest,
                note: change.note.clone(),
                by: change.by(config),
            };
            let result = match ops::prepare_pin(&pool, request).await {
                Ok(prepared) => confirm_and_apply(&pool, prepared, &change).await,
                Err(e) => Err(e),
            };
            pool.close().await;
            result
        }
        Ops::Refresh { runtime, json } => {
            let pool = ops::connect(config).await?;
            let view = ops::refresh(&pool, config, runtime).await;
            pool.close().await;
            let view = view?;
            if json {
                print_json(&view)?;
            } else {
                print(&view.render())?;
            }
            Ok(if view.listening_hosts.is_empty() {
                Exit::Failure
            } else {
                Exit::Success
            })
        }
        Ops::Rollback {
            runtime,
            to,
            change,
        } => {
            let to = to.map(|raw| digest("--to", &raw)).transpose()?;
            let pool = ops::connect(config).await?;
            let prepared = ops::prepare_rollback(
                &pool,
                &runtime,
                &change.ring,
                to,
                change.note.clone(),
                change.by(config),
            )
            .await;
            let result = match prepared {
                Ok(prepared) => confirm_and_apply(&pool, prepared, &change).await,
                Err(e) => Err(e),
            };
            pool.close().await;
            result
        }
    }
}

/// Shows the change, asks unless `--yes`, applies it.
async fn confirm_and_apply(
    pool: &sqlx::PgPool,
    mut change: PinChange,
    args: &ChangeArgs,
) -> Result<Exit, OpsError> {
    let shown = change.render();
    if args.json {
        eprint!("{shown}");
    } else {
        print(&shown)?;
    }
    if change.is_noop() {
        if args.json {
            print_json(&change)?;
        }
        return Ok(Exit::Success);
    }
    let mode = Confirm::new(args.yes, std::io::stdin().is_terminal());
    let question = format!("Apply this {}?", change.kind);
    let go = ops::confirm(
        mode,
        &question,
        &mut std::io::stdin().lock(),
        &mut std::io::stderr(),
    )?;
    if !go {
        eprintln!("berth: not confirmed; nothing changed");
        return Ok(Exit::Failure);
    }
    ops::apply_pin(pool, &mut change).await?;
    if args.json {
        print_json(&change)?;
    } else {
        print(&format!(
            "{}/{} is now pinned to {}; `berth status --runtime {}` shows the rollout\n",
            change.runtime, change.ring, change.to, change.runtime
        ))?;
    }
    Ok(Exit::Success)
}
