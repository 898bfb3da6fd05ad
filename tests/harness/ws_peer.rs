//! Runs `ws_peer.py` (Debian's python3-websocket, an implementation independent of the server) as
//! the WebSocket client of the streaming tests. Always `/usr/bin/python3`: the Debian package is
//! installed for the system interpreter, not for whatever `python3` is first on PATH.

use base64::Engine;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const PYTHON: &str = "/usr/bin/python3";
/// Upper bound for one peer run (a hung server fails the test instead of hanging it).
const PEER_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, Clone)]
pub struct WsOutcome {
    /// HTTP status of the handshake (101, or the refusal's status).
    pub status: Option<u16>,
    pub protocol: Option<String>,
    /// Every data message in order: (channel, data).
    pub messages: Vec<(u8, Vec<u8>)>,
    pub closed_by_server: bool,
    /// What went wrong in the peer, if anything.
    pub error: Option<String>,
    /// Bytes per channel received in `count_until_close` mode.
    pub counts: std::collections::HashMap<u8, u64>,
}

impl WsOutcome {
    /// Everything received on `channel`, concatenated.
    pub fn channel(&self, channel: u8) -> Vec<u8> {
        self.messages.iter().filter(|(c, _)| *c == channel).flat_map(|(_, d)| d.clone()).collect()
    }

    pub fn text(&self, channel: u8) -> String {
        String::from_utf8_lossy(&self.channel(channel)).into_owned()
    }

    /// The error channel (3) parsed as a metav1.Status.
    pub fn status_json(&self) -> Value {
        serde_json::from_slice(&self.channel(3)).unwrap_or_else(|e| panic!("error channel is not JSON ({e}): {:?}; {self:?}", self.text(3)))
    }

    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.error, None, "websocket peer failed: {self:?}");
        assert_eq!(self.status, Some(101), "handshake: {self:?}");
        self
    }
}

/// Connect to `url` offering `protocols` and run `steps` (see ws_peer.py).
pub async fn run(url: &str, protocols: &[&str], steps: Value) -> WsOutcome {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/harness/ws_peer.py");
    let plan = json!({"url": url.replacen("http://", "ws://", 1), "protocols": protocols, "timeout": 60, "steps": steps});
    let mut child = tokio::process::Command::new(PYTHON)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("running {PYTHON} {script} (is python3-websocket installed? `make deps`): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(plan.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = match tokio::time::timeout(PEER_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out.unwrap(),
        Err(_) => panic!("websocket peer did not finish within {PEER_TIMEOUT:?} (plan {plan})"),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("websocket peer output is not JSON ({e}): {text:?}; stderr: {}", String::from_utf8_lossy(&out.stderr)));
    let b64 = base64::engine::general_purpose::STANDARD;
    WsOutcome {
        status: v["status"].as_u64().map(|s| s as u16),
        protocol: v["protocol"].as_str().map(str::to_string),
        messages: v["messages"]
            .as_array()
            .map(|m| m.iter().map(|e| (e[0].as_u64().unwrap() as u8, b64.decode(e[1].as_str().unwrap()).unwrap())).collect())
            .unwrap_or_default(),
        closed_by_server: v["closed_by_server"].as_bool().unwrap_or(false),
        error: v["error"].as_str().map(str::to_string),
        counts: v["counts"]
            .as_object()
            .map(|m| m.iter().map(|(k, n)| (k.parse().unwrap(), n.as_u64().unwrap())).collect())
            .unwrap_or_default(),
    }
}
