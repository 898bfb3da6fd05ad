//! Resource limits: the runtime's form of CRI `LinuxContainerResources`, its validation, and its
//! rendering into cgroup file writes for cgroup v1 and v2 (a pure function, unit-tested for both).
//!
//! Which version a controller is rendered for is decided per controller by the caller: on a
//! hybrid host (this CI machine) the v1 hierarchies hold cpu/memory/cpuset and the unified one
//! may hold others (hugetlb here). Conversions follow the kernel's documentation of each file
//! (Documentation/admin-guide/cgroup-v1/*.rst, cgroup-v2.rst) and the OCI runtime spec's v1→v2
//! mapping (runtime-spec config-linux.md, "unified"; shares → weight as crun/runc convert).

use std::collections::BTreeMap;

use super::{CgroupError, CgroupVersion};

/// `LinuxContainerResources` with CRI's "0 = not specified" made explicit where it matters.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ResourceSpec {
    /// CFS period in µs; 0 = unset.
    pub cpu_period: i64,
    /// CFS quota in µs; 0 = unset, -1 = unlimited.
    pub cpu_quota: i64,
    /// Relative CPU weight in v1 shares (2..262144); 0 = unset.
    pub cpu_shares: i64,
    /// Bytes; 0 = unset.
    pub memory_limit: i64,
    /// Memory + swap in bytes (v1 `memsw` semantics); 0 = unset, -1 = unlimited.
    pub memory_swap_limit: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    pub hugepage_limits: Vec<HugepageLimit>,
    /// cgroup v2 files written verbatim (`memory.high` = "…").
    pub unified: BTreeMap<String, String>,
    /// Applied to the container's first process (liblxc `lxc.proc.oom_score_adj`), inherited by
    /// its children. None = leave the inherited value.
    pub oom_score_adj: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HugepageLimit {
    /// "2MB", "1GB" (the suffix of the hugetlb files).
    pub page_size: String,
    pub limit: u64,
}

/// One write to a cgroup file of the container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub version: CgroupVersion,
    /// The controller whose hierarchy holds the file (v1) / which must be enabled (v2).
    pub controller: String,
    pub file: String,
    pub value: String,
}

/// Host facts validation needs (read by the caller, passed in to keep this pure).
#[derive(Debug, Clone, Default)]
pub struct HostLimits {
    /// CPUs and memory nodes that exist (`/sys/devices/system/{cpu,node}/online`).
    pub online_cpus: Vec<u32>,
    pub online_mems: Vec<u32>,
    /// Huge page sizes the kernel supports, as "2MB".
    pub hugepage_sizes: Vec<String>,
}

fn invalid(msg: impl Into<String>) -> CgroupError {
    CgroupError::Invalid(msg.into())
}

/// Parse a kernel cpu list ("0-3,5", cpuset(7) "List format").
pub fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?),
            None => {
                let n = part.trim().parse::<u32>().ok()?;
                (n, n)
            }
        };
        if a > b || b - a > 65536 {
            return None;
        }
        out.extend(a..=b);
    }
    Some(out)
}

/// `2MB` → bytes (page sizes as hugetlb names them: KB, MB, GB).
fn page_size_bytes(s: &str) -> Option<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    (n > 0).then_some(n * mult)
}

/// Files of the unified map that would move processes or reshape the tree: never client-writable.
const UNIFIED_FORBIDDEN: &[&str] = &["cgroup.procs", "cgroup.threads", "cgroup.subtree_control", "cgroup.type", "cgroup.kill"];

