//! Statistics of one cgroup (hierarchical: the cgroup and everything below it), read from the
//! controller files of whichever version hosts each controller. Parsers are pure and tested on
//! fixtures of both versions.
//!
//! * CPU: v1 `cpuacct.usage` (ns); v2 `cpu.stat` `usage_usec`.
//! * Memory: v1 `memory.usage_in_bytes` + `memory.stat` `total_*` (the hierarchical fields);
//!   v2 `memory.current` + `memory.stat` (always hierarchical). Working set = usage −
//!   inactive_file, as cAdvisor and kubelet's eviction manager compute it.
//! * OOM kills: v2 `memory.events` `oom_kill` (hierarchical); v1 `memory.oom_control` `oom_kill`
//!   counts kills of the cgroup's own tasks only, so whether the limit was reached (failcnt, or
//!   the peak usage at the limit) is reported next to it.

use super::{CgroupVersion, Layout};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupStats {
    pub cpu_usage_nanos: Option<u64>,
    pub memory: Option<MemoryStats>,
    pub processes: u64,
    pub threads: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemoryStats {
    pub usage: u64,
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    /// The limit in bytes, None when unlimited.
    pub limit: Option<u64>,
}

/// OOM evidence of a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OomCounters {
    /// Processes killed by the OOM killer (v2: hierarchical; v1: the cgroup's own tasks).
    pub oom_kills: u64,
    /// v1 only: non-zero when the memory (or memory+swap) limit was reached.
    pub limit_hits: u64,
}

/// `key value` lines (cpu.stat, memory.stat, memory.events, memory.oom_control).
pub fn flat_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok()).flatten()
    })
}

/// A single-number file; "max" (v2) and v1's "unlimited" sentinel (≥ 2^62) are None.
pub fn single_value(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    t.parse::<u64>().ok().filter(|v| *v < (1u64 << 62))
}

/// Memory statistics from the usage file and memory.stat of either version.
pub fn memory_from(version: CgroupVersion, usage: &str, stat: &str, limit: &str) -> MemoryStats {
    let usage = single_value(usage).unwrap_or(0);
    let (inactive_file, rss, faults, major) = match version {
        CgroupVersion::V1 => ("total_inactive_file", "total_rss", "total_pgfault", "total_pgmajfault"),
        CgroupVersion::V2 => ("inactive_file", "anon", "pgfault", "pgmajfault"),
    };
    let get = |k| flat_keyed(stat, k).unwrap_or(0);
    MemoryStats {
        usage,
        working_set: usage.saturating_sub(get(inactive_file)),
        rss: get(rss),
        page_faults: get(faults),
        major_page_faults: get(major),
        limit: single_value(limit),
    }
}

/// CPU usage in nanoseconds from cpuacct.usage (v1) or cpu.stat (v2).
pub fn cpu_from(version: CgroupVersion, text: &str) -> Option<u64> {
    match version {
        CgroupVersion::V1 => text.trim().parse().ok(),
        CgroupVersion::V2 => flat_keyed(text, "usage_usec").map(|us| us * 1000),
    }
}

/// Read the statistics of cgroup `rel` (None when it does not exist).
pub fn read(layout: &Layout, rel: &str) -> Option<CgroupStats> {
    let memory_version = layout.version_of("memory");
    let memory_dir = layout.dir_of("memory", rel);
    if !memory_dir.as_ref().is_some_and(|d| d.is_dir()) && !layout.all_dirs(rel).iter().any(|d| d.is_dir()) {
        return None;
    }
    let cpu_usage_nanos = match layout.version_of("cpuacct").map(|_| CgroupVersion::V1).or(layout.version_of("cpu")) {
        Some(CgroupVersion::V1) => layout.read("cpuacct", rel, "cpuacct.usage").and_then(|t| cpu_from(CgroupVersion::V1, &t)),
        Some(CgroupVersion::V2) => layout.read("cpu", rel, "cpu.stat").and_then(|t| cpu_from(CgroupVersion::V2, &t)),
        // v2 reports cpu.stat usage even without the cpu controller enabled
        None => layout.unified_root().and_then(|u| std::fs::read_to_string(u.join(rel).join("cpu.stat")).ok()).and_then(|t| cpu_from(CgroupVersion::V2, &t)),
    };
    let memory = memory_version.and_then(|v| {
        let (usage, limit) = match v {
            CgroupVersion::V1 => ("memory.usage_in_bytes", "memory.limit_in_bytes"),
            CgroupVersion::V2 => ("memory.current", "memory.max"),
        };
        let usage = layout.read("memory", rel, usage)?;
        let stat = layout.read("memory", rel, "memory.stat").unwrap_or_default();
        let limit = layout.read("memory", rel, limit).unwrap_or_default();
        Some(memory_from(v, &usage, &stat, &limit))
    });
    Some(CgroupStats { cpu_usage_nanos, memory, processes: layout.procs(rel).len() as u64, threads: layout.threads(rel) })
}

