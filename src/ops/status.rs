//! `berth status`: per workspace, desired against observed as the rows
//! show them. It reads the database only (any host's rows), never a
//! secret column.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::OpsError;
use super::table::{Table, age, cell, short_digest, shown};
use crate::model::{DesiredState, Status};

/// The filters of `berth status`; `None` matches everything.
#[derive(Clone, Debug, Default)]
pub struct StatusFilter {
    pub host: Option<String>,
    pub status: Option<String>,
    pub runtime: Option<String>,
}

/// One workspace as `berth status` shows it.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct StatusView {
    pub id: uuid::Uuid,
    pub name: String,
    pub host: String,
    pub runtime: String,
    pub ring: String,
    pub desired_state: String,
    pub paused: bool,
    pub status: Option<String>,
    pub status_reason: Option<String>,
    pub last_error: Option<String>,
    /// The digest the running image was pulled by.
    pub runtime_image_digest: Option<String>,
    /// The pin the row's runtime and ring resolve to (the ring's, else
    /// stable's); `None` is the moving tag.
    pub wanted_digest: Option<String>,
    /// The row's explicit image, which overrides any pin.
    pub image: Option<String>,
    pub container_id: Option<String>,
    pub url: Option<String>,
    pub generation: i64,
    pub observed_generation: Option<i64>,
    pub status_changed_at: Option<DateTime<Utc>>,
    pub restart_count: i32,
    /// The image rollout the workspace is part of now, as berth wrote it
    /// (track, target, state, wave, counts); `None` outside a rollout.
    pub rollout: Option<serde_json::Value>,
}

/// A row as `berth status --json` shows it: its columns, and whether
/// berth still has work to do for it (the table's `*`).
#[derive(Debug, Serialize)]
pub struct StatusJson<'a> {
    #[serde(flatten)]
    pub row: &'a StatusView,
    pub pending: bool,
}

impl<'a> From<&'a StatusView> for StatusJson<'a> {
    fn from(row: &'a StatusView) -> Self {
        StatusJson {
            row,
            pending: row.pending(),
        }
    }
}

impl StatusView {
    /// Whether berth still has work to do for the row: its latest desired
    /// change not yet observed (GEN behind), its status short of the
    /// desired state, an image rollout replacing it
    /// or waiting to, or a pin wanting another digest than the one it
    /// runs. A paused row has none: berth does not act on it, nor write
    /// its observed generation, until it is unpaused.
    pub fn pending(&self) -> bool {
        !self.paused
            && (self.observed_generation != Some(self.generation)
                || !self.reached()
                || self.in_rollout()
                || self.digest_behind())
    }

    /// The status shows the desired state reached (what the
    /// `unconverged_workspaces` metric counts by, too): a row stuck
    /// provisioning, degraded, failed or rolled back is still pending.
    fn reached(&self) -> bool {
        let Ok(desired) = self.desired_state.parse::<DesiredState>() else {
            return false;
        };
        let status = self.status.as_deref().and_then(|s| s.parse().ok());
        let reason = self.status_reason.as_deref().and_then(|r| r.parse().ok());
        crate::model::reached(desired, status, reason)
    }

    /// A rollout replaces it now or holds it for its wave (a halted one
    /// changes nothing more).
    fn in_rollout(&self) -> bool {
        self.rollout
            .as_ref()
            .and_then(|r| r["state"].as_str())
            .is_some_and(|s| matches!(s, "replacing" | "waiting"))
    }

    /// A running row's container runs another digest than its pin wants
    /// (the WANTED column). Only a pulled image has a digest to compare:
    /// a row on its own `image`, on the moving tag or on a local build
    /// (a host without a registry keeps its builds) is never behind here,
    /// and neither is a stopped row, which takes the pin when it starts.
    fn digest_behind(&self) -> bool {
        self.desired_state == "running"
            && self.image.is_none()
            && matches!(
                (&self.wanted_digest, &self.runtime_image_digest),
                (Some(wanted), Some(running)) if wanted != running
            )
    }
}

/// The rows matching `filter`, by host, name and id. An unknown status is
/// a usage error naming the closed table.
pub async fn status(pool: &PgPool, filter: &StatusFilter) -> Result<Vec<StatusView>, OpsError> {
    if let Some(s) = &filter.status
        && s.parse::<Status>().is_err()
    {
        let known: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        return Err(OpsError::Usage(format!(
            "--status {s:?} is not a status; one of: {}",
            known.join(", ")
        )));
    }
    let rows = sqlx::query_as(concat!(
        "SELECT w.id, w.name, w.host, w.runtime, w.ring, w.desired_state, w.paused, w.status,
                w.status_reason, w.last_error, w.runtime_image_digest,
                coalesce(p.digest, s.digest) AS wanted_digest, w.image, w.container_id, w.url,
                w.generation, w.observed_generation, ",
        crate::desired::readable_time!("w.status_changed_at" AS "status_changed_at"),
        ", w.restart_count, w.rollout
           FROM workspaces w
           LEFT JOIN runtime_image_pins p ON p.template_name = w.runtime AND p.ring = w.ring
           LEFT JOIN runtime_image_pins s ON s.template_name = w.runtime AND s.ring = 'stable'
          WHERE ($1::text IS NULL OR w.host = $1)
            AND ($2::text IS NULL OR w.status = $2)
            AND ($3::text IS NULL OR w.runtime = $3)
          ORDER BY w.host, w.name, w.id",
    ))
    .bind(&filter.host)
    .bind(&filter.status)
    .bind(&filter.runtime)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// A host's lease as the database holds it: who last held it and how
/// long ago (by the database's clock) it was renewed.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct HostLease {
    pub host: String,
    pub holder: String,
    /// `None`: its holder released it (a clean stop).
    pub renewed_secs_ago: Option<f64>,
    /// The term its holder runs with; `None` from a berth that does not
    /// record it.
    pub ttl_secs: Option<f64>,
}