impl ResourceSpec {
    /// Reject what cannot be applied, before anything is created. `unified_controllers` are the
    /// controllers of the unified hierarchy (v2 `cgroup.controllers` of its root).
    pub fn validate(&self, host: &HostLimits, unified_controllers: &[String]) -> Result<(), CgroupError> {
        if self.cpu_period != 0 && !(1000..=1_000_000).contains(&self.cpu_period) {
            return Err(invalid(format!("cpu_period {} µs is outside 1000..1000000 (kernel CFS bounds)", self.cpu_period)));
        }
        if self.cpu_quota < -1 || (self.cpu_quota > 0 && self.cpu_quota < 1000) {
            return Err(invalid(format!("cpu_quota {} µs must be -1, 0 or at least 1000", self.cpu_quota)));
        }
        if self.cpu_shares != 0 && !(2..=262_144).contains(&self.cpu_shares) {
            return Err(invalid(format!("cpu_shares {} is outside 2..262144", self.cpu_shares)));
        }
        if self.memory_limit < 0 {
            return Err(invalid(format!("memory_limit_in_bytes {} is negative", self.memory_limit)));
        }
        if self.memory_swap_limit < -1 {
            return Err(invalid(format!("memory_swap_limit_in_bytes {} must be -1, 0 or positive", self.memory_swap_limit)));
        }
        if self.memory_swap_limit > 0 && self.memory_swap_limit < self.memory_limit {
            return Err(invalid(format!(
                "memory_swap_limit_in_bytes {} (memory + swap) is below memory_limit_in_bytes {}",
                self.memory_swap_limit, self.memory_limit
            )));
        }
        if self.memory_swap_limit > 0 && self.memory_limit == 0 {
            return Err(invalid("memory_swap_limit_in_bytes needs memory_limit_in_bytes"));
        }
        for (name, value, online) in [("cpuset_cpus", &self.cpuset_cpus, &host.online_cpus), ("cpuset_mems", &self.cpuset_mems, &host.online_mems)] {
            if value.trim().is_empty() {
                continue;
            }
            let list = parse_cpu_list(value).ok_or_else(|| invalid(format!("{name} {value:?} is not a list like \"0-2,4\"")))?;
            if let Some(missing) = list.iter().find(|n| !online.contains(n)) {
                return Err(invalid(format!("{name} {value:?}: {missing} does not exist on this host (online: {online:?})")));
            }
        }
        if let Some(adj) = self.oom_score_adj {
            if !(-1000..=1000).contains(&adj) {
                return Err(invalid(format!("oom_score_adj {adj} is outside -1000..1000")));
            }
        }
        for h in &self.hugepage_limits {
            if page_size_bytes(&h.page_size).is_none() || !host.hugepage_sizes.contains(&h.page_size) {
                return Err(invalid(format!("hugepage page_size {:?} is not one of this host's sizes {:?}", h.page_size, host.hugepage_sizes)));
            }
        }
        for (key, value) in &self.unified {
            let Some((controller, file)) = key.split_once('.') else {
                return Err(invalid(format!("unified key {key:?} is not <controller>.<file>")));
            };
            let well_formed = !file.is_empty()
                && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
                && !value.contains('\n');
            if !well_formed || UNIFIED_FORBIDDEN.contains(&key.as_str()) {
                return Err(invalid(format!("unified key {key:?} cannot be set")));
            }
            if controller != "cgroup" && !unified_controllers.iter().any(|c| c == controller) {
                return Err(invalid(format!(
                    "unified key {key:?}: controller {controller:?} is not on this host's cgroup v2 hierarchy (available: {unified_controllers:?})"
                )));
            }
        }
        Ok(())
    }

