//! Image provenance: the images berth pulled or built on each host
//! (`host_images`). Docker cannot label a pulled image, so this table is
//! what makes an image berth's to remove; the retention sweep never removes
//! an image that has no record here.
//!
//! Writes are fenced by the host lease like the status writes: they land
//! only while `lease` is the current holder and epoch of its host.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{Bounded, Lease, Written};

/// How an image came to be on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Made {
    Pulled,
    Built,
}

impl Made {
    pub fn as_str(self) -> &'static str {
        match self {
            Made::Pulled => "pulled",
            Made::Built => "built",
        }
    }
}

/// An image to record as berth's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewImage {
    /// The local image ID.
    pub image_id: String,
    /// What it was made local as (see `EnsuredImage::reference`).
    pub reference: String,
    /// The runtime whose image it is; `None` for a row's explicit image.
    pub runtime: Option<String>,
    /// The manifest digest it was pulled by; `None` for a local build.
    pub digest: Option<String>,
    pub made: Made,
}

/// One recorded image of a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostImage {
    pub image_id: String,
    pub reference: String,
    pub runtime: Option<String>,
    pub digest: Option<String>,
    pub made: Made,
    pub made_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct RawHostImage {
    image_id: String,
    reference: String,
    runtime: Option<String>,
    digest: Option<String>,
    made: String,
    made_at: DateTime<Utc>,
    last_used_at: DateTime<Utc>,
}

/// Records `image` as pulled or built by berth on the lease's host. A record
/// of the same image is updated (reference, runtime, digest) and counts as
/// used now; its `made_at` stays.
pub async fn record_image(
    pool: &PgPool,
    lease: &Lease,
    image: &NewImage,
) -> Result<Written, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO host_images (host, image_id, reference, runtime, digest, made)
         SELECT l.host, $4, $5, $6, $7, $8 FROM host_leases l
          WHERE l.host = $1 AND l.holder = $2 AND l.epoch = $3
         ON CONFLICT (host, image_id) DO UPDATE
            SET reference = excluded.reference, runtime = excluded.runtime,
                digest = excluded.digest, made = excluded.made, last_used_at = now()",
    )
    .bind(&lease.host)
    .bind(&lease.holder)
    .bind(lease.epoch)
    .bind(&image.image_id)
    .bind(&image.reference)
    .bind(&image.runtime)
    .bind(&image.digest)
    .bind(image.made.as_str())
    .execute(pool)
    .bounded()
    .await?;
    Ok(Written::from_rows(result.rows_affected()))
}

/// Marks the recorded images among `image_ids` as used now; how many were.
/// Nothing is written when the lease is not held.
pub async fn mark_images_used(
    pool: &PgPool,
    lease: &Lease,
    image_ids: &[String],
) -> Result<u64, sqlx::Error> {
    if image_ids.is_empty() {
        return Ok(0);
    }
    let result = sqlx::query(
        "UPDATE host_images h SET last_used_at = now()
          FROM host_leases l
         WHERE h.host = l.host AND l.host = $1 AND l.holder = $2 AND l.epoch = $3
           AND h.image_id = ANY($4)",
    )
    .bind(&lease.host)
    .bind(&lease.holder)
    .bind(lease.epoch)
    .bind(image_ids)
    .execute(pool)
    .bounded()
    .await?;
    Ok(result.rows_affected())
}

/// Every image recorded for `host`, oldest record first. A record whose
/// `made` is not one berth writes is skipped (the database constrains it,
/// so that would be a newer berth's kind, which this one leaves alone).
pub async fn host_images(pool: &PgPool, host: &str) -> Result<Vec<HostImage>, sqlx::Error> {
    let raw: Vec<RawHostImage> = sqlx::query_as(concat!(
        "SELECT image_id, reference, runtime, digest, made, ",
        super::readable_time!("made_at"),
        ", ",
        super::readable_time!("last_used_at"),
        " FROM host_images WHERE host = $1 ORDER BY made_at, image_id"
    ))
    .bind(host)
    .fetch_all(pool)
    .bounded()
    .await?;
    Ok(raw
        .into_iter()
        .filter_map(|r| {
            let made = match r.made.as_str() {
                "pulled" => Made::Pulled,
                "built" => Made::Built,
                _ => return None,
            };
            Some(HostImage {
                image_id: r.image_id,
                reference: r.reference,
                runtime: r.runtime,
                digest: r.digest,
                made,
                made_at: r.made_at,
                last_used_at: r.last_used_at,
            })
        })
        .collect())
}

/// Deletes the record of `image_id` on the lease's host (the image is
/// gone). `Refused` when the lease is not held or there was no record.
pub async fn forget_image(
    pool: &PgPool,
    lease: &Lease,
    image_id: &str,
) -> Result<Written, sqlx::Error> {
    let result = sqlx::query(
        "DELETE FROM host_images h USING host_leases l
          WHERE h.host = l.host AND l.host = $1 AND l.holder = $2 AND l.epoch = $3
            AND h.image_id = $4",
    )
    .bind(&lease.host)
    .bind(&lease.holder)
    .bind(lease.epoch)
    .bind(image_id)
    .execute(pool)
    .bounded()
    .await?;
    Ok(Written::from_rows(result.rows_affected()))
}
