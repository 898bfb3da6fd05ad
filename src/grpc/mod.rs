//! The thin gRPC adapter: tonic service traits from `k8s-cri` implemented by forwarding to `cri::CriService`,
//! one tracing span per RPC, and the single error → `tonic::Status` mapping (status.rs). No CRI semantics
//! live here. `client` is the tonic client the tests and benches drive the daemon with, as kubelet does.

pub mod client;
pub mod server;
pub mod status;
