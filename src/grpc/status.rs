//! The ONE place a gRPC status code is chosen for an error. The match is exhaustive on purpose: a new
//! error variant does not compile until someone decides what kubelet should see for it.

use tonic::{Code, Status};

use crate::cri::CriError;
use crate::image::registry::FailureKind;
use crate::image::ImageError;
use crate::runtime::RuntimeError;
use crate::store::StoreError;
use crate::streaming::token::TokenError;
use crate::streaming::StreamingError;

pub fn to_status(err: &CriError) -> Status {
    let code = match err {
        CriError::InvalidArgument(_) => Code::InvalidArgument,
        CriError::NotFound(_) => Code::NotFound,
        CriError::AlreadyExists(_) => Code::AlreadyExists,
        CriError::FailedPrecondition(_) => Code::FailedPrecondition,
        CriError::DeadlineExceeded(_) => Code::DeadlineExceeded,
        CriError::Internal(_) => Code::Internal,
        CriError::Unimplemented { .. } => Code::Unimplemented,
        CriError::Image(e) => image_code(e),
        CriError::Store(e) => match e {
            StoreError::NameReserved { .. } => Code::AlreadyExists,
            StoreError::Open { .. } | StoreError::Locked { .. } | StoreError::TooNew { .. } | StoreError::Db(_) | StoreError::Decode { .. } => Code::Internal,
        },
        CriError::Runtime(e) => match e {
            RuntimeError::NotFound(_) => Code::NotFound,
            RuntimeError::NotRunning { .. } => Code::FailedPrecondition,
            RuntimeError::InvalidResources { .. } => Code::InvalidArgument,
            RuntimeError::ExecTimeout { .. } => Code::DeadlineExceeded,
            // The container's own configuration could not start (missing executable, bad mount …).
            RuntimeError::StartFailed { .. } => Code::FailedPrecondition,
            RuntimeError::Lxc(_) | RuntimeError::Io { .. } | RuntimeError::Other(_) => Code::Internal,
        },
        CriError::Namespace(_) => Code::Internal,
        CriError::Network(_) => Code::Unavailable,
        CriError::Streaming(e) => match e {
            StreamingError::Token(TokenError::Full) => Code::ResourceExhausted,
            StreamingError::Token(TokenError::Random(_)) | StreamingError::BadAddress(_) | StreamingError::Bind { .. } => Code::Internal,
        },
    };
    Status::new(code, err.to_string())
}

fn image_code(err: &ImageError) -> Code {
    match err {
        ImageError::InvalidReference(_) | ImageError::BadCredentials { .. } | ImageError::BadContainerId(_) => Code::InvalidArgument,
        ImageError::NotFound(_) => Code::NotFound,
        ImageError::InUse { .. } => Code::FailedPrecondition,
        ImageError::Registry { kind, .. } => match kind {
            FailureKind::NotFound => Code::NotFound,
            FailureKind::Unauthorized => Code::Unauthenticated,
            FailureKind::Unreachable => Code::Unavailable,
            FailureKind::Other => Code::Unknown,
        },
        ImageError::NoEndpoint { .. } => Code::FailedPrecondition,
        // Content that does not verify or does not parse: the registry served something we refuse.
        ImageError::Manifest { .. } | ImageError::DiffIdMismatch { .. } | ImageError::Unpack { .. } => Code::FailedPrecondition,
        ImageError::Content { source, .. } => match source {
            crate::image::content::ContentError::DigestMismatch { .. }
            | crate::image::content::ContentError::SizeMismatch { .. }
            | crate::image::content::ContentError::BadDigest(_) => Code::DataLoss,
            crate::image::content::ContentError::Io { .. } => Code::Internal,
        },
        ImageError::RegistryConfig(_) => Code::FailedPrecondition,
        ImageError::Rootfs(_) | ImageError::Store(_) | ImageError::Io { .. } | ImageError::Task(_) => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_for_cri_meaningful_cases() {
        assert_eq!(to_status(&CriError::NotFound("x".into())).code(), Code::NotFound);
        let unimpl = to_status(&CriError::Unimplemented { rpc: "RunPodSandbox", feature: "pods" });
        assert_eq!(unimpl.code(), Code::Unimplemented);
        assert!(unimpl.message().contains("RunPodSandbox"));
        let reg = ImageError::Registry { image: "i".into(), kind: FailureKind::Unauthorized, failures: vec![] };
        assert_eq!(to_status(&CriError::Image(reg)).code(), Code::Unauthenticated);
    }
}
