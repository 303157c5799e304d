//! `berth refresh [runtime]`: ask every running berth to re-resolve the
//! moving tags (and local builds) its workspaces run from.
//!
//! The command notifies `berth_refresh`; each berth holding a host lease
//! resolves the images of its own rows and replaces the workspaces whose
//! image moved, in rollout waves. The notification reaches only instances
//! connected now, so the command says which hosts have a live holder.

use std::fmt::Write as _;

use serde::Serialize;
use sqlx::PgPool;

use super::OpsError;
use super::table::{Table, cell, shown};
use crate::config::Config;
use crate::desired::{self, REFRESH_CHANNEL};
use crate::model::{DesiredState, ImageSource};

/// What a refresh asked for and of whom.
#[derive(Clone, Debug, Serialize)]
pub struct RefreshView {
    /// The runtime, or `None` for every runtime.
    pub runtime: Option<String>,
    /// Workspaces whose image is a moving tag or a local build (judged
    /// with this command's configuration).
    pub workspaces: Vec<OnTag>,
    /// Hosts whose lease a berth renewed lately (within three lease TTLs,
    /// at least a minute): they act on the request.
    pub listening_hosts: Vec<String>,
}

/// A workspace a refresh may replace.
#[derive(Clone, Debug, Serialize)]
pub struct OnTag {
    pub id: uuid::Uuid,
    pub name: String,
    pub host: String,
    pub runtime: String,
    pub image: String,
    /// `tag` or `build`.
    pub source: &'static str,
}

/// Sends the refresh request and reports what it concerns.
pub async fn refresh(
    pool: &PgPool,
    config: &Config,
    runtime: Option<String>,
) -> Result<RefreshView, OpsError> {
    let catalogue = desired::load_catalogue(pool).await?;
    if let Some(r) = &runtime
        && catalogue.runtime(r).is_none()
    {
        return Err(OpsError::Usage(format!(
            "runtime {r:?} is not in the runtimes catalogue"
        )));
    }
    let hosts: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT host FROM workspaces WHERE desired_state <> 'removed' ORDER BY host",
    )
    .fetch_all(pool)
    .await?;
    let settings = config.plan_settings();
    let mut workspaces = Vec::new();
    for host in hosts {
        for row in desired::load_rows(pool, &host).await? {
            if row.desired_state == DesiredState::Removed
                || runtime.as_ref().is_some_and(|r| *r != row.runtime)
            {
                continue;
            }
            let Ok((image, source, _)) = crate::plan::choose_image(&row, &catalogue, &settings)
            else {
                continue;
            };
            if !source.follows(&image) {
                continue;
            }
            let source = match source {
                ImageSource::LocalBuild { .. } => "build",
                _ => "tag",
            };
            workspaces.push(OnTag {
                id: row.id.0,
                name: row.name.clone(),
                host: row.host.clone(),
                runtime: row.runtime.clone(),
                image: image.to_string(),
                source,
            });
        }
    }
    let listening_hosts: Vec<String> = sqlx::query_scalar(
        "SELECT host FROM host_leases
          WHERE renewed_at > now() - coalesce(ttl, make_interval(secs => $1)) ORDER BY host",
    )
    // A holder that records no term may run with another lease TTL than
    // this command's: a generous window names the hosts with a live holder.
    .bind((config.lease_ttl.as_secs_f64() * 3.0).max(60.0))
    .fetch_all(pool)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(REFRESH_CHANNEL)
        .bind(runtime.clone().unwrap_or_default())
        .execute(pool)
        .await?;
    Ok(RefreshView {
        runtime,
        workspaces,
        listening_hosts,
    })
}

impl RefreshView {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let what = self
            .runtime
            .as_deref()
            .map_or("every runtime".to_string(), shown);
        let _ = writeln!(
            out,
            "refresh {what}: {} workspace(s) run from a moving tag or a local build",
            self.workspaces.len()
        );
        if !self.workspaces.is_empty() {
            let mut t = Table::new(&["ID", "NAME", "HOST", "RUNTIME", "SOURCE", "IMAGE"]);
            for w in &self.workspaces {
                t.push(vec![
                    w.id.to_string(),
                    cell(&w.name),
                    cell(&w.host),
                    cell(&w.runtime),
                    w.source.to_string(),
                    shown(&w.image),
                ]);
            }
            out.push_str(&t.render());
        }
        if self.listening_hosts.is_empty() {
            let _ = writeln!(
                out,
                "no berth holds a host lease now: nothing is refreshed until one runs and is asked again"
            );
        } else {
            let _ = writeln!(
                out,
                "asked berth on {} to re-resolve; an image that moved rolls out in waves \
                 (`berth status` shows the rollout)",
                self.listening_hosts.join(", ")
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_text_is_escaped_and_a_long_name_cut_so_it_neither_paints_nor_breaks_lines() {
        let view = RefreshView {
            runtime: Some("agent".into()),
            workspaces: vec![OnTag {
                id: uuid::Uuid::nil(),
                name: format!("esc\u{1b}[31mRED\nnl{}", "L".repeat(10_000)),
                host: "other\u{1b}[2Jhost".into(),
                runtime: "agent".into(),
                image: "reg/agent:latest\u{7}".into(),
                source: "tag",
            }],
            listening_hosts: vec!["h1".into()],
        };
        let out = view.render();
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out}");
        assert_eq!(out.lines().count(), 4, "{out}");
        assert!(out.contains(r#""other\u{1b}[2Jhost""#), "{out}");
        assert!(out.lines().all(|l| l.chars().count() < 300), "{out}");
    }
}
