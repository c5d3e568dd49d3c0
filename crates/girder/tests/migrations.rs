//! Migrations: a database made before migrations existed (its tables created by the
//! systems at start-up, no `_sqlx_migrations` table) upgrades in place and keeps its
//! rows and shared keys; opening again applies nothing twice.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::{TestDb, app_with, get};
use girder_core::SystemClock;

/// The tables as the systems created them before migrations, with one link and a
/// shared key in them.
async fn older_database(db: &girder_sql::Db) {
    // These are the statements the stores ran at start-up; the first migration of each
    // system repeats them with IF NOT EXISTS.
    let (bitly, gopuff, ticketmaster) = match db {
        girder_sql::Db::Sqlite(_) => (
            include_str!("../../systems/girder-bitly/migrations/3001_links.sql"),
            include_str!("../../systems/girder-gopuff/migrations/sqlite/4001_inventory.sql"),
            include_str!("../../systems/girder-ticketmaster/migrations/1001_booking.sql"),
        ),
        girder_sql::Db::Postgres(_) => (
            include_str!("../../systems/girder-bitly/migrations/3001_links.sql"),
            include_str!("../../systems/girder-gopuff/migrations/postgres/4001_inventory.sql"),
            include_str!("../../systems/girder-ticketmaster/migrations/1001_booking.sql"),
        ),
    };
    girder_sql::on_db!(db, |pool| {
        for schema in [bitly, gopuff, ticketmaster] {
            sqlx::raw_sql(schema).execute(pool).await.expect("old schema");
        }
        sqlx::query(
            "INSERT INTO bitly_links (code, url, created_at_ms, expires_at_ms, clicks) \
             VALUES ('oldlink', 'https://example.com/kept', 0, NULL, 7)",
        )
        .execute(pool)
        .await
        .expect("old link");
        sqlx::query("INSERT INTO tm_settings (name, value) VALUES ('cursor_key', $1)")
            .bind("ab".repeat(32))
            .execute(pool)
            .await
            .expect("old key");
    });
}

async fn applied(db: &girder_sql::Db) -> Vec<i64> {
    girder_sql::on_db!(db, |pool| {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await
            .expect("migrations table")
    })
}

#[tokio::test]
async fn an_older_database_upgrades_in_place() {
    for db in TestDb::all("an_older_database_upgrades_in_place").await {
        let pool = girder_sql::Db::connect(db.url(), girder_sql::PoolConfig::default())
            .await
            .expect("database");
        older_database(&pool).await;

        let (app, systems) = app_with(&db, Arc::new(SystemClock), &[]).await;
        let redirect = get(&app, "/oldlink").await;
        assert_eq!(redirect.status, StatusCode::FOUND, "{}", db.engine());
        assert_eq!(redirect.header("location"), Some("https://example.com/kept"));
        let key: String = girder_sql::on_db!(&pool, |p| {
            sqlx::query_scalar("SELECT value FROM tm_settings WHERE name = 'cursor_key'")
                .fetch_one(p)
                .await
                .expect("key")
        });
        assert_eq!(key, "ab".repeat(32), "the shared key survives the upgrade");
        assert_eq!(
            applied(&pool).await,
            vec![
                1, 2, 901, 911, 1001, 1002, 1003, 3001, 4001, 5001, 5002, 5501, 6001, 6501, 7001,
                7002, 8001, 9001, 13001, 15001
            ],
            "{}",
            db.engine()
        );
        systems.close().await;

        // A second start applies nothing again and changes nothing.
        let (app, systems) = app_with(&db, Arc::new(SystemClock), &[]).await;
        assert_eq!(get(&app, "/oldlink").await.status, StatusCode::FOUND);
        assert_eq!(
            applied(&pool).await,
            vec![
                1, 2, 901, 911, 1001, 1002, 1003, 3001, 4001, 5001, 5002, 5501, 6001, 6501, 7001,
                7002, 8001, 9001, 13001, 15001
            ]
        );
        systems.close().await;
        pool.close().await;
        db.drop_db().await;
    }
}
