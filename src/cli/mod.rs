//! The `berth` command line: argv → configuration → command, and the exit
//! codes scripts rely on.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Arg, ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{Config, SETTINGS, flag_name};
use crate::desired::{self, SchemaError};

mod commands;

/// The exit codes of DESIGN §1.4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Success = 0,
    Failure = 1,
    /// `plan --detailed-exitcode`: actions are pending.
    Pending = 2,
    /// Bad usage or configuration.
    Usage = 64,
    /// The database schema is incompatible with this berth.
    Schema = 65,
    /// The database or the engine is unreachable.
    Unavailable = 69,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0   success
  1   anything else
  2   plan --detailed-exitcode: actions are pending
  64  bad usage or configuration (every bad value is reported; also a
      database that refuses the user, password or database name, or
      lacks a privilege berth needs for that user)
  65  the database schema is incompatible with this berth
  69  the database or the Docker Engine is unreachable

Every setting is read from its environment variable or its flag (the flag
wins); `berth config` shows the effective values.";

/// berth keeps the workspace containers on one Docker host in line with
/// rows in PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "berth", version, after_long_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller: keep this host's containers in line with its
    /// rows (applies pending migrations first).
    #[command(after_long_help = EXIT_CODES)]
    Run {
        /// Do not apply pending migrations; refuse an incompatible schema.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply pending database migrations (a second run changes nothing).
    #[command(after_long_help = EXIT_CODES)]
    Migrate,
    /// Print the effective configuration, secrets masked, and where each
    /// value came from.
    #[command(after_long_help = EXIT_CODES)]
    Config {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    #[command(flatten)]
    Ops(commands::Ops),
}

/// The clap command: the subcommands plus one global flag per setting.
pub fn command() -> clap::Command {
    let settings = SETTINGS.iter().map(|s| {
        Arg::new(s.env)
            .long(flag_name(s.env))
            .value_name("VALUE")
            .action(ArgAction::Set)
            .global(true)
            .help_heading("Settings (flag or environment)")
            .help(format!(
                "{} [env: {}] [default: {}]",
                s.help, s.env, s.default
            ))
    });
    Cli::command().args(settings)
}

/// Runs berth with `args` and returns the process exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let matches = match command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    Exit::Success
                }
                _ => Exit::Usage,
            }
            .into();
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return Exit::Usage.into();
        }
    };
    let flags: HashMap<&'static str, String> = SETTINGS
        .iter()
        .filter_map(|s| matches.get_one::<String>(s.env).map(|v| (s.env, v.clone())))
        .collect();
    let config = match Config::from_process(&flags) {
        Ok(config) => config,
        Err(errors) => {
            eprint!("berth: {errors}");
            return Exit::Usage.into();
        }
    };
    match cli.command {
        Command::Config { json } => match emit(&render_config(&config, json)) {
            Ok(()) => Exit::Success.into(),
            Err(e) => {
                eprintln!("berth: writing to stdout: {e}");
                Exit::Failure.into()
            }
        },
        Command::Migrate => block_on(migrate(&config)).into(),
        Command::Run { no_migrate } => {
            crate::telemetry::init(config.log_format, &config.log_filter);
            block_on(crate::serve::run(&config, !no_migrate)).into()
        }
        Command::Ops(ops) => block_on(commands::run(ops, &config)).into(),
    }
}

/// Writes `text` to stdout, locked and flushed; every command's output
/// goes through here. A reader that is gone (`berth plan --json | head`)
/// ends the output quietly: the write counts as done and the command's
/// exit code stands, as `head` users expect. Other write errors are
/// returned.
pub(crate) fn emit(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

fn block_on<F: std::future::Future<Output = Exit>>(future: F) -> Exit {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(future),
        Err(e) => {
            eprintln!("berth: cannot start the async runtime: {e}");
            Exit::Failure
        }
    }
}

fn render_config(config: &Config, json: bool) -> String {
    let mode = config.images.describe();
    if json {
        let mut map: serde_json::Map<String, serde_json::Value> = config
            .effective
            .iter()
            .map(|e| {
                let value = serde_json::json!({"value": e.value, "source": e.source.to_string()});
                (e.name.to_string(), value)
            })
            .collect();
        map.insert(
            "image_mode".into(),
            serde_json::json!({"value": mode, "source": "MOLECULE_IMAGE_REGISTRY"}),
        );
        return format!("{}\n", serde_json::Value::Object(map));
    }
    let width = config
        .effective
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for e in &config.effective {
        let value = match (e.name, e.value.is_empty()) {
            ("BERTH_WORKSPACE_ROOTS", true) => "(none: no host directory may be bound)",
            (_, true) => "(empty)",
            (_, false) => e.value.as_str(),
        };
        let _ = writeln!(out, "{:width$}  {value}  ({})", e.name, e.source);
    }
    let _ = writeln!(out, "\nimage mode: {mode}");
    for caution in config.cautions() {
        let _ = writeln!(out, "caution: {caution}");
    }
    out
}

/// The exit code a schema or connection error means (DESIGN §1.4): a
/// refused connection is configuration (64: a restart cannot help).
pub(crate) fn schema_exit(error: &SchemaError) -> Exit {
    if error.refused_user() {
        return Exit::Usage;
    }
    match error {
        SchemaError::TooOld { .. }
        | SchemaError::Missing
        | SchemaError::Behind(_)
        | SchemaError::Edited(_) => Exit::Schema,
        // A migration whose applied checksum differs (edited after it ran)
        // or one left failed: the schema is not what this berth knows, and
        // a restart cannot help.
        SchemaError::Migrate(
            sqlx::migrate::MigrateError::VersionMismatch(_) | sqlx::migrate::MigrateError::Dirty(_),
        ) => Exit::Schema,
        SchemaError::Unreachable(_) => Exit::Unavailable,
        SchemaError::Refused(_) | SchemaError::Privileges { .. } => Exit::Usage,
        SchemaError::Database(_) | SchemaError::Migrate(_) => Exit::Failure,
    }
}

async fn migrate(config: &Config) -> Exit {
    let pool = match desired::connect(&config.database_url, 2, Duration::from_secs(10)).await {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("berth: {} ({})", e, config.database_url);
            return schema_exit(&e);
        }
    };
    let result = desired::migrate(&pool).await;
    pool.close().await;
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("berth: {e}");
            return schema_exit(&e);
        }
    };
    let mut out = String::new();
    for (version, description) in &report.applied {
        let _ = writeln!(out, "applied {version} {description}");
    }
    if report.applied.is_empty() {
        out.push_str("schema up to date");
    } else {
        let _ = write!(out, "{} migration(s) applied", report.applied.len());
    }
    let _ = writeln!(
        out,
        " (berth schema version {}, database floor {})",
        desired::SCHEMA_VERSION,
        report.floor
    );
    match emit(&out) {
        Ok(()) => Exit::Success,
        Err(e) => {
            eprintln!("berth: writing to stdout: {e}");
            Exit::Failure
        }
    }
}
