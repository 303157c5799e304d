//! The delete guard as `berth status` shows it: the guard lives in a
//! running berth, and says so on the trail (a `note` event on each
//! workspace whose removal it withholds, and one on each when it lets
//! go), which is what this reads.

use sqlx::PgPool;

use super::OpsError;

/// A host whose delete guard holds removals, as the last hour's trail
/// shows it.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub struct GuardTrip {
    pub host: String,
    /// Workspaces its holds named since it last let go.
    pub workspaces: i64,
    pub secs_ago: f64,
}

/// The hosts (all, or `host`) whose delete guard withheld removals within
/// the last hour and has not let go since, with the most recent first. A
/// hold is a `note` whose reason starts `delete guard:`; a release is a
/// `note` whose detail says `{"delete_guard": "released"}`, written for
/// each workspace the guard lets go (its row back, or the whole hold
/// over). A workspace counts while its latest guard note is a hold.
pub async fn recent_guard_trips(
    pool: &PgPool,
    host: Option<&str>,
) -> Result<Vec<GuardTrip>, OpsError> {
    let trips = sqlx::query_as(
        "WITH latest AS (
           SELECT DISTINCT ON (host, workspace_id) host, workspace_id, at,
                  coalesce(detail->>'delete_guard' = 'released', false) AS released
             FROM workspace_events
            WHERE action = 'note'
              AND (reason LIKE 'delete guard:%' OR detail->>'delete_guard' = 'released')
              AND at > now() - interval '1 hour'
              AND ($1::text IS NULL OR host = $1)
            ORDER BY host, workspace_id, at DESC, id DESC
         )
         SELECT host, count(*) AS workspaces,
                CASE WHEN isfinite(max(at)) THEN extract(epoch FROM now() - max(at))::float8
                     ELSE '-infinity'::float8 END AS secs_ago
           FROM latest WHERE NOT released
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
        let ago = super::table::age_of_secs(t.secs_ago);
        out.push_str(&format!(
            "host {}: the delete guard withheld the removal of {} workspace(s) without a row, \
             last said {ago} ago (put the rows back, or see `berth plan` on that host and the README)\n",
            super::table::shown(&t.host),
            t.workspaces
        ));
    }
    out
}
