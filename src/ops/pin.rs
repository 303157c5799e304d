//! `berth pin` and `berth rollback`: set a runtime's digest for a ring,
//! after showing the workspaces the change will touch.
//!
//! A change is prepared (read only), shown, confirmed, then applied with a
//! compare-and-set on the digest it was prepared against, so a pin that
//! changed in between is not overwritten. The history trigger records
//! every change; a rollback's default target comes from that history.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::OpsError;
use super::table::{Table, cell, short_digest};
use crate::desired;
use crate::model::{Digest, WorkspaceId};

/// A pin to set.
#[derive(Clone, Debug)]
pub struct PinRequest {
    pub runtime: String,
    pub ring: String,
    pub digest: Digest,
    pub note: Option<String>,
    /// `updated_by`; the database role when absent.
    pub by: Option<String>,
}

/// A change, prepared and not yet applied.
#[derive(Clone, Debug, Serialize)]
pub struct PinChange {
    /// `pin` or `rollback`.
    pub kind: &'static str,
    pub runtime: String,
    pub ring: String,
    /// The digest pinned now; `None`: the ring has no pin of its own.
    pub from: Option<String>,
    /// With no pin of its own, what the ring follows now: stable's pin
    /// (for another ring) or the runtime's moving tag.
    pub follows: Option<Follows>,
    pub to: String,
    pub note: Option<String>,
    pub by: Option<String>,
    /// For a rollback from history: the history entry of the target, and
    /// when a rollout of it completed (`None`: never marked stable).
    pub history_id: Option<i64>,
    pub stable_at: Option<DateTime<Utc>>,
    /// The history entry the change wrote, once applied.
    pub recorded_as: Option<i64>,
    /// Every workspace whose image the pin decides; `replaced` tells those
    /// the change replaces now from those that take it when their
    /// container is made.
    pub touched: Vec<Touched>,
    /// Said when hosts in local-build mode do not follow this pin (the
    /// runtime's `image_repository` names no registry): their workspaces
    /// among `touched` keep their local build.
    pub local_build_note: Option<String>,
    /// With the digest pinned already: the hosts whose rows show a rollout
    /// onto it halted there. Pinning it again is then a change: berth
    /// starts that rollout afresh, at the canary.
    pub halted_on: Vec<String>,
    pub applied: bool,
}

/// A workspace whose image the pin decides.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Touched {
    pub id: uuid::Uuid,
    pub name: String,
    pub host: String,
    pub ring: String,
    pub desired_state: String,
    pub paused: bool,
    pub status: Option<String>,
    pub status_reason: Option<String>,
    pub runtime_image_digest: Option<String>,
    /// Whether the change replaces its container now: berth acts on the
    /// row (not paused), runs it (not stopped), has a container to
    /// replace, can build its spec (not failed/invalid_spec or
    /// tier_not_allowed, which leave the container as it is), and the
    /// container does not already run the new digest.
    pub replaced: bool,
    /// Why the change does not replace it now (`None` when it does):
    /// `already runs it`, `paused`, `stopped`, `spec berth cannot build`
    /// or `no container yet`. Each but the first takes the new digest when
    /// berth next makes its container or acts on it again.
    pub not_replaced: Option<String>,
}

impl PinChange {
    /// Whether applying it changes anything.
    pub fn is_noop(&self) -> bool {
        self.from.as_deref() == Some(self.to.as_str()) && self.halted_on.is_empty()
    }

