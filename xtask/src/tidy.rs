//! `cargo xtask tidy`: the house rules of ARCHITECTURE.md, checked on the source tree.
//! Each failure names the file that breaks a rule and the rule.
//!
//! - Systems never depend on each other.
//! - In a system crate, only the HTTP module (`src/api.rs`, or `src/api/` when it has
//!   submodules, such as a WebSocket session) names axum; domain modules
//!   never see HTTP (`lib.rs` wires the system through `girder_system`'s types).
//! - Pattern crates never depend on HTTP crates, and reach sqlx, redis and async-nats
//!   only behind a cargo feature (`optional = true`).
//! - Every system in the binary's list has a dashboard page, an OpenAPI document and
//!   a row in the README's systems table.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Crates under `crates/` that are not pattern crates.
const NOT_PATTERNS: &[&str] =
    &["girder", "girder-http", "girder-sql", "girder-system", "girder-testkit", "girder-bench"];

/// Engine drivers a pattern crate may only use behind a feature.
const DRIVERS: &[&str] = &["sqlx", "redis", "async-nats"];

/// Crates that speak HTTP, which pattern crates never depend on.
const HTTP: &[&str] = &["axum", "tower-http", "hyper", "girder-http", "girder-system"];

pub(crate) fn tidy(root: &Path) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let systems = system_crates(root)?;
    for system in &systems {
        check_system(root, system, &systems, &mut problems)?;
    }
    for krate in pattern_crates(root)? {
        check_pattern_crate(root, &krate, &mut problems)?;
    }
    check_list(root, &systems, &mut problems)?;
    if problems.is_empty() {
        eprintln!("tidy: {} systems and the pattern crates keep the house rules", systems.len());
        return Ok(());
    }
    for problem in &problems {
        eprintln!("tidy: {problem}");
    }
    bail!("{} house rule(s) broken (see ARCHITECTURE.md, \"Invariants\")", problems.len())
}

fn dirs(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    out.sort();
    Ok(out)
}

fn system_crates(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    dirs(&root.join("crates/systems"))
}

fn pattern_crates(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    Ok(dirs(&root.join("crates"))?
        .into_iter()
        .filter(|p| {
            let name = file_name(p);
            name.starts_with("girder") && !NOT_PATTERNS.contains(&name.as_str())
        })
        .collect())
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}

fn manifest(dir: &Path) -> anyhow::Result<toml::Table> {
    let path = dir.join("Cargo.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The `[dependencies]` table, plus `[dev-dependencies]` when `dev`.
fn dependencies(manifest: &toml::Table, dev: bool) -> Vec<(String, toml::Value)> {
    let tables: &[&str] =
        if dev { &["dependencies", "dev-dependencies"] } else { &["dependencies"] };
    tables
        .iter()
        .filter_map(|t| manifest.get(*t).and_then(toml::Value::as_table))
        .flat_map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())))
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

fn check_system(
    root: &Path,
    dir: &Path,
    systems: &[PathBuf],
    problems: &mut Vec<String>,
) -> anyhow::Result<()> {
    let name = file_name(dir);
    let toml_path = relative(root, &dir.join("Cargo.toml"));
    let manifest = manifest(dir)?;
    for (dep, _) in dependencies(&manifest, true) {
        if dep != name && systems.iter().any(|s| file_name(s) == dep) {
            problems.push(format!("{toml_path}: depends on the system {dep}; systems never depend on each other (share through a pattern crate or girder-http/girder-sql)"));
        }
    }
    let mut files = Vec::new();
    rust_files(&dir.join("src"), &mut files)?;
    for file in files {
        let http_module = file.file_name().is_some_and(|n| n == "api.rs")
            || file.strip_prefix(dir.join("src").join("api")).is_ok();
        if http_module {
            continue;
        }
        let text = std::fs::read_to_string(&file)?;
        if text.lines().any(|l| !l.trim_start().starts_with("//") && l.contains("axum")) {
            problems.push(format!(
                "{}: names axum; in a system crate only the HTTP module (src/api.rs or src/api/) may",
                relative(root, &file)
            ));
        }
    }
    let assets = dir.join("assets");
    let has_page = assets.is_dir()
        && std::fs::read_dir(&assets)?
            .filter_map(Result::ok)
            .any(|e| e.path().extension().is_some_and(|x| x == "html"));
    if !has_page {
        problems.push(format!("{}: no dashboard page (assets/*.html)", relative(root, dir)));
    }
    let api =
        [dir.join("src/api.rs"), dir.join("src/api/mod.rs")].into_iter().find(|p| p.is_file());
    let has_openapi = match api {
        Some(api) => std::fs::read_to_string(&api)?.contains("#[derive(OpenApi)]"),
        None => false,
    };
    if !has_openapi {
        problems.push(format!(
            "{}: no OpenAPI document (#[derive(OpenApi)] in src/api.rs or src/api/mod.rs)",
            relative(root, dir)
        ));
    }
    Ok(())
}

fn check_pattern_crate(root: &Path, dir: &Path, problems: &mut Vec<String>) -> anyhow::Result<()> {
    let toml_path = relative(root, &dir.join("Cargo.toml"));
    let manifest = manifest(dir)?;
    for (dep, spec) in dependencies(&manifest, false) {
        if HTTP.contains(&dep.as_str()) {
            problems.push(format!("{toml_path}: depends on {dep}; pattern crates never see HTTP"));
        }
        let optional = spec.get("optional").and_then(toml::Value::as_bool).unwrap_or(false);
        if DRIVERS.contains(&dep.as_str()) && !optional {
            problems.push(format!(
                "{toml_path}: depends on {dep} unconditionally; a pattern crate reaches an engine only behind a feature (optional = true)"
            ));
        }
    }
    Ok(())
}

/// The slug a system crate declares in its `SystemInfo`.
fn slug(dir: &Path) -> anyhow::Result<Option<String>> {
    let lib = std::fs::read_to_string(dir.join("src/lib.rs"))?;
    Ok(lib.split("slug: \"").nth(1).and_then(|rest| rest.split('"').next()).map(str::to_owned))
}

fn check_list(root: &Path, systems: &[PathBuf], problems: &mut Vec<String>) -> anyhow::Result<()> {
    let list_path = root.join("crates/girder/src/systems.rs");
    let list = std::fs::read_to_string(&list_path)?;
    let readme = std::fs::read_to_string(root.join("README.md"))?;
    let systems_table: Vec<&str> = readme
        .split("## Systems")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .collect();
    for dir in systems {
        let krate = file_name(dir).replace('-', "_");
        if !list.contains(&format!("Live::<{krate}::")) {
            problems.push(format!(
                "{}: {} is not in the list of systems",
                relative(root, &list_path),
                file_name(dir)
            ));
        }
        let Some(slug) = slug(dir)? else {
            problems.push(format!(
                "{}: no `slug` in its SystemInfo",
                relative(root, &dir.join("src/lib.rs"))
            ));
            continue;
        };
        let row = systems_table.iter().find(|l| l.contains(&format!("`/api/{slug}`")));
        if !row.is_some_and(|r| r.contains("live")) {
            problems
                .push(format!("README.md: the systems table has no live row for `/api/{slug}`"));
        }
    }
    Ok(())
}
