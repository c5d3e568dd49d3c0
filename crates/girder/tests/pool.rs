//! One pool per instance: however many systems an instance runs, it holds at most
//! `--db-max-connections` PostgreSQL connections. Counted from the server's side
//! (`pg_stat_activity`) while real `girder serve` processes are under concurrent load
//! on every live system that uses the database.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use common::{Server, TestDb, client};
use serde_json::{Value, json};

/// Connections each instance may hold.
const POOL: u32 = 4;

async fn post(http: &reqwest::Client, url: String, body: Value) -> u16 {
    http.post(url).json(&body).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

/// Sessions connected to database `name`, as the server counts them.
async fn sessions(admin: &sqlx::PgPool, name: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
        .bind(name)
        .fetch_one(admin)
        .await
        .expect("pg_stat_activity")
}

/// Work for every database-backed system, spread over the instances.
async fn load(http: &reqwest::Client, bases: &[String], requests: usize) {
    let tasks: Vec<_> = (0..requests)
        .map(|i| {
            let http = http.clone();
            let base = bases[i % bases.len()].clone();
            tokio::spawn(async move {
                let status = match i % 4 {
                    0 => {
                        let url = format!("https://example.com/{i}");
                        post(&http, format!("{base}/api/bitly/urls"), json!({ "url": url })).await
                    }
                    1 => {
                        let venue = json!({"name": "Hall", "city": "Oslo", "sections":
                            [{"name": "A", "rows": 2, "seats_per_row": 5, "price_cents": 100}]});
                        post(&http, format!("{base}/api/ticketmaster/venues"), venue).await
                    }
                    2 => {
                        let center = json!({"name": format!("DC {i}"), "lat": 51.5, "lon": -0.1});
                        post(&http, format!("{base}/api/gopuff/centers"), center).await
                    }
                    _ => http
                        .get(format!("{base}/readyz"))
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0),
                };
                assert!(status < 500, "request {i} failed with {status}");
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("request task");
    }
}

async fn check(instances: usize) {
    let Some(db) = TestDb::postgres("one_pool_per_instance").await else { return };
    let TestDb::Postgres { admin_url, name, .. } = &db else { unreachable!() };
    let admin = sqlx::PgPool::connect(admin_url).await.expect("admin connection");
    let dirs: Vec<_> = (0..instances).map(|_| tempfile::tempdir().expect("dir")).collect();
    let pool = POOL.to_string();
    let servers: Vec<Server> = dirs
        .iter()
        .map(|dir| {
            Server::start(
                dir.path(),
                db.url(),
                &["--db-max-connections", &pool, "--ratelimit-rules", "off"],
            )
        })
        .collect();
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let http = client();

    // Sample the session count while the load runs, and keep the highest.
    let peak = Arc::new(AtomicI64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (admin, name, peak, running) =
            (admin.clone(), name.clone(), Arc::clone(&peak), Arc::clone(&running));
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                peak.fetch_max(sessions(&admin, &name).await, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    load(&http, &bases, 400).await;
    running.store(false, Ordering::Relaxed);
    sampler.await.expect("sampler");
    let after = sessions(&admin, name).await;
    let peak = peak.load(Ordering::Relaxed).max(after);

    let bound = i64::from(POOL) * i64::try_from(instances).expect("small");
    eprintln!("{instances} instance(s): at most {peak} connections seen; the bound is {bound}");
    assert!(peak <= bound, "{instances} instances held {peak} connections; the bound is {bound}");
    // The load did reach the database through every instance.
    assert!(
        peak >= i64::try_from(instances).expect("small"),
        "{instances} instances held only {peak} connections under load"
    );
    drop(servers);
    admin.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_instance_holds_at_most_its_pool() {
    check(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_hold_at_most_three_pools() {
    check(3).await;
}
