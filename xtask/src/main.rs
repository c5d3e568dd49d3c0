//! `cargo xtask <task>`: the project's automation, in Rust so it runs wherever
//! cargo does.
//!
//! - `ci`: format check, the house rules (`tidy`), clippy with warnings denied, every test (nextest when
//!   installed, else `cargo test`), doc tests, then schemathesis against a live
//!   server's `/openapi.json` when schemathesis is installed (required under `CI=true`).
//! - `schemathesis`: only the last step.
//! - `tidy`: the house rules of ARCHITECTURE.md, checked on the source tree.
//! - `bench-http`: shorten/redirect throughput against a bare axum 302 with wrk.

mod bench_http;
mod tidy;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    let root = workspace_root()?;
    match task.as_str() {
        "ci" => ci(&root),
        "schemathesis" => schemathesis(&root),
        "tidy" => tidy::tidy(&root),
        "bench-http" => bench_http::bench_http(&root),
        _ => bail!("usage: cargo xtask <ci|tidy|schemathesis|bench-http>"),
    }
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).context("xtask has no parent directory")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn run(root: &Path, program: &str, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("\n==> {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("starting {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

fn has_nextest() -> bool {
    Command::new("cargo")
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ci(root: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    run(root, "cargo", &["fmt", "--all", "--check"])?;
    tidy::tidy(root)?;
    run(
        root,
        "cargo",
        &["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"],
    )?;
    if has_nextest() {
        run(root, "cargo", &["nextest", "run", "--workspace", "--all-features", "--no-fail-fast"])?;
    } else {
        eprintln!("cargo-nextest not installed; falling back to cargo test");
        run(root, "cargo", &["test", "--workspace", "--all-features", "--no-fail-fast"])?;
    }
    run(root, "cargo", &["test", "--workspace", "--all-features", "--doc"])?;
    schemathesis(root)?;
    eprintln!("\nci passed in {:.0?}", started.elapsed());
    Ok(())
}

/// Finds the schemathesis CLI: `st`, `schemathesis`, or the module through
/// `python3 -m schemathesis.cli` (for a pip install whose scripts are not on PATH).
fn schemathesis_cli() -> Option<Vec<&'static str>> {
    let candidates: [&[&'static str]; 3] =
        [&["st"], &["schemathesis"], &["python3", "-m", "schemathesis.cli"]];
    candidates.into_iter().map(<[&str]>::to_vec).find(|cli| {
        Command::new(cli[0])
            .args(&cli[1..])
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A demo operator token from the server at `bind`, through `POST /api/auth/demo`.
fn demo_operator_token(bind: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let body = r#"{"role":"operator"}"#;
    let mut stream = std::net::TcpStream::connect(bind).context("connecting for a token")?;
    write!(
        stream,
        "POST /api/auth/demo HTTP/1.1\r\nHost: {bind}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let token = reply
        .split("\"token\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .with_context(|| format!("no token in the sign-in reply: {reply}"))?;
    Ok(token.to_owned())
}

fn schemathesis(root: &Path) -> anyhow::Result<()> {
    let Some(cli) = schemathesis_cli() else {
        if in_ci() {
            bail!("CI=true but schemathesis is not installed (pip install schemathesis)");
        }
        eprintln!("SKIPPED schemathesis: not installed (pip install schemathesis)");
        return Ok(());
    };
    run(root, "cargo", &["build", "--package", "girder", "--bin", "girder"])?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let data = std::env::temp_dir().join(format!("girder-schemathesis-{port}"));
    let _ = std::fs::remove_dir_all(&data);
    let bind = format!("127.0.0.1:{port}");
    // Where cargo put the binary: `CARGO_TARGET_DIR` when set, else the workspace's.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), std::path::PathBuf::from);
    let server = Command::new(target.join("debug/girder"))
        .args(["serve", "--bind", &bind, "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "warn")
        .spawn()
        .context("starting girder serve")?;
    let _server = KillOnDrop(server);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&bind).is_err() {
        if Instant::now() > deadline {
            bail!("girder serve did not listen on {bind} within 30s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("http://{bind}/openapi.json");
    let examples = std::env::var("GIRDER_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "150".into());
    // Operations that need a caller are driven with an operator token (a demo one: the
    // server runs without an operator password); schemathesis also checks that they
    // refuse requests without it.
    let authorization = format!("Authorization: Bearer {}", demo_operator_token(&bind)?);
    let mut args: Vec<&str> = cli[1..].to_vec();
    args.extend([
        "run",
        &url,
        "--checks",
        "all",
        // Schema-valid requests the server still refuses with 422, for rules a JSON
        // schema cannot state (distinct items, cross-field numbers, an integer sent as
        // 1.0): listed in README.md under "Targets not yet met".
        "--exclude-checks",
        "positive_data_acceptance",
        // Event streams never end and WebSockets are not request and response, so a
        // request-and-response checker cannot drive them; their behaviour is tested in
        // the systems' own suites.
        "--exclude-path-regex",
        "/stream$|/ws$",
        "--max-examples",
        &examples,
        "--workers",
        "2",
        "--header",
        &authorization,
    ]);
    let mut result = run_capturing(root, cli[0], &args);
    // Schemathesis sometimes fails inside itself (a Hypothesis introspection error,
    // reported as "Runtime Error" with no check failing). That says nothing about the
    // API, so such a run is repeated once; any failed check fails at once.
    if let Err((_, output)) = &result
        && output.contains("Runtime Error")
        && !output.contains("Failures:")
    {
        eprintln!("\n==> schemathesis failed inside itself, not on the API: running it once more");
        result = run_capturing(root, cli[0], &args);
    }
    let _ = std::fs::remove_dir_all(&data);
    result.map_err(|(e, _)| e)
}

/// Runs `program`, echoing its output as it comes, and keeps the output for a failure.
fn run_capturing(root: &Path, program: &str, args: &[&str]) -> Result<(), (anyhow::Error, String)> {
    use std::io::BufRead;
    eprintln!("\n==> {program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .current_dir(root)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            (anyhow::Error::from(e).context(format!("starting {program}")), String::new())
        })?;
    let mut output = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            output.push_str(&line);
            output.push('\n');
        }
    }
    let status = child.wait().map_err(|e| (anyhow::Error::from(e), output.clone()))?;
    if status.success() {
        Ok(())
    } else {
        Err((anyhow::anyhow!("`{program} {}` failed with {status}", args.join(" ")), output))
    }
}
