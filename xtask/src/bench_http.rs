//! `cargo xtask bench-http`: shorten and redirect throughput of `girder serve`
//! on SQLite and PostgreSQL, as ratios to a bare axum handler returning a fixed
//! 302, all driven by wrk in the same run on the same machine. The baseline and
//! the redirect runs use the same wrk script (the same paths, the same per-request
//! work in wrk), so the ratio compares servers, not scripts.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{KillOnDrop, run};

const REDIRECT_LUA: &str = include_str!("../wrk/redirect.lua");
const SHORTEN_LUA: &str = include_str!("../wrk/shorten.lua");

/// The most links a redirect run draws from (and the paths the baseline is sent).
const WORKING_SET_MAX: u64 = 10_000;

/// One wrk measurement.
struct Sample {
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_listening(addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listening on {addr} after 30s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn wrk(
    url: &str,
    script: &Path,
    args: &[&str],
    seconds: u32,
    connections: u32,
) -> anyhow::Result<Sample> {
    let output = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(script)
        .arg(url)
        .arg("--")
        .args(args)
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&output.stderr));
    }
    let field = |prefix: &str| -> Option<&str> {
        text.lines().map(str::trim).find_map(|l| l.strip_prefix(prefix)).map(str::trim)
    };
    let requests_per_sec =
        field("Requests/sec:").and_then(|v| v.parse().ok()).context("no Requests/sec")?;
    let p50_ms = field("50%").map(parse_latency_ms).context("no p50")?;
    let p99_ms = field("99%").map(parse_latency_ms).context("no p99")?;
    let errors = field("Non-2xx or 3xx responses:").and_then(|v| v.parse().ok()).unwrap_or(0)
        + field("Socket errors:").map_or(0, sum_socket_errors);
    Ok(Sample { requests_per_sec, p50_ms, p99_ms, errors })
}

/// Sums wrk's `connect 0, read 2, write 0, timeout 5`.
fn sum_socket_errors(v: &str) -> u64 {
    v.split(',').filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok()).sum()
}

/// wrk prints latencies as `812.00us`, `1.23ms` or `1.01s`.
fn parse_latency_ms(v: &str) -> f64 {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * scale
}