/// The leases of `hosts` (those without a lease row are absent).
pub async fn host_leases(pool: &PgPool, hosts: &[String]) -> Result<Vec<HostLease>, OpsError> {
    let leases = sqlx::query_as(
        "SELECT host, holder,
                CASE WHEN isfinite(renewed_at)
                     THEN extract(epoch FROM now() - renewed_at)::float8 END AS renewed_secs_ago,
                extract(epoch FROM ttl)::float8 AS ttl_secs
           FROM host_leases WHERE host = ANY($1) ORDER BY host",
    )
    .bind(hosts)
    .fetch_all(pool)
    .await?;
    Ok(leases)
}

/// Whether a berth holds a host of the rows shown, as `--json` gives it
/// and the lines under the table say it.
#[derive(Clone, Debug, Serialize)]
pub struct HostView {
    pub host: String,
    /// A berth renewed the lease within its term.
    pub held: bool,
    /// Who holds or last held it; `None`: no berth ever did.
    pub holder: Option<String>,
    /// `None`: never held, or released by a clean stop.
    pub renewed_secs_ago: Option<f64>,
    /// The lease's term: its holder's, else this command's
    /// `BERTH_LEASE_TTL`.
    pub term_secs: f64,
    /// Its holder stopped and released it.
    pub released: bool,
}

/// The hosts of `rows`, each with its lease judged: a lease not renewed
/// within its holder's term has lapsed; `ttl` (this command's
/// `BERTH_LEASE_TTL`) stands in for a holder that records none.
pub fn host_views(
    rows: &[StatusView],
    leases: &[HostLease],
    ttl: std::time::Duration,
) -> Vec<HostView> {
    let hosts: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.host.as_str()).collect();
    hosts
        .into_iter()
        .map(|host| {
            let lease = leases.iter().find(|l| l.host == host);
            let term_secs = lease.and_then(|l| l.ttl_secs).unwrap_or(ttl.as_secs_f64());
            let ago = lease.and_then(|l| l.renewed_secs_ago);
            HostView {
                host: host.to_string(),
                held: ago.is_some_and(|a| a <= term_secs),
                holder: lease.map(|l| l.holder.clone()),
                renewed_secs_ago: ago,
                term_secs,
                released: lease.is_some() && ago.is_none(),
            }
        })
        .collect()
}