    /// The writes that apply these limits, each for the version `version_of(controller)` says the
    /// controller is mounted as (None: not available → error if a limit needs it).
    pub fn render(&self, version_of: &dyn Fn(&str) -> Option<CgroupVersion>) -> Result<Vec<Setting>, CgroupError> {
        let mut out = Vec::new();
        let need = |controller: &str| version_of(controller).ok_or_else(|| invalid(format!("the {controller} cgroup controller is not available on this host")));
        let mut push = |version: CgroupVersion, controller: &str, file: String, value: String| {
            out.push(Setting { version, controller: controller.to_string(), file, value })
        };

        if self.cpu_shares != 0 || self.cpu_quota != 0 || self.cpu_period != 0 {
            match need("cpu")? {
                CgroupVersion::V1 => {
                    if self.cpu_shares != 0 {
                        push(CgroupVersion::V1, "cpu", "cpu.shares".into(), self.cpu_shares.to_string());
                    }
                    // Period first: the kernel checks quota against the current period.
                    if self.cpu_period != 0 {
                        push(CgroupVersion::V1, "cpu", "cpu.cfs_period_us".into(), self.cpu_period.to_string());
                    }
                    if self.cpu_quota != 0 {
                        push(CgroupVersion::V1, "cpu", "cpu.cfs_quota_us".into(), self.cpu_quota.to_string());
                    }
                }
                CgroupVersion::V2 => {
                    if self.cpu_shares != 0 {
                        push(CgroupVersion::V2, "cpu", "cpu.weight".into(), shares_to_weight(self.cpu_shares).to_string());
                    }
                    if self.cpu_quota != 0 || self.cpu_period != 0 {
                        // cpu.max is "$MAX $PERIOD" (cgroup-v2.rst); an unset period keeps the default 100000.
                        let quota = if self.cpu_quota > 0 { self.cpu_quota.to_string() } else { "max".into() };
                        let period = if self.cpu_period > 0 { self.cpu_period } else { 100_000 };
                        push(CgroupVersion::V2, "cpu", "cpu.max".into(), format!("{quota} {period}"));
                    }
                }
            }
        }
        for (file, value) in [("cpuset.cpus", &self.cpuset_cpus), ("cpuset.mems", &self.cpuset_mems)] {
            if !value.trim().is_empty() {
                let v = need("cpuset")?;
                push(v, "cpuset", file.into(), value.trim().to_string());
            }
        }
        if self.memory_limit > 0 || self.memory_swap_limit != 0 {
            match need("memory")? {
                CgroupVersion::V1 => {
                    if self.memory_limit > 0 {
                        push(CgroupVersion::V1, "memory", "memory.limit_in_bytes".into(), self.memory_limit.to_string());
                    }
                    if self.memory_swap_limit != 0 {
                        push(CgroupVersion::V1, "memory", "memory.memsw.limit_in_bytes".into(), self.memory_swap_limit.to_string());
                    }
                }
                CgroupVersion::V2 => {
                    if self.memory_limit > 0 {
                        push(CgroupVersion::V2, "memory", "memory.max".into(), self.memory_limit.to_string());
                    }
                    // v2 limits swap alone: memsw - memory (OCI runtime-spec's conversion).
                    match self.memory_swap_limit {
                        -1 => push(CgroupVersion::V2, "memory", "memory.swap.max".into(), "max".into()),
                        s if s > 0 => push(CgroupVersion::V2, "memory", "memory.swap.max".into(), (s - self.memory_limit).to_string()),
                        _ => {}
                    }
                }
            }
        }
        for h in &self.hugepage_limits {
            let v = need("hugetlb")?;
            let file = match v {
                CgroupVersion::V1 => format!("hugetlb.{}.limit_in_bytes", h.page_size),
                CgroupVersion::V2 => format!("hugetlb.{}.max", h.page_size),
            };
            push(v, "hugetlb", file, h.limit.to_string());
        }
        for (key, value) in &self.unified {
            let controller = key.split_once('.').map(|(c, _)| c).unwrap_or(key);
            push(CgroupVersion::V2, controller, key.clone(), value.clone());
        }
        Ok(out)
    }

    /// Memory limit clamped to `parent_limit` (a child is never given more than its pod).
    pub fn clamp_memory_to(&mut self, parent_limit: Option<i64>) -> bool {
        match parent_limit {
            Some(p) if p > 0 && (self.memory_limit == 0 || self.memory_limit > p) => {
                self.memory_limit = p;
                if self.memory_swap_limit > 0 && self.memory_swap_limit < p {
                    self.memory_swap_limit = p;
                }
                true
            }
            _ => false,
        }
    }
}

