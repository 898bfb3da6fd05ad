//! A CRI client over a Unix socket, the way kubelet and crictl connect. Used by the integration tests and
//! the benchmarks, so both drive the daemon exactly as kubelet would.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Clone)]
pub struct CriClient {
    pub runtime: RuntimeServiceClient<Channel>,
    pub image: ImageServiceClient<Channel>,
}

impl CriClient {
    pub async fn connect(socket: &Path) -> Result<CriClient, tonic::transport::Error> {
        let socket: PathBuf = socket.to_path_buf();
        // The URI is required by tonic but unused: every connection goes to the socket.
        let channel = Endpoint::from_static("http://cri-lxc.invalid")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
            }))
            .await?;
        // kubelet raises the message size limit to 16 MiB for large list responses; do the same.
        let limit = 16 * 1024 * 1024;
        Ok(CriClient {
            runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(limit),
            image: ImageServiceClient::new(channel).max_decoding_message_size(limit),
        })
    }
}
