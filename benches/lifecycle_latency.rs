//! Pod and container lifecycle latency of cri-lxc, driven over its socket with the same CRI client
//! and fixtures as the integration tests (a real registry on 127.0.0.1, a busybox image built in Rust,
//! the real daemon binary). Prints median and p95 per phase; asserts nothing.
//!
//! `cargo bench --bench lifecycle_latency` (ITERATIONS env var, default 20, after 3 warm-ups).
//! The side-by-side comparison with containerd is the benchmark milestone's job; this measures
//! cri-lxc alone.

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::pods::Fixture;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn report(name: &str, samples: &mut [Duration]) {
    samples.sort();
    println!(
        "| {name:<38} | {:>9.1} | {:>9.1} | {:>4} |",
        percentile(samples, 0.5).as_secs_f64() * 1e3,
        percentile(samples, 0.95).as_secs_f64() * 1e3,
        samples.len()
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo bench` passes `--bench`; there are no other options.
    let iterations: usize = std::env::var("ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let fx = Fixture::start_with_config("log_level = \"warn\"\n").await;
    let (mut run, mut create_start, mut stop_remove, mut pod_down, mut exec) = (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..iterations + 3 {
        let pod = fx.pod_config(&format!("bench-{i}"));
        let t = Instant::now();
        let pod_id = fx.run_pod(&pod).await;
        let t_run = t.elapsed();

        let config = fx.container_config("app", &["sleep", "1000"]);
        let t = Instant::now();
        let id = fx.create_and_start(&pod_id, &pod, config).await;
        let t_create_start = t.elapsed();

        let t = Instant::now();
        let out = fx.exec_ok(&id, &["true"]).await;
        let t_exec = t.elapsed();
        assert_eq!(out.code, 0, "ExecSync true failed: {out:?}");

        let t = Instant::now();
        fx.stop_ok(&id, 0).await;
        fx.remove_ok(&id).await;
        let t_stop_remove = t.elapsed();

        let t = Instant::now();
        fx.teardown_pod(&pod_id).await;
        let t_pod_down = t.elapsed();

        if i >= 3 {
            run.push(t_run);
            create_start.push(t_create_start);
            exec.push(t_exec);
            stop_remove.push(t_stop_remove);
            pod_down.push(t_pod_down);
        }
    }
    println!("cri-lxc lifecycle latency, {iterations} iterations after 3 warm-ups (ms)\n");
    println!("| {:<38} | {:>9} | {:>9} | {:>4} |", "phase", "median", "p95", "n");
    println!("|{:-<40}|{:->11}|{:->11}|{:->6}|", "", "", "", "");
    report("RunPodSandbox", &mut run);
    report("CreateContainer + StartContainer", &mut create_start);
    report("ExecSync `true`", &mut exec);
    report("StopContainer(0) + RemoveContainer", &mut stop_remove);
    report("StopPodSandbox + RemovePodSandbox", &mut pod_down);
    fx.assert_no_leaks().await;
}
