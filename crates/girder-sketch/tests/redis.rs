//! Sharing through Redis: Redis's own HyperLogLog (batched adds, counts over several
//! keys, merge), and per-instance sketches merged on read for every mergeable sketch —
//! two instances publish, a reader sees the union — with damaged or mismatched bytes
//! in Redis reported as typed errors. Skipped with a SKIPPED line when Redis is
//! unreachable, failed under `CI=true`.

use std::fmt::Debug;

use ::redis::aio::ConnectionManager;
use girder_core::services::{Service, require};
use girder_sketch::bloom::{BloomConfig, BloomFilter, CountingBloomConfig, CountingBloomFilter};
use girder_sketch::count_min::{CountMinConfig, CountMinSketch};
use girder_sketch::hyperloglog::HyperLogLog;
use girder_sketch::redis::{
    RedisHyperLogLog, RedisHyperLogLogConfig, RedisSketchError, SharedSketch, SharedSketchConfig,
};
use girder_sketch::topk::SpaceSaving;
use girder_sketch::{DecodeError, MergeError, Mergeable};

async fn connect(test: &str) -> Option<ConnectionManager> {
    let url = require(Service::Redis, test)?;
    let client = ::redis::Client::open(url).expect("redis url");
    Some(ConnectionManager::new(client).await.expect("redis connection"))
}

/// A prefix no other run uses; every key a test writes also expires within a minute,
/// so an aborted run leaves nothing behind for long.
fn prefix() -> String {
    format!("girder:test:sketch:{:016x}:", rand::random::<u64>())
}

const TTL_MS: u64 = 60_000;

async fn pttl(conn: &ConnectionManager, key: &str) -> i64 {
    let mut conn = conn.clone();
    ::redis::cmd("PTTL").arg(key).query_async(&mut conn).await.expect("PTTL")
}

#[tokio::test]
async fn redis_hyperloglog_counts_merges_and_batches() {
    let Some(conn) = connect("redis_hyperloglog_counts_merges_and_batches").await else { return };
    let config =
        RedisHyperLogLogConfig { key_prefix: prefix(), batch_keys_max: 97, ttl_ms: Some(TTL_MS) };
    let hll = RedisHyperLogLog::new(conn.clone(), config).expect("valid config");
    let a: Vec<String> = (0..3_000).map(|i| format!("user:{i}")).collect();
    let b: Vec<String> = (2_000..5_000).map(|i| format!("user:{i}")).collect();
    assert!(hll.add("a", &a).await.expect("add"));
    assert!(hll.add("b", &b).await.expect("add"));
    // The same keys again change nothing; no keys need no round trip.
    assert!(!hll.add("a", &a[..500]).await.expect("add"));
    assert!(!hll.add("a", &[] as &[&str]).await.expect("add"));
    let within = |got: u64, exact: f64| ((got as f64 - exact).abs() / exact) <= 0.03;
    let count_a = hll.count(&["a"]).await.expect("count");
    let count_b = hll.count(&["b"]).await.expect("count");
    let union = hll.count(&["a", "b"]).await.expect("count");
    assert!(within(count_a, 3_000.0), "a: {count_a}");
    assert!(within(count_b, 3_000.0), "b: {count_b}");
    assert!(within(union, 5_000.0), "a ∪ b: {union}");
    assert_eq!(hll.count(&["never-written"]).await.expect("count"), 0);
    assert_eq!(hll.count(&[]).await.expect("count"), 0);
    hll.merge_into("both", &["a", "b"]).await.expect("merge");
    assert_eq!(hll.count(&["both"]).await.expect("count"), union);
    assert!(pttl(&conn, &hll.key("a")).await > 0, "adds set the expiry");
    hll.delete(&["a", "b", "both"]).await.expect("delete");
    assert_eq!(hll.count(&["a", "b", "both"]).await.expect("count"), 0);
    let bad = RedisHyperLogLogConfig { batch_keys_max: 0, ..RedisHyperLogLogConfig::default() };
    assert!(RedisHyperLogLog::new(conn, bad).is_err());
}