/// v1 shares (2..262144, default 1024) → v2 weight (1..10000, default 100), the linear map of the
/// two ranges that crun, runc and kubelet all use.
pub fn shares_to_weight(shares: i64) -> u64 {
    let shares = shares.clamp(2, 262_144) as u64;
    1 + ((shares - 2) * 9999) / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(v: CgroupVersion) -> impl Fn(&str) -> Option<CgroupVersion> {
        move |_| Some(v)
    }

    fn full() -> ResourceSpec {
        ResourceSpec {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit: 64 << 20,
            memory_swap_limit: 128 << 20,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![HugepageLimit { page_size: "2MB".into(), limit: 4 << 20 }],
            unified: BTreeMap::from([("memory.high".to_string(), "50000000".to_string())]),
            oom_score_adj: Some(500),
        }
    }

    fn lines(settings: &[Setting]) -> Vec<String> {
        settings.iter().map(|s| format!("{}={}", s.file, s.value)).collect()
    }

    #[test]
    fn renders_v1_files() {
        let s = full().render(&all(CgroupVersion::V1)).unwrap();
        assert_eq!(
            lines(&s),
            vec![
                "cpu.shares=512",
                "cpu.cfs_period_us=100000",
                "cpu.cfs_quota_us=50000",
                "cpuset.cpus=0-1",
                "cpuset.mems=0",
                "memory.limit_in_bytes=67108864",
                "memory.memsw.limit_in_bytes=134217728",
                "hugetlb.2MB.limit_in_bytes=4194304",
                "memory.high=50000000",
            ]
        );
        assert!(s.iter().take(8).all(|x| x.version == CgroupVersion::V1));
        assert_eq!(s[8].version, CgroupVersion::V2, "unified keys always go to the v2 hierarchy");
    }

    #[test]
    fn renders_v2_files() {
        let s = full().render(&all(CgroupVersion::V2)).unwrap();
        assert_eq!(
            lines(&s),
            vec![
                "cpu.weight=20",
                "cpu.max=50000 100000",
                "cpuset.cpus=0-1",
                "cpuset.mems=0",
                "memory.max=67108864",
                "memory.swap.max=67108864",
                "hugetlb.2MB.max=4194304",
                "memory.high=50000000",
            ]
        );
        let unlimited = ResourceSpec { cpu_quota: -1, memory_limit: 1 << 30, memory_swap_limit: -1, ..Default::default() };
        assert_eq!(lines(&unlimited.render(&all(CgroupVersion::V2)).unwrap()), vec!["cpu.max=max 100000", "memory.max=1073741824", "memory.swap.max=max"]);
        assert!(ResourceSpec::default().render(&all(CgroupVersion::V2)).unwrap().is_empty());
    }

    #[test]
    fn hybrid_picks_the_version_per_controller() {
        let hybrid = |c: &str| match c {
            "hugetlb" => Some(CgroupVersion::V2),
            "rdma" => None,
            _ => Some(CgroupVersion::V1),
        };
        let s = full().render(&hybrid).unwrap();
        assert!(lines(&s).contains(&"hugetlb.2MB.max=4194304".to_string()));
        assert!(lines(&s).contains(&"memory.limit_in_bytes=67108864".to_string()));
        let none = |_: &str| None;
        assert!(ResourceSpec { memory_limit: 1, ..Default::default() }.render(&none).is_err());
    }

    #[test]
    fn weight_conversion_matches_the_range_ends() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
    }

    #[test]
    fn validation() {
        let host = HostLimits { online_cpus: vec![0, 1], online_mems: vec![0], hugepage_sizes: vec!["2MB".into()] };
        let ctrls = vec!["memory".to_string(), "cpu".to_string(), "hugetlb".to_string()];
        assert!(full().validate(&host, &ctrls).is_ok());
        let bad = [
            ResourceSpec { memory_limit: -1, ..Default::default() },
            ResourceSpec { memory_limit: 100, memory_swap_limit: 50, ..Default::default() },
            ResourceSpec { cpuset_cpus: "0-".into(), ..Default::default() },
            ResourceSpec { cpuset_cpus: "garbage".into(), ..Default::default() },
            ResourceSpec { cpuset_cpus: "7".into(), ..Default::default() },
            ResourceSpec { cpu_quota: 5, ..Default::default() },
            ResourceSpec { cpu_period: 10, ..Default::default() },
            ResourceSpec { cpu_shares: -3, ..Default::default() },
            ResourceSpec { oom_score_adj: Some(1001), ..Default::default() },
            ResourceSpec { hugepage_limits: vec![HugepageLimit { page_size: "3MB".into(), limit: 1 }], ..Default::default() },
            ResourceSpec { unified: BTreeMap::from([("nosuch.max".into(), "1".into())]), ..Default::default() },
            ResourceSpec { unified: BTreeMap::from([("cgroup.procs".into(), "1".into())]), ..Default::default() },
            ResourceSpec { unified: BTreeMap::from([("../memory.max".into(), "1".into())]), ..Default::default() },
        ];
        for b in bad {
            assert!(b.validate(&host, &ctrls).is_err(), "{b:?}");
        }
        assert_eq!(parse_cpu_list("0-2,5"), Some(vec![0, 1, 2, 5]));
    }

    #[test]
    fn memory_is_clamped_to_the_parent() {
        let mut r = ResourceSpec { memory_limit: 200, ..Default::default() };
        assert!(r.clamp_memory_to(Some(100)));
        assert_eq!(r.memory_limit, 100);
        let mut r = ResourceSpec { memory_limit: 50, ..Default::default() };
        assert!(!r.clamp_memory_to(Some(100)));
        assert!(!r.clamp_memory_to(None));
    }
}