fn psql(sql: &str) -> anyhow::Result<()> {
    let url = std::env::var("GIRDER_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let status = Command::new("psql")
        .args([url.as_str(), "-qc", sql])
        .stdout(Stdio::null())
        .status()
        .context("running psql")?;
    if !status.success() {
        bail!("psql {sql:?} failed");
    }
    Ok(())
}

fn postgres_reachable() -> bool {
    std::net::TcpStream::connect("127.0.0.1:5432").is_ok()
}

/// Runs the whole comparison and prints a Markdown table.
pub(crate) fn bench_http(root: &Path) -> anyhow::Result<()> {
    let seconds: u32 =
        std::env::var("GIRDER_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    run(root, "cargo", &["build", "--release", "-p", "girder", "-p", "girder-bench", "--bins"])?;
    let scripts = tempfile_dir()?;
    let (redirect, shorten) = (scripts.join("redirect.lua"), scripts.join("shorten.lua"));
    std::fs::write(&redirect, REDIRECT_LUA)?;
    std::fs::write(&shorten, SHORTEN_LUA)?;

    // Each row: its name, its sample, and the baseline it is compared with.
    let mut rows: Vec<(String, Sample, f64)> = Vec::new();

    // The baseline server stays up for the whole run, idle while girder is measured,
    // and is measured again right before each redirect run: the machine drifts over
    // a run (other tenants, clocks), so each ratio compares two adjacent samples.
    let port = free_port()?;
    let baseline_addr = format!("127.0.0.1:{port}");
    let _baseline = KillOnDrop(
        Command::new(root.join("target/release/baseline-302"))
            .arg(&baseline_addr)
            .spawn()
            .context("starting baseline-302")?,
    );
    wait_listening(&baseline_addr)?;
    let measure_baseline = |when: &str| -> anyhow::Result<Sample> {
        eprintln!("==> baseline ({when}): bare axum handler returning a fixed 302");
        let working_set = WORKING_SET_MAX.to_string();
        wrk(&format!("http://{baseline_addr}"), &redirect, &[&working_set], seconds, 64)
    };
    let first = measure_baseline("first")?;
    let first_rps = first.requests_per_sec;
    rows.push(("bare axum fixed 302 (baseline)".into(), first, first_rps));

    let mut engines = vec![("sqlite", String::new())];
    if postgres_reachable() {
        let db = format!("girder_bench_{}", std::process::id());
        psql(&format!("DROP DATABASE IF EXISTS {db}"))?;
        psql(&format!("CREATE DATABASE {db}"))?;
        engines.push(("postgres", format!("postgres://postgres@127.0.0.1:5432/{db}")));
    } else {
        eprintln!("SKIPPED postgres: not reachable on 127.0.0.1:5432");
    }
    for (engine, pg_url) in &engines {
        // Shortening alone, without the built-in per-IP limit (10,000/s: it would cap
        // this one-address benchmark): each link in its own INSERT as before batching,
        // then batched (the default), each on a fresh server and data directory.
        for (label, batch_max) in [("one INSERT per link", "1"), ("batched", "128")] {
            let data = scripts.join(format!("data-{engine}-shorten-{batch_max}"));
            let addr = format!("127.0.0.1:{}", free_port()?);
            let mut cmd = Command::new(root.join("target/release/girder"));
            cmd.args(["serve", "--bind", &addr, "--data-dir"]).arg(&data).env("RUST_LOG", "warn");
            cmd.args(["--ratelimit-rules", "off", "--bitly-shorten-batch-max", batch_max]);
            if !pg_url.is_empty() {
                cmd.args(["--database-url", pg_url]);
            }
            let server = KillOnDrop(cmd.spawn().context("starting girder")?);
            wait_listening(&addr)?;
            eprintln!("==> {engine}: shorten, {label}, no rate limit");
            let sample = wrk(&format!("http://{addr}"), &shorten, &[], seconds, 64)?;
            rows.push((format!("shorten, {engine}, {label}, no rate limit"), sample, first_rps));
            drop(server);
        }
        let data = scripts.join(format!("data-{engine}"));
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(root.join("target/release/girder"));
        cmd.args(["serve", "--bind", &addr, "--data-dir"]).arg(&data).env("RUST_LOG", "warn");
        if !pg_url.is_empty() {
            cmd.args(["--database-url", pg_url]);
        }
        let server = KillOnDrop(cmd.spawn().context("starting girder")?);
        wait_listening(&addr)?;
        let base = format!("http://{addr}");
        eprintln!("==> {engine}: shorten");
        let created = wrk(&base, &shorten, &[], seconds, 64)?;
        // Codes are sequential from 0, so the first `links` ids all exist. Redirects
        // draw from a working set of at most 10,000 links, warmed first: this measures
        // the warm-cache redirect path, as a hot set of links sees it.
        let links = (created.requests_per_sec * f64::from(seconds) * 0.9)
            .clamp(1.0, WORKING_SET_MAX as f64) as u64;
        rows.push((format!("shorten, {engine}"), created, first_rps));
        eprintln!("==> {engine}: warming the cache over {links} links");
        wrk(&base, &redirect, &[&links.to_string()], seconds.min(5), 64)?;
        let adjacent = measure_baseline(&format!("before {engine} redirects"))?;
        let adjacent_rps = adjacent.requests_per_sec;
        rows.push((
            format!("bare axum fixed 302 (baseline, before {engine} redirects)"),
            adjacent,
            adjacent_rps,
        ));
        eprintln!("==> {engine}: redirect over {links} links, warm cache");
        rows.push((
            format!("redirect (warm cache), {engine}"),
            wrk(&base, &redirect, &[&links.to_string()], seconds, 64)?,
            adjacent_rps,
        ));
        drop(server);
    }
    if let Some((_, pg_url)) = engines.iter().find(|(e, _)| *e == "postgres")
        && let Some(db) = pg_url.rsplit('/').next()
    {
        psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))?;
    }
    let _ = std::fs::remove_dir_all(&scripts);

    println!("\nwrk -t2 -c64 -d{seconds}s, same machine, same run; each redirect row is compared");
    println!("with the baseline measured just before it, shorten with the first baseline\n");
    println!("| workload | req/s | × baseline | p50 ms | p99 ms | non-2xx/3xx |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, s, reference_rps) in &rows {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            s.requests_per_sec,
            s.requests_per_sec / reference_rps,
            s.p50_ms,
            s.p99_ms,
            s.errors
        );
    }
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("girder-bench-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