    /// What the operator confirms.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let unpinned;
        let from = match (&self.from, &self.follows) {
            (Some(from), _) => from.as_str(),
            (None, follows) => {
                unpinned = format!(
                    "(no pin: follows {})",
                    follows.as_ref().unwrap_or(&Follows::MovingTag)
                );
                unpinned.as_str()
            }
        };
        let _ = writeln!(
            out,
            "{} {}/{}: {} → {}",
            self.kind,
            super::table::shown(&self.runtime),
            super::table::shown(&self.ring),
            from,
            self.to
        );
        if let Some(id) = self.history_id {
            let stable = self
                .stable_at
                .map_or("never marked stable".to_string(), |at| {
                    format!("stable since {}", at.format("%Y-%m-%d %H:%M:%S"))
                });
            let _ = writeln!(out, "  target: pin history entry {id}, {stable}");
        }
        for (what, value) in [("note", &self.note), ("by", &self.by)] {
            if let Some(v) = value {
                // What the operator typed is shown escaped, as text from
                // the rows is: a control sequence does not paint the
                // terminal the change is confirmed on.
                let _ = writeln!(out, "  {what}: {}", super::table::shown(v));
            }
        }
        if self.is_noop() {
            let _ = writeln!(out, "already pinned: nothing to change");
            return out;
        }
        if !self.halted_on.is_empty() {
            let hosts: Vec<String> = self
                .halted_on
                .iter()
                .map(|h| super::table::shown(h))
                .collect();
            let _ = writeln!(
                out,
                "pinned already, and its rollout halted on host(s) {}: pinning it again starts that rollout afresh, at the canary",
                hosts.join(", ")
            );
        }
        if self.touched.is_empty() {
            out.push_str("no workspace runs this runtime and ring now\n");
            return out;
        }
        let (replaced, waiting): (Vec<&Touched>, Vec<&Touched>) =
            self.touched.iter().partition(|w| w.replaced);
        if replaced.is_empty() {
            out.push_str("this change replaces no workspace now\n");
        } else {
            let _ = writeln!(
                out,
                "{} workspace(s) will be replaced onto the new digest:",
                replaced.len()
            );
            out.push_str(&touched_table(&replaced, false));
        }
        if !waiting.is_empty() {
            let _ = writeln!(
                out,
                "{} workspace(s) not replaced now, WHY saying why (a paused or stopped one takes \
                 the new digest when berth runs it again; one without a container, or whose spec \
                 berth cannot build, when berth makes its container):",
                waiting.len()
            );
            out.push_str(&touched_table(&waiting, true));
        }
        if let Some(note) = &self.local_build_note {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }
}

/// The workspaces of one group; `why` adds the reason a workspace is not
/// replaced now.
fn touched_table(rows: &[&Touched], why: bool) -> String {
    let mut header = vec![
        "WORKSPACE",
        "NAME",
        "HOST",
        "RING",
        "DESIRED",
        "STATUS",
        "RUNNING",
    ];
    if why {
        header.push("WHY");
    }
    let mut t = Table::new(&header);
    for w in rows {
        let status = match (&w.status, &w.status_reason) {
            (None, _) => "-".to_string(),
            (Some(s), None) => s.clone(),
            (Some(s), Some(r)) => format!("{s}/{r}"),
        };
        let desired = if w.paused {
            format!("{} (paused)", w.desired_state)
        } else {
            w.desired_state.clone()
        };
        let mut row = vec![
            WorkspaceId(w.id).container_name(),
            cell(&w.name),
            cell(&w.host),
            cell(&w.ring),
            desired,
            status,
            short_digest(w.runtime_image_digest.as_deref()),
        ];
        if why {
            row.push(w.not_replaced.clone().unwrap_or_default());
        }
        t.push(row);
    }
    t.render()
}

/// The note for a runtime whose pins hosts in local-build mode ignore.
async fn local_build_note(pool: &PgPool, runtime: &str) -> Result<Option<String>, OpsError> {
    let repository: Option<String> =
        sqlx::query_scalar("SELECT image_repository FROM runtimes WHERE name = $1")
            .bind(runtime)
            .fetch_optional(pool)
            .await?;
    Ok(repository
        .filter(|r| !crate::plan::names_registry(r))
        .map(|r| {
            format!(
                "hosts without MOLECULE_IMAGE_REGISTRY build {runtime} locally and do not follow \
                 this pin (its image_repository {r:?} names no registry): their workspaces keep \
                 their local build"
            )
        }))
}

/// A ring a pin may name: not empty, without whitespace or control
/// characters (a row's ring is a plain word; a pin under `""` or
/// `"canary "` would match no row and read as one that does).
fn check_ring(ring: &str) -> Result<(), OpsError> {
    if ring.is_empty() || ring.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(OpsError::Usage(format!(
            "ring {ring:?}: a ring is a word without spaces or control characters (e.g. canary)"
        )));
    }
    Ok(())
}

async fn check_runtime(pool: &PgPool, runtime: &str) -> Result<(), OpsError> {
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM runtimes ORDER BY name")
        .fetch_all(pool)
        .await?;
    if names.iter().any(|n| n == runtime) {
        return Ok(());
    }
    Err(OpsError::Usage(format!(
        "no runtime {runtime:?} in the catalogue; known: {}",
        names.join(", ")
    )))
}