/// The OOM counters of cgroup `rel`.
pub fn oom_counters(layout: &Layout, rel: &str) -> OomCounters {
    match layout.version_of("memory") {
        Some(CgroupVersion::V2) => OomCounters {
            oom_kills: layout.read("memory", rel, "memory.events").and_then(|t| flat_keyed(&t, "oom_kill")).unwrap_or(0),
            limit_hits: 0,
        },
        Some(CgroupVersion::V1) => {
            let num = |file: &str| layout.read("memory", rel, file).and_then(|t| single_value(&t));
            // failcnt stays 0 on 6.x kernels when the OOM killer resolves the charge (measured on
            // 6.18), so a peak usage that reached the limit counts as a hit too.
            let reached = |peak: &str, limit: &str| matches!((num(peak), num(limit)), (Some(p), Some(l)) if p >= l) as u64;
            OomCounters {
                oom_kills: layout.read("memory", rel, "memory.oom_control").and_then(|t| flat_keyed(&t, "oom_kill")).unwrap_or(0),
                limit_hits: num("memory.failcnt").unwrap_or(0)
                    + num("memory.memsw.failcnt").unwrap_or(0)
                    + reached("memory.max_usage_in_bytes", "memory.limit_in_bytes")
                    + reached("memory.memsw.max_usage_in_bytes", "memory.memsw.limit_in_bytes"),
            }
        }
        None => OomCounters::default(),
    }
}

/// Per-interface counters from `/proc/<pid>/net/dev` (proc(5)).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InterfaceCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

pub fn parse_net_dev(text: &str) -> Vec<InterfaceCounters> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let v: Vec<u64> = rest.split_whitespace().filter_map(|f| f.parse().ok()).collect();
            (v.len() >= 16).then(|| InterfaceCounters {
                name: name.trim().to_string(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_STAT: &str = "cache 4096\nrss 8192\ntotal_cache 12288\ntotal_rss 20480\ntotal_pgfault 300\ntotal_pgmajfault 2\ntotal_inactive_file 4096\n";
    const V2_STAT: &str = "anon 1048576\nfile 524288\ninactive_file 262144\npgfault 1234\npgmajfault 5\n";

    #[test]
    fn memory_v1_uses_hierarchical_totals() {
        let m = memory_from(CgroupVersion::V1, "65536\n", V1_STAT, "9223372036854771712\n");
        assert_eq!(m, MemoryStats { usage: 65536, working_set: 61440, rss: 20480, page_faults: 300, major_page_faults: 2, limit: None });
    }

    #[test]
    fn memory_v2() {
        let m = memory_from(CgroupVersion::V2, "2097152\n", V2_STAT, "67108864\n");
        assert_eq!(m, MemoryStats { usage: 2097152, working_set: 2097152 - 262144, rss: 1048576, page_faults: 1234, major_page_faults: 5, limit: Some(67108864) });
        assert_eq!(memory_from(CgroupVersion::V2, "1\n", "inactive_file 5\n", "max\n").working_set, 0);
    }

    #[test]
    fn cpu_both_versions() {
        assert_eq!(cpu_from(CgroupVersion::V1, "123456789\n"), Some(123456789));
        assert_eq!(cpu_from(CgroupVersion::V2, "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"), Some(1_500_000));
        assert_eq!(cpu_from(CgroupVersion::V2, "garbage"), None);
    }

    #[test]
    fn oom_events_fixture() {
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(flat_keyed(events, "oom_kill"), Some(1));
        let control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(flat_keyed(control, "oom_kill"), Some(3));
    }

    #[test]
    fn net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n  eth0: 5000 40 1 0 0 0 0 0 7000 50 3 0 0 0 0 0\n";
        let ifs = parse_net_dev(text);
        assert_eq!(ifs.len(), 2);
        assert_eq!(ifs[1], InterfaceCounters { name: "eth0".into(), rx_bytes: 5000, rx_errors: 1, tx_bytes: 7000, tx_errors: 3, rx_packets: 40, tx_packets: 50 });
    }
}
