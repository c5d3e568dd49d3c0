//! `girder lab`: the registry, the files a run writes, and clear errors for
//! bad experiment names.

use std::process::Command;

use girder::lab::{self, LabOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_quick_run_writes_a_table_results_and_a_plot() {
    let out = tempfile::tempdir().expect("dir");
    let options = LabOptions { quick: true, postgres_url: None, out_dir: out.path().to_owned() };
    let experiment = lab::find("ids").expect("registered");
    let dir = lab::run(experiment, options).await.expect("run");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("results.json")).expect("results.json"))
            .expect("json");
    assert_eq!(results["experiment"], "ids");
    let rows = results["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 4, "one row per id scheme");
    // Text lengths are facts of the encodings: 7 fixed, 22 for 128 bits; a Snowflake's
    // minimal base62 grows with the time since its epoch (10 digits until about 2030, then 11).
    let lengths: Vec<&str> = rows.iter().map(|r| r[1].as_str().expect("cell")).collect();
    assert_eq!((lengths[0], lengths[2], lengths[3]), ("7", "22", "22"));
    assert!(matches!(lengths[1], "10" | "11"), "{lengths:?}");
    let series = results["plot"]["series"].as_array().expect("series");
    assert_eq!(series.len(), 4);
    for s in series {
        let points = s["points"].as_array().expect("points");
        assert_eq!(points.len(), 6);
        assert!(points.iter().all(|p| p[1].as_f64().is_some_and(|rate| rate > 0.0)));
    }
    let svg = std::fs::read_to_string(dir.join("plot.svg")).expect("plot.svg");
    assert!(svg.contains("uuid v4 (sqlite)") && svg.contains("</svg>"));
}

#[test]
fn list_names_every_experiment_and_bad_names_fail_clearly() {
    let bin = env!("CARGO_BIN_EXE_girder");
    let list = Command::new(bin).args(["lab", "list"]).output().expect("run");
    assert!(list.status.success());
    let text = String::from_utf8_lossy(&list.stdout);
    for experiment in lab::EXPERIMENTS {
        assert!(text.lines().any(|l| l.starts_with(experiment.name)), "{text}");
    }
    let bad = Command::new(bin).args(["lab", "no-such-thing"]).output().expect("run");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("no experiment named \"no-such-thing\"") && err.contains("ids"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
