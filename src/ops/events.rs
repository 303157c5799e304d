//! `berth events <id|name>`: a workspace's audit trail, oldest first.
//!
//! The argument is a workspace id, its container name (`ws-<id12>`), or
//! its row name. A name that several rows share is ambiguous: the
//! candidates are listed and nothing else is shown. An id finds the trail
//! even after its row is gone; so does a container name no row has, by
//! the ids its events carry.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::OpsError;
use super::table::{Table, cell, shown};
use crate::model::WorkspaceId;

/// One entry of `workspace_events`.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct EventView {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub action: String,
    pub reason: String,
    pub detail: serde_json::Value,
    pub host: String,
    pub instance: String,
    pub epoch: i64,
}

/// A workspace's trail.
#[derive(Clone, Debug, Serialize)]
pub struct EventsView {
    pub workspace: uuid::Uuid,
    /// The row's name; `None` when the row is gone.
    pub name: Option<String>,
    pub events: Vec<EventView>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
struct Candidate {
    id: uuid::Uuid,
    name: String,
    host: String,
    runtime: String,
    status: Option<String>,
    created_at: DateTime<Utc>,
}

/// The last `limit` events of the workspace `key` names, oldest first. An
/// id with neither a row nor an event is an error, as an unknown name is,
/// so a script's typo does not pass for a quiet workspace.
pub async fn events(pool: &PgPool, key: &str, limit: i64) -> Result<EventsView, OpsError> {
    let (workspace, name) = resolve(pool, key).await?;
    let mut events: Vec<EventView> = sqlx::query_as(concat!(
        "SELECT id, ",
        crate::desired::readable_time!("at"),
        ", action, reason, detail, host, instance, epoch
               FROM workspace_events WHERE workspace_id = $1
              ORDER BY at DESC, id DESC LIMIT $2"
    ))
    .bind(workspace)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    if name.is_none() && events.is_empty() {
        return Err(OpsError::Failed(format!(
            "no workspace row has the id {workspace} and no events name it (a mistyped id, \
             or a deleted workspace whose events were all older than \
             BERTH_EVENTS_RETENTION and pruned)"
        )));
    }
    events.reverse();
    Ok(EventsView {
        workspace,
        name,
        events,
    })
}

async fn resolve(pool: &PgPool, key: &str) -> Result<(uuid::Uuid, Option<String>), OpsError> {
    if let Ok(id) = key.parse::<WorkspaceId>() {
        let name: Option<String> = sqlx::query_scalar("SELECT name FROM workspaces WHERE id = $1")
            .bind(id.0)
            .fetch_optional(pool)
            .await?;
        return Ok((id.0, name));
    }
    // The container name, or the 12 characters of the id it is made of
    // (what `berth status` shows).
    let id12 = Some(key.strip_prefix("ws-").unwrap_or(key))
        .filter(|s| s.len() == 12 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
    let candidates: Vec<Candidate> = sqlx::query_as(concat!(
        "SELECT id, name, host, runtime, status, ",
        crate::desired::readable_time!("created_at"),
        " FROM workspaces
              WHERE name = $1 OR ($2::text IS NOT NULL AND left(id::text, 12) = $2)
              ORDER BY created_at, id"
    ))
    .bind(key)
    .bind(id12.map(str::to_ascii_lowercase))
    .fetch_all(pool)
    .await?;
    match candidates.as_slice() {
        [] => match id12 {
            Some(id12) => resolve_gone(pool, key, &id12.to_ascii_lowercase()).await,
            None => Err(OpsError::Failed(format!(
                "no workspace has the id, container name or name {key:?}"
            ))),
        },
        [only] => Ok((only.id, Some(only.name.clone()))),
        many => {
            let mut t = Table::new(&["ID", "NAME", "HOST", "RUNTIME", "STATUS", "CREATED"]);
            for c in many {
                t.push(vec![
                    c.id.to_string(),
                    cell(&c.name),
                    cell(&c.host),
                    cell(&c.runtime),
                    c.status.clone().unwrap_or_else(|| "-".into()),
                    c.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                ]);
            }
            Err(OpsError::Usage(format!(
                "{key:?} names {} workspaces; name one by its id:\n{}",
                many.len(),
                t.render().trim_end()
            )))
        }
    }
}

/// A workspace gone from the table whose trail remains.
#[derive(Clone, Debug, sqlx::FromRow)]
struct GoneCandidate {
    workspace_id: uuid::Uuid,
    host: String,
    events: i64,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
}

/// The workspace a container name `ws-<id12>` names when no row has it:
/// the one whose trail has ids starting with `id12` (what `docker ps`
/// shows of an orphan whose row was deleted). Several are listed, as an
/// ambiguous name is.
async fn resolve_gone(
    pool: &PgPool,
    key: &str,
    id12: &str,
) -> Result<(uuid::Uuid, Option<String>), OpsError> {
    let not_found = || {
        OpsError::Failed(format!(
            "no workspace row has the container name {key:?}, and no events name a workspace \
             whose id starts with {id12:?} (a mistyped name, or a deleted workspace whose \
             events were all older than BERTH_EVENTS_RETENTION and pruned)"
        ))
    };
    // The ids starting with `id12` are a range of uuids (the text form
    // orders as the bytes do), which the index on workspace_id serves.
    let bound = |fill: char| {
        let rest = format!(
            "{fill}-{0}-{0}-{1}",
            fill.to_string().repeat(4),
            fill.to_string().repeat(12)
        );
        uuid::Uuid::parse_str(&format!("{id12}{rest}"))
    };
    let (Ok(low), Ok(high)) = (bound('0'), bound('f')) else {
        return Err(not_found());
    };
    let gone: Vec<GoneCandidate> = sqlx::query_as(concat!(
        "SELECT workspace_id, (array_agg(host ORDER BY at DESC, id DESC))[1] AS host,
                    count(*) AS events, ",
        crate::desired::readable_time!("min(at)" AS "first"),
        ", ",
        crate::desired::readable_time!("max(at)" AS "last"),
        " FROM workspace_events WHERE workspace_id BETWEEN $1 AND $2
              GROUP BY workspace_id ORDER BY min(at), workspace_id"
    ))
    .bind(low)
    .bind(high)
    .fetch_all(pool)
    .await?;
    match gone.as_slice() {
        [] => Err(not_found()),
        [only] => Ok((only.workspace_id, None)),
        many => {
            let mut t = Table::new(&["ID", "HOST", "EVENTS", "FIRST", "LAST"]);
            for c in many {
                t.push(vec![
                    c.workspace_id.to_string(),
                    cell(&c.host),
                    c.events.to_string(),
                    c.first.format("%Y-%m-%d %H:%M:%S").to_string(),
                    c.last.format("%Y-%m-%d %H:%M:%S").to_string(),
                ]);
            }
            Err(OpsError::Usage(format!(
                "{key:?} names no row, and the trails of {} deleted workspaces share it; \
                 name one by its id:\n{}",
                many.len(),
                t.render().trim_end()
            )))
        }
    }
}

/// The trail as a table, oldest first.
pub fn render_events(view: &EventsView) -> String {
    let mut out = String::new();
    // Without a row, the events show that one existed.
    let name = view
        .name
        .as_ref()
        .map_or("(row gone)".into(), |n| format!("{n:?}"));
    let _ = writeln!(
        out,
        "{} {} {}",
        WorkspaceId(view.workspace).container_name(),
        view.workspace,
        name
    );
    if view.events.is_empty() {
        let _ = writeln!(
            out,
            "no events recorded for {name} (any older than BERTH_EVENTS_RETENTION \
             would have been pruned)"
        );
        return out;
    }
    let mut t = Table::new(&["AT", "HOST", "ACTION", "REASON", "DETAIL"]);
    for e in &view.events {
        let detail = match &e.detail {
            serde_json::Value::Object(m) if m.is_empty() => String::new(),
            other => other.to_string(),
        };
        t.push(vec![
            e.at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            cell(&e.host),
            e.action.clone(),
            shown(&e.reason),
            detail,
        ]);
    }
    out.push_str(&t.render());
    out
}
