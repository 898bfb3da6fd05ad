//! The composition root: builds the store, the image manager and the CRI service from the config, serves
//! them on the Unix socket, tells systemd when ready, and shuts down cleanly on SIGTERM/SIGINT. The only
//! place that names concrete implementations.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::cri::{detect_cgroup_driver, CriError, CriParts, CriService};
use crate::network::cni_network::CniPodNetwork;
use crate::runtime::lxc::LxcRuntime;
use crate::runtime::{ContainerRuntime, RuntimeError};
use crate::streaming::{StreamingError, StreamingServer};
use crate::grpc::server::CriServer;
use crate::image::{ImageError, ImageManager};
use crate::store::{Store, StoreError};

/// gRPC messages kubelet may send or receive (ListContainers on a busy node) exceed tonic's 4 MiB default.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// How long in-flight RPCs get to finish after SIGTERM before the daemon exits regardless.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("socket {0} is in use by a running server")]
    SocketInUse(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("opening the image store: {0}")]
    Image(#[from] ImageError),
    #[error("starting the LXC runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("recovering pods and containers: {0}")]
    Recovery(#[from] CriError),
    #[error("starting the streaming server: {0}")]
    Streaming(#[from] StreamingError),
    #[error("serving gRPC: {0}")]
    Serve(#[from] tonic::transport::Error),
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError + '_ {
    move |source| DaemonError::Io { path: path.to_path_buf(), source }
}

pub async fn run(config: Config) -> Result<(), DaemonError> {
    let config = Arc::new(config);
    for dir in [&config.root, &config.state] {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        // Containers' rootfs trees live below root; other users have no business listing them.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).map_err(io_at(dir))?;
    }
    let store = Store::open(&config.store_path())?;
    let images = {
        let (root, store, image_cfg, registry) = (config.root.clone(), store.clone(), config.image.clone(), config.registry.clone());
        // Recovery walks directories; keep it off the async workers.
        tokio::task::spawn_blocking(move || ImageManager::open(&root, store, image_cfg, registry))
            .await
            .map_err(|e| ImageError::Task(e.to_string()))??
    };
    let cgroup_driver = detect_cgroup_driver(config.cgroup_driver, Path::new("/run"));
    // The helpers (monitor, exec) are this very binary re-executed.
    let exe = std::env::current_exe().map_err(io_at(Path::new("/proc/self/exe")))?;
    let runtime: Arc<dyn ContainerRuntime> = Arc::new(LxcRuntime::new(&config.root, &config.state, exe)?);
    let (streaming, streaming_listener) = StreamingServer::bind(&config.streaming, runtime.clone()).await?;
    let cri = Arc::new(CriService::new(CriParts {
        config: config.clone(),
        images: Arc::new(images),
        cgroup_driver,
        store: store.clone(),
        runtime,
        network: Arc::new(CniPodNetwork::new(config.cni.conf_dir.clone(), config.cni.bin_dirs.clone(), config.cni.plugin_timeout())),
        streaming: streaming.clone(),
    }));
    cri.recover().await?;
    let server = CriServer::new(cri);

    // Handlers first: a SIGTERM right after READY=1 must already mean "shut down cleanly".
    let shutdown = shutdown_signal();
    let listener = bind_socket(&config.socket).await?;
    tracing::info!(socket = %config.socket.display(), root = %config.root.display(), ?cgroup_driver, "serving CRI");
    // Type=notify: systemd considers us started once the socket accepts connections.
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::debug!(error = %e, "sd_notify failed (not started by systemd?)");
    }

    // SIGTERM/SIGINT: tell systemd at once, stop accepting, let in-flight RPCs finish — but not forever:
    // kubelet keeps its connection open, and a graceful shutdown would wait for it indefinitely.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        let _ = stop_tx.send(true);
    });
    tracing::info!(address = %streaming.address(), "serving exec/attach/port-forward");
    let mut streaming_stop = stop_rx.clone();
    tokio::spawn(streaming.serve(streaming_listener, async move {
        let _ = streaming_stop.wait_for(|stop| *stop).await;
    }));
    let mut stopping = stop_rx.clone();
    let serve = tonic::transport::Server::builder()
        .add_service(RuntimeServiceServer::new(server.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(ImageServiceServer::new(server).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        });
    let mut grace = stop_rx;
    let result = tokio::select! {
        served = serve => served.map_err(DaemonError::from),
        _ = async move {
            let _ = grace.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the shutdown grace period; stopping anyway");
            Ok(())
        }
    };
    if let Err(e) = std::fs::remove_file(&config.socket) {
        tracing::warn!(error = %e, "removing socket");
    }
    tracing::info!("stopped");
    result
}

/// Bind the socket with mode 0660, replacing a stale socket file left by a crash but never one a live
/// server still answers on.
async fn bind_socket(path: &Path) -> Result<UnixListener, DaemonError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_at(parent))?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(DaemonError::SocketInUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io_at(path))?;
    }
    let listener = UnixListener::bind(path).map_err(io_at(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_at(path))?;
    Ok(listener)
}

/// Installs the SIGTERM/SIGINT handlers now (not when first polled) and resolves on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; shutdown only by SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}
