//! Pod and container lifecycle latency of cri-lxc, driven over its socket with the same CRI client
//! and fixtures as the integration tests (a real registry on 127.0.0.1, a busybox image built in Rust,
//! the real daemon binary). Prints median and p95 per phase; asserts nothing.
//!
//! Two network setups: Debian's `loopback` CNI plugin alone, and a private test bridge with
//! `host-local` IPAM (no default route, no NAT); the RunPodSandbox difference is the bridge's CNI cost.
//!
//! `cargo bench --bench lifecycle_latency` (ITERATIONS env var, default 20, after 3 warm-ups).
//! The side-by-side comparison with containerd is `benches/compare.rs`; this measures
//! cri-lxc alone.

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::network::TestNet;
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

struct Samples {
    run: Vec<Duration>,
    create_start: Vec<Duration>,
    exec: Vec<Duration>,
    stop_remove: Vec<Duration>,
    pod_down: Vec<Duration>,
}

async fn measure(fx: &Fixture, iterations: usize) -> Samples {
    let mut s = Samples { run: vec![], create_start: vec![], exec: vec![], stop_remove: vec![], pod_down: vec![] };
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
            s.run.push(t_run);
            s.create_start.push(t_create_start);
            s.exec.push(t_exec);
            s.stop_remove.push(t_stop_remove);
            s.pod_down.push(t_pod_down);
        }
    }
    s
}

fn table(title: &str, s: &mut Samples) {
    println!("\n{title}\n");
    println!("| {:<38} | {:>9} | {:>9} | {:>4} |", "phase", "median", "p95", "n");
    println!("|{:-<40}|{:->11}|{:->11}|{:->6}|", "", "", "", "");
    report("RunPodSandbox", &mut s.run);
    report("CreateContainer + StartContainer", &mut s.create_start);
    report("ExecSync `true`", &mut s.exec);
    report("StopContainer(0) + RemoveContainer", &mut s.stop_remove);
    report("StopPodSandbox + RemovePodSandbox", &mut s.pod_down);
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let iterations: usize = std::env::var("ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    println!("cri-lxc lifecycle latency, {iterations} iterations after 3 warm-ups (ms)");
    {
        let fx = Fixture::start_with_config("log_level = \"warn\"\n").await;
        let mut s = measure(&fx, iterations).await;
        table("CNI: loopback plugin only", &mut s);
        fx.assert_no_leaks().await;
    }
    {
        let net = TestNet::new();
        net.write_bridge_conflist();
        // The test net's config logs at debug level; measure at warn like the loopback run.
        let config = net.daemon_config().replace("log_level = \"debug\"", "log_level = \"warn\"");
        let fx = Fixture::start_with_config(&config).await;
        let mut s = measure(&fx, iterations).await;
        table("CNI: bridge + host-local on a private test bridge", &mut s);
        fx.assert_no_leaks().await;
    }
}
