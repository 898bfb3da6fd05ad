//! Port forwarding over any transport: one data stream pair (in/out) and one error stream per forwarded
//! connection, connected to `localhost:<port>` inside the pod's network namespace.
//!
//! The connection is made by a dedicated thread that `setns(2)`s into the pod's pinned netns and
//! creates the socket there; a socket stays in the namespace it was created in, so the thread can end
//! right after and the daemon's other threads never change namespace. (A tokio blocking-pool thread
//! would go back to the pool still inside the pod's netns.) Host-network pods connect from the daemon's
//! own namespace. As kubelet does, 127.0.0.1 is tried first, then ::1; a refused connection is reported
//! as text on the error stream.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use crate::runtime::process_stdio::{BoxRead, BoxWrite};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The client's streams for one forwarded connection.
pub struct PortStreams {
    pub port: u16,
    pub data_in: BoxRead,
    pub data_out: BoxWrite,
    pub error: BoxWrite,
}

/// Where connections go: the pod's pinned netns, or the host's (host-network pods).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pod_id: String,
    pub netns: Option<PathBuf>,
}

/// Forward one connection until both directions ended (or either side failed).
pub async fn forward(target: Target, streams: PortStreams) {
    let PortStreams { port, data_in, mut data_out, mut error } = streams;
    let conn = match dial(target.netns.clone(), port).await {
        Ok(c) => c,
        Err(e) => {
            // kubelet's wording, so clients that match on it keep working.
            let msg = format!("error forwarding port {port} to pod {}: {e}", target.pod_id);
            tracing::debug!(%msg);
            let _ = error.write_all(msg.as_bytes()).await;
            let _ = error.shutdown().await;
            let _ = data_out.shutdown().await;
            return;
        }
    };
    let (conn_r, conn_w) = conn.into_split();
    // The client finished sending: half-close (shutdown), the server may still answer.
    let upstream = super::remotecommand::copy_then_close(data_in, conn_w);
    let downstream = super::remotecommand::copy_then_close(conn_r, data_out);
    // The server closing its side ends the forward; the client's half-close alone does not.
    tokio::select! {
        _ = async { upstream.await; std::future::pending::<()>().await } => {}
        _ = downstream => {}
    }
    let _ = error.shutdown().await;
}

/// Connect to `localhost:port` in `netns` (None: the daemon's own namespace).
pub async fn dial(netns: Option<PathBuf>, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new().name("port-forward-dial".into()).spawn(move || {
        let _ = tx.send(dial_blocking(netns, port));
    })?;
    let stream = rx.await.map_err(|_| std::io::Error::other("port-forward dial thread ended without an answer"))??;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

fn dial_blocking(netns: Option<PathBuf>, port: u16) -> std::io::Result<std::net::TcpStream> {
    if let Some(path) = netns {
        let ns = std::fs::File::open(&path)?;
        // setns(2) with CLONE_NEWNET only moves this thread (see the module docs).
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
    }
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    match std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(s) => Ok(s),
        Err(first) => std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| first),
    }
}

/// Ports of a port-forward URL: every `port` query value (kubelet's name; `ports` is accepted too),
/// each a comma-separated list of 1..=65535.
pub fn ports_from_query(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "port" && key != "ports" {
            continue;
        }
        for p in value.split(',').map(|p| p.trim()).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => return Err(format!("invalid port {p:?}")),
            }
        }
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_query() {
        assert_eq!(ports_from_query("port=80&port=8080,9090"), Ok(vec![80, 8080, 9090]));
        assert_eq!(ports_from_query("ports=1&x=2"), Ok(vec![1]));
        assert_eq!(ports_from_query(""), Ok(vec![]));
        assert!(ports_from_query("port=0").is_err());
        assert!(ports_from_query("port=70000").is_err());
        assert!(ports_from_query("port=http").is_err());
    }
}
