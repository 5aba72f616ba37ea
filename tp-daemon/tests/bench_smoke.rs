//! `tp-daemon bench` runs end to end on a small scale and prints the JSON
//! lines it promises. This checks the command works, never how fast
//! anything is (see docs/performance.md for the figures).

mod common;

use common::*;
use serde_json::Value;

#[test]
fn bench_runs_and_prints_every_figure() {
    let tp = TestTp::new();
    let out = Cli::new("tp-daemon")
        .args(["bench", "--config"])
        .arg(&tp.config)
        .args([
            "--seconds",
            "0.5",
            "--concurrency",
            "1,4",
            "--exchanges",
            "200",
            "--big-mb",
            "4",
            "--idle-connections",
            "50",
            "--pairs",
            "3",
            // Enough parties that none exceeds the per-identity rate limit
            // (10/s) when the pairs and the paced runs follow each other on
            // a fast machine.
            "--identities",
            "400",
            "--allow-root",
        ])
        .env("RUST_LOG", "warn")
        .run();
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert_eq!(out.status, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");

    let figures: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let named =
        |name: &str| -> Vec<&Value> { figures.iter().filter(|f| f["name"] == name).collect() };
    for f in &figures {
        assert!(f["name"].is_string(), "{f}");
        assert!(
            f.get("ops_per_s").is_some() || f["name"] == "ratio_claim_e2e_to_device_raw",
            "{f}"
        );
    }
    // device_raw at 1 and N threads.
    let raw = named("device_raw");
    assert_eq!(raw.len(), 2, "{stdout}");
    assert_eq!(raw[0]["threads"], 1);
    for f in &raw {
        assert!(f["ops_per_s"].as_f64().unwrap() > 0.0, "{f}");
    }
    // claim_e2e at each level, with latencies and no errors.
    let e2e = named("claim_e2e");
    assert_eq!(e2e.len(), 2, "{stdout}");
    for (f, c) in e2e.iter().zip([1, 4]) {
        assert_eq!(f["concurrency"], c, "{f}");
        assert!(f["ops_per_s"].as_f64().unwrap() > 0.0, "{f}");
        assert!(f["p50_ms"].as_f64().unwrap() > 0.0, "{f}");
        assert!(f["p99_ms"].as_f64().unwrap() >= f["p50_ms"].as_f64().unwrap());
        assert_eq!(f["errors"], 0, "{f}");
        // Read from the daemon's /metrics: every claim was committed, in
        // at least one record per commit.
        assert!(f["records_per_commit"].as_f64().unwrap() >= 1.0, "{f}");
    }
    // The paced (open-loop) runs at the highest concurrency, one per load.
    let paced = named("claim_e2e_paced");
    assert_eq!(paced.len(), 2, "{stdout}");
    for (f, load) in paced.iter().zip([0.5, 0.8]) {
        assert_eq!(f["concurrency"], 4, "{f}");
        assert_eq!(f["load"].as_f64().unwrap(), load, "{f}");
        assert!(f["offered_per_s"].as_f64().unwrap() > 0.0, "{f}");
        assert!(f["ops_per_s"].as_f64().unwrap() > 0.0, "{f}");
        assert!(f["p99_ms"].as_f64().unwrap() >= f["p50_ms"].as_f64().unwrap());
        assert_eq!(f["errors"], 0, "{f}");
    }
    let vis = named("tp_visible_vs_invisible");
    assert_eq!(vis.len(), 1, "{stdout}");
    assert_eq!(vis[0]["visible_tp_device_ops"], 200);
    assert_eq!(vis[0]["vtp_tp_device_ops"], 2);
    assert!(vis[0]["visible_tp_cpu_s"].as_f64().unwrap() > 0.0);
    assert_eq!(named("optimistic_exchange").len(), 1, "{stdout}");
    assert!(named("client_send_big")[0]["mb_per_s"].as_f64().unwrap() > 0.0);
    assert!(named("client_open_big")[0]["mb_per_s"].as_f64().unwrap() > 0.0);
    let idle = named("daemon_rss_idle_1000");
    assert_eq!(idle.len(), 1, "{stdout}");
    assert_eq!(idle[0]["idle_connections"], 50);
    assert!(idle[0]["rss_kib"].as_u64().unwrap() > 0);
    // Three alternating device_raw / claim_e2e pairs, at the best level.
    let pairs = named("ratio_pair");
    assert_eq!(pairs.len(), 3, "{stdout}");
    for (k, f) in pairs.iter().enumerate() {
        assert_eq!(f["pair"], k + 1, "{f}");
        assert!(f["ratio"].as_f64().unwrap() > 0.0, "{f}");
        assert!(f["cpu_ratio"].as_f64().unwrap() > 0.0, "{f}");
        assert_eq!(f["errors"], 0, "{f}");
    }
    // The ratio comes last: the median of the pairs, with its range.
    let last = figures.last().unwrap();
    assert_eq!(last["name"], "ratio_claim_e2e_to_device_raw", "{stdout}");
    assert_eq!(last["pairs"], 3, "{last}");
    let mut ratios: Vec<f64> = pairs.iter().map(|f| f["ratio"].as_f64().unwrap()).collect();
    ratios.sort_by(f64::total_cmp);
    assert_eq!(
        last["value"].as_f64().unwrap(),
        ratios[1],
        "the median pair: {last}"
    );
    assert_eq!(last["min"].as_f64().unwrap(), ratios[0], "{last}");
    assert_eq!(last["max"].as_f64().unwrap(), ratios[2], "{last}");
    // The readable table is on stderr, and the throwaway daemon is gone
    // (the operator's journal was not touched: no claims in it).
    assert!(stderr.contains("figure"), "{stderr}");
    assert_eq!(tp.journal_stats(), (0, 0, 0));
}