fn instance(prefix: &str, name: &str) -> SharedSketchConfig {
    SharedSketchConfig {
        key_prefix: prefix.to_owned(),
        ttl_ms: Some(TTL_MS),
        ..SharedSketchConfig::new(name)
    }
}

/// Two instances publish `a` and `b`, a third (which publishes nothing) reads: it must
/// see `a` merged with `b`. Then `a` is republished as `a2` and the read follows.
async fn check_union_on_read<S>(conn: &ConnectionManager, a: S, b: S, a2: S)
where
    S: Mergeable + PartialEq + Debug + Clone,
{
    let prefix = prefix();
    let store = |name: &str| {
        SharedSketch::<S>::new(conn.clone(), instance(&prefix, name)).expect("valid config")
    };
    let (one, two, reader) = (store("one"), store("two"), store("reader"));
    assert_eq!(reader.read("s").await.expect("read"), None);
    one.publish("s", &a).await.expect("publish");
    assert_eq!(reader.read("s").await.expect("read").as_ref(), Some(&a));
    two.publish("s", &b).await.expect("publish");
    let mut want = a.clone();
    want.merge(&b).expect("same shape");
    assert_eq!(reader.read("s").await.expect("read"), Some(want));
    one.publish("s", &a2).await.expect("publish");
    let mut want = a2.clone();
    want.merge(&b).expect("same shape");
    assert_eq!(reader.read("s").await.expect("read"), Some(want));
    assert!(pttl(conn, &one.instance_key("s", "one")).await > 0);
    assert!(pttl(conn, &one.instances_key("s")).await > 0);
    one.withdraw("s").await.expect("withdraw");
    assert_eq!(reader.read("s").await.expect("read"), Some(b));
    two.withdraw("s").await.expect("withdraw");
    assert_eq!(reader.read("s").await.expect("read"), None);
}

#[tokio::test]
async fn per_instance_sketches_merge_on_read() {
    let Some(conn) = connect("per_instance_sketches_merge_on_read").await else { return };

    let bloom = |keys: std::ops::Range<u32>| {
        let mut f = BloomFilter::new(&BloomConfig::new(1_000, 0.01)).expect("valid");
        for k in keys {
            f.insert(k.to_le_bytes());
        }
        f
    };
    check_union_on_read(&conn, bloom(0..300), bloom(200..600), bloom(0..400)).await;
    // The union holds every key of both instances.
    let mut both = bloom(0..300);
    both.union(&bloom(200..600)).expect("same shape");
    assert!((0..600u32).all(|k| both.contains(k.to_le_bytes())));

    let counting = |keys: std::ops::Range<u32>| {
        let mut f =
            CountingBloomFilter::new(&CountingBloomConfig::new(1_000, 0.01)).expect("valid");
        for k in keys {
            f.insert(k.to_le_bytes());
        }
        f
    };
    check_union_on_read(&conn, counting(0..300), counting(200..600), counting(0..50)).await;

    let cms = |keys: std::ops::Range<u32>| {
        let mut s = CountMinSketch::new(&CountMinConfig::new(0.01, 0.01)).expect("valid");
        for k in keys {
            s.add((k % 50).to_le_bytes(), 1);
        }
        s
    };
    check_union_on_read(&conn, cms(0..1_000), cms(0..500), cms(0..2_000)).await;

    let topk = |keys: std::ops::Range<u32>| {
        let mut s = SpaceSaving::new(10).expect("valid");
        for k in keys {
            s.add(format!("k{}", (k % 7) * (k % 11)), 1);
        }
        s
    };
    check_union_on_read(&conn, topk(0..500), topk(100..900), topk(0..50)).await;

    let hll = |keys: std::ops::Range<u32>| {
        let mut h = HyperLogLog::new(12, 0).expect("valid");
        for k in keys {
            h.add(k.to_le_bytes());
        }
        h
    };
    // Sparse with sparse, then dense with sparse.
    check_union_on_read(&conn, hll(0..100), hll(50..150), hll(0..5_000)).await;
}

