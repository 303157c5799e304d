//! A fresh database per test in the run's throwaway cluster.

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection};
use std::str::FromStr;

/// A database of its own for one test. The cluster is thrown away at the end
/// of the run, so databases are not dropped one by one.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub url: String,
}

impl TestDb {
    /// An empty database.
    pub async fn empty() -> Self {
        let env = super::env();
        let name = format!("t_{}", super::unique());
        let mut admin = PgConnection::connect(&env.pg_url)
            .await
            .expect("connecting to the test cluster");
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("creating a test database");
        admin.close().await.ok();
        let opts = PgConnectOptions::from_str(&env.pg_url).expect("BERTH_TEST_PG_URL");
        let url = format!(
            "postgres://{}@{}:{}/{}",
            opts.get_username(),
            opts.get_host(),
            opts.get_port(),
            name
        );
        TestDb { url }
    }

    /// A database with berth's schema applied.
    pub async fn migrated() -> Self {
        let db = Self::empty().await;
        let pool = db.pool().await;
        berth::desired::migrate(&pool)
            .await
            .expect("migrating the test database");
        pool.close().await;
        db
    }

    /// The database server's `host:port`.
    pub fn addr(&self) -> String {
        let rest = self.url.split_once('@').map_or(&*self.url, |(_, r)| r);
        rest.split('/').next().unwrap_or_default().to_string()
    }

    /// This database's URL through `addr` (a proxy) instead.
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        self.url.replace(&self.addr(), &addr.to_string())
    }

    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(4)
            .connect(&self.url)
            .await
            .expect("connecting to the test database")
    }
}
