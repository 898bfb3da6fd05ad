//! The container state machine.
//!
//! ```text
//!  CreateContainer          StartContainer             process exits / StopContainer
//! ───────────────▶ Creating ──▶ Created ──────────────▶ Running ──────────────────────────▶ Exited
//!                     │            │ StopContainer: stays Created (nothing runs)            │
//!                     │            └──────────────── RemoveContainer ◀─────────────────────┘
//!                     └─ failure / found after restart: cleaned up and removed
//!  Unknown: the monitor vanished without leaving an exit record; Stop/Remove still work.
//! ```

use crate::store::records::ContainerPhase;

pub fn can_start(phase: ContainerPhase) -> bool {
    phase == ContainerPhase::Created
}

/// Whether a process may be running that Stop must signal.
pub fn may_run(phase: ContainerPhase) -> bool {
    matches!(phase, ContainerPhase::Running | ContainerPhase::Unknown)
}

pub fn cri_state(phase: ContainerPhase) -> k8s_cri::v1::ContainerState {
    use k8s_cri::v1::ContainerState as S;
    match phase {
        ContainerPhase::Created => S::ContainerCreated,
        ContainerPhase::Running => S::ContainerRunning,
        ContainerPhase::Exited => S::ContainerExited,
        ContainerPhase::Creating | ContainerPhase::Unknown | ContainerPhase::Unspecified => S::ContainerUnknown,
    }
}

/// Kubelet's reasons (pkg/kubelet/container): "Completed" for exit 0, "Error" otherwise, unless the
/// runtime knows better (OOMKilled).
pub fn exit_reason(exit_code: i32, oom_killed: bool) -> &'static str {
    if oom_killed {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        assert!(can_start(ContainerPhase::Created));
        assert!(!can_start(ContainerPhase::Running));
        assert!(!can_start(ContainerPhase::Exited));
        assert!(may_run(ContainerPhase::Running));
        assert!(!may_run(ContainerPhase::Created));
        assert_eq!(cri_state(ContainerPhase::Creating), k8s_cri::v1::ContainerState::ContainerUnknown);
        assert_eq!(exit_reason(0, false), "Completed");
        assert_eq!(exit_reason(137, false), "Error");
        assert_eq!(exit_reason(137, true), "OOMKilled");
    }
}
