//! `berth events <id|name>`: a workspace's audit trail, oldest first.
//!
//! The argument is a workspace id, its container name (`ws-<id12>`), or
//! its row name. A name that several rows share is ambiguous: the
//! candidates are listed and nothing else is shown. An id finds the trail
//! even after its row is gone.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::OpsError;
use super::table::Table;
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
    let mut events: Vec<EventView> = sqlx::query_as(
        "SELECT id, at, action, reason, detail, host, instance, epoch
           FROM workspace_events WHERE workspace_id = $1
          ORDER BY at DESC, id DESC LIMIT $2",
    )
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
    let id12 = key
        .strip_prefix("ws-")
        .filter(|s| s.len() == 12 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
    let candidates: Vec<Candidate> = sqlx::query_as(
        "SELECT id, name, host, runtime, status, created_at FROM workspaces
          WHERE name = $1 OR ($2::text IS NOT NULL AND left(id::text, 12) = $2)
          ORDER BY created_at, id",
    )
    .bind(key)
    .bind(id12.map(str::to_ascii_lowercase))
    .fetch_all(pool)
    .await?;
    match candidates.as_slice() {
        [] => Err(OpsError::Failed(format!(
            "no workspace has the id, container name or name {key:?}"
        ))),
        [only] => Ok((only.id, Some(only.name.clone()))),
        many => {
            let mut t = Table::new(&["ID", "NAME", "HOST", "RUNTIME", "STATUS", "CREATED"]);
            for c in many {
                t.push(vec![
                    c.id.to_string(),
                    c.name.clone(),
                    c.host.clone(),
                    c.runtime.clone(),
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
            e.host.clone(),
            e.action.clone(),
            e.reason.clone(),
            detail,
        ]);
    }
    out.push_str(&t.render());
    out
}