/// One line per host: whether a berth holds it, so a table of rows frozen
/// in `provisioning` is not read as work in progress when no berth runs.
pub fn render_hosts(hosts: &[HostView]) -> String {
    let mut out = String::new();
    for v in hosts {
        let host = shown(&v.host);
        let term = v.term_secs;
        let line = match (&v.holder, v.renewed_secs_ago) {
            (Some(holder), Some(ago)) if v.held => format!(
                "host {host}: held by berth {} (lease renewed {:.0}s ago)",
                shown(holder),
                ago.max(0.0)
            ),
            (Some(holder), Some(ago)) => format!(
                "host {host}: NO berth holds it (the lease of {} was last renewed {ago:.0}s ago, past its {term:.0}s term): its rows are not being reconciled",
                shown(holder)
            ),
            (Some(holder), None) => format!(
                "host {host}: NO berth holds it ({} stopped and released it): its rows are not being reconciled",
                shown(holder)
            ),
            // No berth can take a name BERTH_HOST_ID refuses: the rows
            // name a host that cannot be.
            (None, _) if crate::config::host_id(&v.host).is_err() => format!(
                "host {host}: no berth can hold it (a BERTH_HOST_ID is 1-63 letters, digits, '.', '_' or '-'): its rows are never reconciled; set their host to a host berth runs on"
            ),
            (None, _) => format!(
                "host {host}: NO berth has ever held it: its rows are not being reconciled (is BERTH_HOST_ID set to {:?} where berth runs?)",
                v.host
            ),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A pin berth wrote back (or removed) when a rollout halted.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct RecentHalt {
    pub template_name: String,
    pub ring: String,
    pub old_digest: Option<String>,
    pub new_digest: Option<String>,
    pub note: Option<String>,
    pub secs_ago: f64,
}

/// Halts of the last day for `runtimes`, newest first: a halted canary is
/// back on its old image, plain `online`, and the halt shows only here.
/// A halt stops showing once a later edit of the same pin rolled out fully
/// (`stable_at`): the ring has moved on, and the halt stays in
/// `runtime_image_pin_history`.
pub async fn recent_halts(pool: &PgPool, runtimes: &[String]) -> Result<Vec<RecentHalt>, OpsError> {
    let halts = sqlx::query_as(
        "SELECT h.template_name, h.ring, h.old_digest, h.new_digest, h.note,
                CASE WHEN isfinite(h.at) THEN extract(epoch FROM now() - h.at)::float8
                     ELSE '-infinity'::float8 END AS secs_ago
           FROM runtime_image_pin_history h
          WHERE h.halt AND h.at > now() - interval '1 day'
            AND h.template_name = ANY($1)
            AND NOT EXISTS (SELECT 1 FROM runtime_image_pin_history later
                             WHERE later.template_name = h.template_name
                               AND later.ring = h.ring
                               AND later.id > h.id
                               AND later.stable_at IS NOT NULL)
          ORDER BY h.id DESC",
    )
    .bind(runtimes)
    .fetch_all(pool)
    .await?;
    Ok(halts)
}

/// One line per recent halt.
pub fn render_halts(halts: &[RecentHalt]) -> String {
    let mut out = String::new();
    for h in halts {
        let ago = super::table::age_of_secs(h.secs_ago);
        // A halted pin that was new is removed: the ring follows what it
        // followed before.
        let back = match h.new_digest.as_deref() {
            Some(d) => format!("back to {}", short_digest(Some(d))),
            None => "pin removed, the ring follows what it did before".to_string(),
        };
        let _ = std::fmt::Write::write_fmt(
            &mut out,
            format_args!(
                "pin {}/{}: rollout onto {} halted {ago} ago, {back} ({})\n",
                h.template_name,
                shown(&h.ring),
                short_digest(h.old_digest.as_deref()),
                shown(h.note.as_deref().unwrap_or("no note"))
            ),
        );
    }
    out
}

/// A rollout in a few words: `replacing w1 (3 done)`, `waiting w0`,
/// `halted`; `-` outside one.
fn rollout_cell(rollout: Option<&serde_json::Value>) -> String {
    let Some(r) = rollout else {
        return "-".into();
    };
    let state = r["state"].as_str().unwrap_or("?");
    if state == "halted" {
        return format!("halted ({} failed)", r["failed"].as_u64().unwrap_or(0));
    }
    format!(
        "{state} w{} ({} done)",
        r["wave"].as_u64().unwrap_or(0),
        r["done"].as_u64().unwrap_or(0)
    )
}

/// The table: one line per workspace; `last_error` last.
pub fn render_status(rows: &[StatusView], now: DateTime<Utc>) -> String {
    if rows.is_empty() {
        return "no workspaces match\n".into();
    }
    let mut t = Table::new(&[
        "WORKSPACE",
        "NAME",
        "HOST",
        "RUNTIME",
        "DESIRED",
        "STATUS",
        "RUNNING",
        "WANTED",
        "CHANGED",
        "RESTARTS",
        "GEN",
        "ROLLOUT",
        "LAST ERROR",
    ]);
    for r in rows {
        let id = crate::model::WorkspaceId(r.id);
        let desired = if r.paused {
            format!("{} (paused)", r.desired_state)
        } else {
            r.desired_state.clone()
        };
        let status = match (&r.status, &r.status_reason) {
            (None, _) => "-".to_string(),
            (Some(s), None) => s.clone(),
            (Some(s), Some(reason)) => format!("{s}/{reason}"),
        };
        // A removed row wants no image.
        let wanted = match (&r.image, &r.wanted_digest) {
            _ if r.desired_state == "removed" => "-".to_string(),
            (Some(_), _) => "(row image)".to_string(),
            (None, Some(d)) => short_digest(Some(d)),
            (None, None) => "(tag)".to_string(),
        };
        let generation = format!(
            "{}/{}{}",
            r.observed_generation.unwrap_or(0),
            r.generation,
            if r.pending() { " *" } else { "" }
        );
        let error = r.last_error.as_deref().unwrap_or("");
        let error: String = error
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(80)
            .collect();
        t.push(vec![
            id.container_name(),
            cell(&r.name),
            cell(&r.host),
            cell(&r.runtime),
            desired,
            status,
            short_digest(r.runtime_image_digest.as_deref()),
            wanted,
            age(r.status_changed_at, now),
            r.restart_count.to_string(),
            generation,
            rollout_cell(r.rollout.as_ref()),
            shown(&error),
        ]);
    }
    let pending = rows.iter().filter(|r| r.pending()).count();
    let paused = rows.iter().filter(|r| r.paused).count();
    let paused = if paused > 0 {
        format!("; {paused} paused (berth does not act on them)")
    } else {
        String::new()
    };
    let mut out = t.render();
    out.push_str(&format!(
        "{} workspace(s); {pending} not yet converged (* = pending: GEN observed/desired \
         behind, the status short of the desired state, or an image rollout not done){paused}\n",
        rows.len()
    ));
    out
}

#[cfg(test)]
mod rollout_tests;