/// What a ring without a pin of its own follows; in `--json` an object
/// tagged by `kind` (`stable_pin` with its `digest`, or `moving_tag`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Follows {
    StablePin { digest: String },
    MovingTag,
}

impl std::fmt::Display for Follows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Follows::StablePin { digest } => {
                write!(f, "stable's pin {}", short_digest(Some(digest)))
            }
            Follows::MovingTag => f.write_str("the moving tag"),
        }
    }
}

/// What a ring without a pin of its own follows: stable's pin when
/// another ring and stable is pinned, else the runtime's moving tag.
async fn follows(pool: &PgPool, runtime: &str, ring: &str) -> Result<Follows, OpsError> {
    let stable = if ring == "stable" {
        None
    } else {
        current(pool, runtime, "stable").await?
    };
    Ok(match stable {
        Some(digest) => Follows::StablePin { digest },
        None => Follows::MovingTag,
    })
}

async fn current(pool: &PgPool, runtime: &str, ring: &str) -> Result<Option<String>, OpsError> {
    Ok(sqlx::query_scalar(
        "SELECT digest FROM runtime_image_pins WHERE template_name = $1 AND ring = $2",
    )
    .bind(runtime)
    .bind(ring)
    .fetch_optional(pool)
    .await?)
}

/// The rows whose image the pin decides: this runtime, no explicit image,
/// not removed, and on this ring (or, for `stable`, on a ring without a
/// pin of its own); each with why setting `to` does not replace it now.
///
/// A container runs the new digest already only when the row follows a
/// pin now (its ring's or stable's): a container made from the moving tag
/// carries the tag in its image reference, and the pinned reference
/// replaces it even on the same digest.
async fn touched(
    pool: &PgPool,
    runtime: &str,
    ring: &str,
    to: &str,
) -> Result<Vec<Touched>, OpsError> {
    Ok(sqlx::query_as(
        "SELECT t.*, t.not_replaced IS NULL AS replaced FROM (
           SELECT w.id, w.name, w.host, w.ring, w.desired_state, w.paused, w.status,
                  w.status_reason, w.runtime_image_digest,
                  CASE
                    WHEN w.container_id IS NOT NULL AND w.runtime_image_digest = $3
                         AND EXISTS (SELECT 1 FROM runtime_image_pins p
                                      WHERE p.template_name = w.runtime
                                        AND p.ring IN (w.ring, 'stable'))
                      THEN 'already runs it'
                    WHEN w.paused THEN 'paused'
                    WHEN w.desired_state = 'stopped' THEN 'stopped'
                    WHEN coalesce(w.status = 'failed'
                           AND w.status_reason IN ('invalid_spec', 'tier_not_allowed'), false)
                      THEN 'spec berth cannot build'
                    WHEN w.container_id IS NULL THEN 'no container yet'
                  END AS not_replaced
             FROM workspaces w
            WHERE w.runtime = $1 AND w.image IS NULL AND w.desired_state <> 'removed'
              AND (w.ring = $2 OR ($2 = 'stable' AND NOT EXISTS (
                     SELECT 1 FROM runtime_image_pins p
                      WHERE p.template_name = w.runtime AND p.ring = w.ring)))
         ) t
         ORDER BY t.host, t.name, t.id",
    )
    .bind(runtime)
    .bind(ring)
    .bind(to)
    .fetch_all(pool)
    .await?)
}

/// The hosts whose rows show a rollout of (`runtime`, `ring`)'s pin onto
/// `digest` halted.
async fn halted_on(
    pool: &PgPool,
    runtime: &str,
    ring: &str,
    digest: &str,
) -> Result<Vec<String>, OpsError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT host FROM workspaces
          WHERE runtime = $1 AND rollout->>'state' = 'halted' AND rollout->>'track' = 'pin'
            AND rollout->>'ring' = $2 AND rollout->>'to' = $3
          ORDER BY host",
    )
    .bind(runtime)
    .bind(ring)
    .bind(digest)
    .fetch_all(pool)
    .await?)
}

