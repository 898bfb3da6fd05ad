//! Per-phase timings of the pod-start RPCs, logged as one debug line per call under the tracing target
//! `cri_lxc::timing` (enable with e.g. `--log-level info,cri_lxc::timing=debug`). The benchmark reads
//! them to show where pod-start time goes: `rpc=… id=… total_ms=… phases=name:ms,name:ms,…`.

use std::time::{Duration, Instant};

pub(crate) struct PhaseTimer {
    rpc: &'static str,
    started: Instant,
    last: Instant,
    phases: Vec<(&'static str, Duration)>,
}

impl PhaseTimer {
    pub(crate) fn new(rpc: &'static str) -> PhaseTimer {
        let now = Instant::now();
        PhaseTimer { rpc, started: now, last: now, phases: Vec::new() }
    }

    /// The phase that just ended.
    pub(crate) fn mark(&mut self, phase: &'static str) {
        let now = Instant::now();
        self.phases.push((phase, now - self.last));
        self.last = now;
    }

    pub(crate) fn finish(self, id: &str) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let phases: Vec<String> = self.phases.iter().map(|(p, d)| format!("{p}:{:.3}", ms(*d))).collect();
        tracing::debug!(
            target: "cri_lxc::timing",
            rpc = self.rpc,
            id,
            total_ms = format!("{:.3}", ms(self.started.elapsed())).as_str(),
            phases = phases.join(",").as_str(),
            "timing"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_partition_the_total() {
        let mut t = PhaseTimer::new("X");
        std::thread::sleep(Duration::from_millis(2));
        t.mark("a");
        t.mark("b");
        let sum: Duration = t.phases.iter().map(|(_, d)| *d).sum();
        assert!(sum <= t.started.elapsed());
        assert_eq!(t.phases.iter().map(|(p, _)| *p).collect::<Vec<_>>(), vec!["a", "b"]);
        assert!(t.phases[0].1 >= Duration::from_millis(2));
    }
}