#[tokio::test]
async fn damaged_or_mismatched_sketches_in_redis_are_typed_errors() {
    let Some(conn) = connect("damaged_or_mismatched_sketches_in_redis_are_typed_errors").await
    else {
        return;
    };
    let prefix = prefix();
    let store = |name: &str| {
        SharedSketch::<CountMinSketch>::new(conn.clone(), instance(&prefix, name))
            .expect("valid config")
    };
    let (good, other) = (store("good"), store("other"));
    let sketch = CountMinSketch::new(&CountMinConfig::new(0.01, 0.01)).expect("valid");
    good.publish("s", &sketch).await.expect("publish");

    // Another instance's bytes are damaged: a flipped byte, then garbage, then a
    // sketch of another kind.
    let key = good.instance_key("s", "other");
    let mut damaged = sketch.to_bytes();
    damaged[20] ^= 0x40;
    let hll = HyperLogLog::new(10, 0).expect("valid").to_bytes();
    let mut raw = conn.clone();
    for (bytes, want) in
        [(damaged, "checksum"), (b"not a sketch at all".to_vec(), "magic"), (hll, "kind")]
    {
        ::redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(bytes)
            .arg("PX")
            .arg(TTL_MS)
            .ignore()
            .cmd("SADD")
            .arg(good.instances_key("s"))
            .arg("other")
            .ignore()
            .query_async::<()>(&mut raw)
            .await
            .expect("plant bytes");
        match good.read("s").await {
            Err(RedisSketchError::Decode { instance, source }) => {
                assert_eq!(instance, "other");
                let matches = match want {
                    "checksum" => matches!(source, DecodeError::Checksum { .. }),
                    "magic" => matches!(source, DecodeError::BadMagic),
                    _ => matches!(source, DecodeError::WrongKind { .. }),
                };
                assert!(matches, "{want}: {source:?}");
            }
            got => panic!("{want}: expected a decode error, got {got:?}"),
        }
    }

    // A readable sketch of another shape: a merge error naming the instance.
    let wider = CountMinSketch::new(&CountMinConfig::new(0.001, 0.01)).expect("valid");
    other.publish("s", &wider).await.expect("publish");
    match good.read("s").await {
        Err(RedisSketchError::Merge { instance, source: MergeError::ShapeMismatch(_) }) => {
            assert_eq!(instance, "other");
        }
        got => panic!("expected a merge error, got {got:?}"),
    }

    // A member whose key is gone (expired) is skipped.
    let mut raw = conn.clone();
    ::redis::cmd("DEL").arg(&key).query_async::<()>(&mut raw).await.expect("DEL");
    assert_eq!(good.read("s").await.expect("read"), Some(sketch.clone()));

    // More instances than a read may fetch.
    let limited = SharedSketch::<CountMinSketch>::new(
        conn.clone(),
        SharedSketchConfig { instances_max: 1, ..instance(&prefix, "good") },
    )
    .expect("valid config");
    match limited.read("s").await {
        Err(RedisSketchError::TooManyInstances { found: 2, max: 1 }) => {}
        got => panic!("expected too many instances, got {got:?}"),
    }
    good.withdraw("s").await.expect("withdraw");
    other.withdraw("s").await.expect("withdraw");

    // Bad configs.
    assert!(SharedSketch::<CountMinSketch>::new(conn.clone(), instance(&prefix, "")).is_err());
    let zero = SharedSketchConfig { instances_max: 0, ..instance(&prefix, "x") };
    assert!(SharedSketch::<CountMinSketch>::new(conn.clone(), zero).is_err());
}