/// Prepares `berth pin`.
pub async fn prepare_pin(pool: &PgPool, req: PinRequest) -> Result<PinChange, OpsError> {
    check_ring(&req.ring)?;
    check_runtime(pool, &req.runtime).await?;
    let from = current(pool, &req.runtime, &req.ring).await?;
    let halted_on = match &from {
        Some(f) if f == req.digest.as_str() => halted_on(pool, &req.runtime, &req.ring, f).await?,
        _ => Vec::new(),
    };
    let follows = match from {
        Some(_) => None,
        None => Some(follows(pool, &req.runtime, &req.ring).await?),
    };
    Ok(PinChange {
        kind: "pin",
        from,
        follows,
        to: req.digest.as_str().to_string(),
        touched: touched(pool, &req.runtime, &req.ring, req.digest.as_str()).await?,
        local_build_note: local_build_note(pool, &req.runtime).await?,
        halted_on,
        runtime: req.runtime,
        ring: req.ring,
        note: req.note,
        by: req.by,
        history_id: None,
        stable_at: None,
        recorded_as: None,
        applied: false,
    })
}

/// Prepares `berth rollback`: to `to`, or else to the previous digest in
/// the pin history: an entry older than the one that set the current
/// digest, with another digest, preferring the newest one marked stable.
pub async fn prepare_rollback(
    pool: &PgPool,
    runtime: &str,
    ring: &str,
    to: Option<Digest>,
    note: Option<String>,
    by: Option<String>,
) -> Result<PinChange, OpsError> {
    check_runtime(pool, runtime).await?;
    let Some(from) = current(pool, runtime, ring).await? else {
        let follows = follows(pool, runtime, ring).await?;
        return Err(OpsError::Failed(format!(
            "{runtime}/{ring} has no pin (it follows {follows}): nothing to roll back; \
             use `berth pin` to pin a digest"
        )));
    };
    let (target, history_id, stable_at) = match to {
        Some(d) => (d.as_str().to_string(), None, None),
        None => {
            let entry = desired::rollback_target(pool, runtime, ring, &from).await?;
            let Some(entry) = entry else {
                return Err(OpsError::Failed(format!(
                    "the pin history of {runtime}/{ring} holds no earlier digest than {from} \
                     to go back to (digests berth halted are skipped); name one with --to"
                )));
            };
            (entry.digest, Some(entry.id), entry.stable_at)
        }
    };
    let note = note.or_else(|| Some(format!("rollback from {}", short_digest(Some(&from)))));
    let touched = touched(pool, runtime, ring, &target).await?;
    Ok(PinChange {
        kind: "rollback",
        runtime: runtime.to_string(),
        ring: ring.to_string(),
        from: Some(from),
        follows: None,
        to: target,
        note,
        by,
        history_id,
        stable_at,
        recorded_as: None,
        touched,
        local_build_note: local_build_note(pool, runtime).await?,
        halted_on: Vec::new(),
        applied: false,
    })
}

/// Applies a prepared change if the pin still holds the digest it was
/// prepared against.
pub async fn apply_pin(pool: &PgPool, change: &mut PinChange) -> Result<(), OpsError> {
    if change.is_noop() {
        return Ok(());
    }
    // The history trigger writes its entry in this transaction: the
    // session's last value of the history's sequence is that entry's id.
    let mut tx = pool.begin().await?;
    let result = match &change.from {
        Some(from) => {
            sqlx::query(
                "UPDATE runtime_image_pins
                    SET digest = $3, updated_by = coalesce($4, current_user), note = $5
                  WHERE template_name = $1 AND ring = $2 AND digest = $6",
            )
            .bind(&change.runtime)
            .bind(&change.ring)
            .bind(&change.to)
            .bind(&change.by)
            .bind(&change.note)
            .bind(from)
            .execute(&mut *tx)
            .await?
        }
        None => {
            sqlx::query(
                "INSERT INTO runtime_image_pins (template_name, ring, digest, updated_by, note)
                 VALUES ($1, $2, $3, coalesce($4, current_user), $5)
                 ON CONFLICT (template_name, ring) DO NOTHING",
            )
            .bind(&change.runtime)
            .bind(&change.ring)
            .bind(&change.to)
            .bind(&change.by)
            .bind(&change.note)
            .execute(&mut *tx)
            .await?
        }
    };
    if result.rows_affected() != 1 {
        return Err(OpsError::Failed(format!(
            "the pin of {}/{} changed while this command ran; nothing was written: run it again",
            change.runtime, change.ring
        )));
    }
    change.recorded_as = Some(
        sqlx::query_scalar(
            "SELECT currval(pg_get_serial_sequence('runtime_image_pin_history', 'id'))",
        )
        .fetch_one(&mut *tx)
        .await?,
    );
    tx.commit().await?;
    change.applied = true;
    Ok(())
}

#[cfg(test)]
mod tests;
