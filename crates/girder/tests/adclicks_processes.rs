//! Ad Click Aggregator as a real `girder serve` process: SIGKILLed while clicks pour
//! in and restarted on the same data directory and database, its per-minute counts
//! end equal to the exact counts of the click log it kept: nothing lost, nothing
//! counted twice. Every click answered "counted" is in them.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Server, TestDb, client};
use girder_stream::Source;
use girder_stream::log::{LogConfig, PartitionedLog};
use serde_json::{Value, json};

async fn sign_in(http: &reqwest::Client, base: &str) -> String {
    let reply = http.post(format!("{base}/api/auth/demo")).send().await.expect("sign in");
    assert_eq!(reply.status().as_u16(), 201);
    let token: Value = reply.json().await.expect("token");
    format!("Bearer {}", token["token"].as_str().expect("token"))
}

/// Shows `ad` and clicks the impression: `Some(true)` when the click was counted.
async fn show_and_click(http: &reqwest::Client, base: &str, auth: &str, ad: i64) -> Option<bool> {
    let reply = http
        .post(format!("{base}/api/adclicks/ads/{ad}/impressions"))
        .header("authorization", auth)
        .send()
        .await
        .ok()?;
    let imp: Value = reply.json().await.ok()?;
    let url = imp["click_url"].as_str()?;
    let reply = http.get(format!("{base}{url}")).send().await.ok()?;
    let said = reply.headers().get("girder-click")?.to_str().ok()?.to_owned();
    Some(said == "counted")
}

async fn stream_total(http: &reqwest::Client, base: &str, auth: &str, ads: &[i64]) -> Option<i64> {
    let mut total = 0;
    for ad in ads {
        // The last hour by minute: the test's clicks are all in it.
        let reply = http
            .get(format!("{base}/api/adclicks/ads/{ad}/clicks"))
            .header("authorization", auth)
            .send()
            .await
            .ok()?;
        let view: Value = reply.json().await.ok()?;
        total += view["total"].as_i64()?;
    }
    Some(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_aggregator_restarts_with_counts_equal_to_its_log() {
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().expect("dir");
    let flags = ["--ratelimit-rules", "off"];
    let mut server = Server::start(data.path(), db.url(), &flags);
    let http = client();
    let auth = sign_in(&http, &server.base).await;
    let mut ads = Vec::new();
    for i in 0..6 {
        let reply = http
            .post(format!("{}/api/adclicks/ads", server.base))
            .header("authorization", &auth)
            .json(&json!({"name": format!("ad {i}"), "target_url": "https://shop.example/"}))
            .send()
            .await
            .expect("create ad");
        assert_eq!(reply.status().as_u16(), 201);
        ads.push(reply.json::<Value>().await.expect("ad")["id"].as_i64().expect("id"));
    }
    let ads = Arc::new(ads);

    // Clients click until the kill, a while after it started.
    let counted = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (http, base, auth) = (http.clone(), server.base.clone(), auth.clone());
        let (ads, counted, stop) = (Arc::clone(&ads), Arc::clone(&counted), Arc::clone(&stop));
        clients.push(tokio::spawn(async move {
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                if show_and_click(&http, &base, &auth, ads[i % ads.len()]).await == Some(true) {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    let acknowledged = counted.load(Ordering::Relaxed) as i64;
    assert!(acknowledged > 50, "only {acknowledged} clicks before the kill");

    // Restarted: the pipeline resumes from its last checkpoint and catches up.
    let mut server = Server::start(data.path(), db.url(), &flags);
    let deadline = Instant::now() + Duration::from_secs(60);
    let log_total = loop {
        let total = stream_total(&http, &server.base, &auth, &ads).await.unwrap_or(-1);
        if total >= acknowledged {
            // Settled once it stops moving for a few checkpoints.
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            let again = stream_total(&http, &server.base, &auth, &ads).await.unwrap_or(-1);
            if again == total {
                break total;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the stream shows {total} of {acknowledged} acknowledged clicks"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(server.terminate().success(), "a clean stop after the restart");

    // The exact counts of the log the instance kept, per (ad, minute).
    let log = Arc::new(
        PartitionedLog::open(&LogConfig::new(data.path().join("adclicks").join("log"), 4))
            .expect("the click log"),
    );
    let mut exact: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for p in 0..4 {
        let mut from = log.first_offset(p).await.expect("first");
        loop {
            let records = log.read(p, from, 10_000, Duration::ZERO).await.expect("read");
            let Some(last) = records.last() else { break };
            from = last.offset + 1;
            for r in records {
                let ad = i64::from_le_bytes(r.payload[..8].try_into().expect("ad"));
                let t = i64::from_le_bytes(r.payload[8..16].try_into().expect("time"));
                *exact.entry((ad, t - t.rem_euclid(60_000))).or_insert(0) += 1;
            }
        }
    }
    let logged: i64 = exact.values().sum();
    assert_eq!(log_total, logged, "the stream's total equals the log's, after a SIGKILL");
    assert!(logged >= acknowledged, "every click answered 'counted' is in the log");
    // Per minute, from the database the server left.
    let pool =
        girder_sql::Db::connect(db.url(), girder_sql::PoolConfig::default()).await.expect("db");
    let rows: Vec<(i64, i64, i64)> = girder_sql::on_db!(&pool, |p| {
        sqlx::query_as(
            "SELECT ad_id, minute_ms, CAST(SUM(clicks) AS BIGINT) FROM ac_minute_counts \
             WHERE pipeline <> 'reconcile' GROUP BY ad_id, minute_ms",
        )
        .fetch_all(p)
        .await
        .expect("counts")
    });
    let streamed: BTreeMap<(i64, i64), i64> =
        rows.into_iter().map(|(a, m, n)| ((a, m), n)).collect();
    assert_eq!(streamed, exact);
    // The raw clicks hold at most the few in flight at the kill beyond the log.
    let raw: i64 = girder_sql::on_db!(&pool, |p| {
        sqlx::query_scalar("SELECT COUNT(*) FROM ac_clicks").fetch_one(p).await.expect("raw")
    });
    assert!((logged..=logged + 8).contains(&raw), "raw {raw}, logged {logged}");
}
