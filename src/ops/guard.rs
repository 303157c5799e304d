//! The delete guard as `berth status` shows it: the guard lives in a
//! running berth, and says so on the trail (a `note` event on each
//! workspace whose removal it withholds), which is what this reads.

use chrono::Utc;
use sqlx::PgPool;

use super::OpsError;

/// A host whose delete guard spoke within the last hour.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct GuardTrip {
    pub host: String,
    /// Workspaces it named.
    pub workspaces: i64,
    pub secs_ago: f64,
}

/// The hosts (all, or `host`) whose delete guard withheld removals within
/// the last hour, with the most recent first.
pub async fn recent_guard_trips(
    pool: &PgPool,
    host: Option<&str>,
) -> Result<Vec<GuardTrip>, OpsError> {
    let trips = sqlx::query_as(
        "SELECT host, count(DISTINCT workspace_id) AS workspaces,
                extract(epoch FROM now() - max(at))::float8 AS secs_ago
           FROM workspace_events
          WHERE action = 'note' AND reason LIKE 'delete guard:%'
            AND at > now() - interval '1 hour'
            AND ($1::text IS NULL OR host = $1)
          GROUP BY host ORDER BY max(at) DESC",
    )
    .bind(host)
    .fetch_all(pool)
    .await?;
    Ok(trips)
}

/// One line per host whose guard spoke.
pub fn render_guard_trips(trips: &[GuardTrip]) -> String {
    let mut out = String::new();
    for t in trips {
        let ago = super::table::age(
            Some(Utc::now() - chrono::TimeDelta::seconds(t.secs_ago as i64)),
            Utc::now(),
        );
        out.push_str(&format!(
            "host {}: the delete guard withheld the removal of {} workspace(s) without a row, \
             last said {ago} ago (put the rows back, or see `berth plan` on that host and the README)\n",
            t.host, t.workspaces
        ));
    }
    out
}
