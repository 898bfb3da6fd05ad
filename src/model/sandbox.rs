//! The pod sandbox state machine.
//!
//! ```text
//!   RunPodSandbox            StopPodSandbox           RemovePodSandbox
//!  ──────────────▶ Creating ──────────▶ Ready ──────────────▶ NotReady ──────────────▶ (gone)
//!                     │ failure / found after restart                ▲
//!                     └──────────────────────────────────────────────┘ (cleaned, then removed)
//! ```
//! CRI exposes Ready as SANDBOX_READY and everything else as SANDBOX_NOTREADY.

use crate::store::records::SandboxPhase;

pub fn is_ready(phase: SandboxPhase) -> bool {
    phase == SandboxPhase::Ready
}

/// Containers may only be created in a ready sandbox (kubelet creates a new sandbox otherwise).
pub fn can_create_container(phase: SandboxPhase) -> bool {
    phase == SandboxPhase::Ready
}

/// The CRI `PodSandboxState` for a phase.
pub fn cri_state(phase: SandboxPhase) -> k8s_cri::v1::PodSandboxState {
    if is_ready(phase) {
        k8s_cri::v1::PodSandboxState::SandboxReady
    } else {
        k8s_cri::v1::PodSandboxState::SandboxNotready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ready_sandboxes_take_containers() {
        assert!(can_create_container(SandboxPhase::Ready));
        for p in [SandboxPhase::Creating, SandboxPhase::NotReady, SandboxPhase::Unspecified] {
            assert!(!can_create_container(p));
            assert_eq!(cri_state(p), k8s_cri::v1::PodSandboxState::SandboxNotready);
        }
    }
}
