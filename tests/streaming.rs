//! Exec, Attach and PortForward through the streaming server, driven the way kubelet / kubectl drive
//! it: the CRI RPC returns a URL, an independent WebSocket client (Python's websocket-client, see
//! `harness/ws_peer.py`) speaks the Kubernetes channel protocols to it. Real daemon, real LXC
//! containers, everything on loopback (port-forward targets listen inside the pod's own netns). Every
//! test removes its pods and ends with the leak check.

mod harness;

use harness::pods::*;
use harness::spdy_client;
use harness::ws_peer::{self, WsOutcome};
use k8s_cri::v1::*;
use serde_json::json;
use std::time::{Duration, Instant};
use tonic::Code;

const LOOP: &str = "while true; do sleep 1; done";
const T30: Duration = Duration::from_secs(30);
const V5: &[&str] = &["v5.channel.k8s.io"];

/// A ready pod with one long-running busybox container; returns (pod id, pod config, container id).
async fn pod_with_container(fx: &Fixture, name: &str, config: ContainerConfig) -> (String, PodSandboxConfig, String) {
    let pod = fx.pod_config(name);
    let pod_id = fx.run_pod(&pod).await;
    let ctr = fx.create_and_start(&pod_id, &pod, config).await;
    fx.wait_state(&ctr, RUNNING, T30).await;
    (pod_id, pod, ctr)
}

fn exec_req(ctr: &str, cmd: &[&str], stdin: bool, stdout: bool, stderr: bool, tty: bool) -> ExecRequest {
    ExecRequest { container_id: ctr.to_string(), cmd: cmd.iter().map(|s| s.to_string()).collect(), tty, stdin, stdout, stderr }
}

async fn exec_url(fx: &Fixture, req: ExecRequest) -> String {
    let mut c = fx.client.clone();
    match within("Exec", RPC_TIMEOUT, c.runtime.exec(req)).await {
        Ok(r) => r.into_inner().url,
        Err(e) => panic!("Exec failed: {}", describe(&e)),
    }
}

async fn attach_url(fx: &Fixture, req: AttachRequest) -> String {
    let mut c = fx.client.clone();
    match within("Attach", RPC_TIMEOUT, c.runtime.attach(req)).await {
        Ok(r) => r.into_inner().url,
        Err(e) => panic!("Attach failed: {}", describe(&e)),
    }
}

async fn port_forward_url(fx: &Fixture, pod_id: &str) -> String {
    let mut c = fx.client.clone();
    let req = PortForwardRequest { pod_sandbox_id: pod_id.to_string(), port: vec![] };
    match within("PortForward", RPC_TIMEOUT, c.runtime.port_forward(req)).await {
        Ok(r) => r.into_inner().url,
        Err(e) => panic!("PortForward failed: {}", describe(&e)),
    }
}

fn assert_exit_code(out: &WsOutcome, code: i32) {
    let status = out.status_json();
    if code == 0 {
        assert_eq!(status["status"], "Success", "status for exit 0: {status}");
        return;
    }
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    let causes = status["details"]["causes"].as_array().unwrap_or_else(|| panic!("no causes: {status}"));
    assert!(
        causes.iter().any(|c| c["reason"] == "ExitCode" && c["message"].as_str() == Some(code.to_string().as_str())),
        "no ExitCode cause {code}: {status}"
    );
}

/// Wait until no live process has `needle` in its command line.
async fn wait_gone(needle: &str, what: &str) {
    let start = Instant::now();
    loop {
        let pids = pids_with_cmdline(needle);
        if pids.is_empty() {
            return;
        }
        if start.elapsed() > T30 {
            panic!("{what}: processes {pids:?} with {needle:?} still run");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_running(needle: &str, what: &str) {
    let start = Instant::now();
    while pids_with_cmdline(needle).is_empty() {
        if start.elapsed() > T30 {
            panic!("{what}: no process with {needle:?} appeared");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// exec

#[tokio::test(flavor = "multi_thread")]
async fn exec_streams_output_and_exit_codes_over_every_websocket_subprotocol() {
    let fx = Fixture::start().await;
    let (pod_id, _, ctr) = pod_with_container(&fx, "exec", fx.container_config("main", &["sh", "-c", LOOP])).await;
    let script = ["sh", "-c", "echo out; echo err >&2; exit 3"];

    // v5 binary: stdout and stderr on their channels, the exit code as a Status on the error channel.
    let url = exec_url(&fx, exec_req(&ctr, &script, false, true, true, false)).await;
    let out = ws_peer::run(&url, V5, json!([["read_until_close"]])).await;
    out.assert_ok();
    assert_eq!(out.protocol.as_deref(), Some("v5.channel.k8s.io"));
    // kubelet's readiness signal: an empty message on the lowest channel the client reads.
    assert_eq!(out.messages.first(), Some(&(1u8, vec![])), "first message: {out:?}");
    assert_eq!(out.text(1), "out\n");
    assert_eq!(out.text(2), "err\n");
    assert_exit_code(&out, 3);
    assert!(out.closed_by_server, "the server ends the session after the status");

    // v4 base64: text messages; a zero exit is Success.
    let url = exec_url(&fx, exec_req(&ctr, &["sh", "-c", "echo hello"], false, true, true, false)).await;
    let out = ws_peer::run(&url, &["v4.base64.channel.k8s.io"], json!([["read_until_close"]])).await;
    out.assert_ok();
    assert_eq!(out.protocol.as_deref(), Some("v4.base64.channel.k8s.io"));
    assert_eq!(out.text(1), "hello\n");
    assert_exit_code(&out, 0);

    // The client's preference order wins; stdout only: stderr is not sent.
    let url = exec_url(&fx, exec_req(&ctr, &script, false, true, false, false)).await;
    let out = ws_peer::run(&url, &["v4.channel.k8s.io", "v5.channel.k8s.io"], json!([["read_until_close"]])).await;
    out.assert_ok();
    assert_eq!(out.protocol.as_deref(), Some("v4.channel.k8s.io"));
    assert_eq!(out.text(1), "out\n");
    assert!(out.channel(2).is_empty(), "stderr was not asked for: {out:?}");
    assert_exit_code(&out, 3);

    // channel.k8s.io (v1): no Status JSON, a non-empty error text for a failure, nothing for success.
    let url = exec_url(&fx, exec_req(&ctr, &script, false, true, true, false)).await;
    let out = ws_peer::run(&url, &["channel.k8s.io"], json!([["read_until_close"]])).await;
    out.assert_ok();
    assert_eq!(out.text(1), "out\n");
    assert!(!out.channel(3).is_empty() && serde_json::from_slice::<serde_json::Value>(&out.channel(3)).is_err(), "v1 error text: {out:?}");
    let url = exec_url(&fx, exec_req(&ctr, &["true"], false, true, false, false)).await;
    let out = ws_peer::run(&url, &["channel.k8s.io"], json!([["read_until_close"]])).await;
    out.assert_ok();
    assert!(out.channel(3).is_empty(), "v1 success writes no error: {out:?}");

    // A command that does not exist: the helper's message and its exit code reach the client.
    let url = exec_url(&fx, exec_req(&ctr, &["/no/such/binary"], false, true, true, false)).await;
    let out = ws_peer::run(&url, V5, json!([["read_until_close"]])).await;
    out.assert_ok();
    assert_eq!(out.status_json()["status"], "Failure", "{out:?}");

    // An unsupported subprotocol is refused at the handshake.
    let url = exec_url(&fx, exec_req(&ctr, &["true"], false, true, false, false)).await;
    let out = ws_peer::run(&url, &["v9.channel.k8s.io"], json!([])).await;
    assert_eq!(out.status, Some(400), "{out:?}");

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_forwards_stdin_until_the_client_closes_it() {
    let fx = Fixture::start().await;
    let (pod_id, _, ctr) = pod_with_container(&fx, "stdin", fx.container_config("main", &["sh", "-c", LOOP])).await;

    let url = exec_url(&fx, exec_req(&ctr, &["sh", "-c", "cat; echo done"], true, true, true, false)).await;
    let steps = json!([["send", 0, "hello\n"], ["wait_for", 1, "hello\n"], ["send", 0, "world\n"], ["close", 0], ["read_until_close"]]);
    let out = ws_peer::run(&url, V5, steps).await;
    out.assert_ok();
    assert_eq!(out.text(1), "hello\nworld\ndone\n");
    assert_exit_code(&out, 0);

    // Base64 protocol stdin, and a stdin-only exec (no output streams at all).
    let marker = "/tmp/stdin-only";
    let url = exec_url(&fx, exec_req(&ctr, &["sh", "-c", &format!("cat > {marker}")], true, false, false, false)).await;
    // v4 has no stdin close: the session ends when the client closes the connection, which also
    // ends cat's stdin. Wait until the bytes arrived before closing.
    let out = ws_peer::run(&url, &["v4.base64.channel.k8s.io"], json!([["send", 0, "via-base64"], ["sleep", 0.5], ["close_ws"]])).await;
    assert_eq!(out.error, None, "{out:?}");
    let start = Instant::now();
    loop {
        let got = fx.exec_ok(&ctr, &["cat", marker]).await.stdout;
        if got == "via-base64" {
            break;
        }
        assert!(start.elapsed() < T30, "stdin did not arrive: {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_with_a_tty_sets_term_applies_resizes_and_reports_the_exit_code() {
    let fx = Fixture::start().await;
    let (pod_id, _, ctr) = pod_with_container(&fx, "tty", fx.container_config("main", &["sh", "-c", LOOP])).await;

    let script = r#"echo term=$TERM; [ -t 0 ] && echo is-a-tty; while read l; do [ "$l" = q ] && exit 7; stty size; done"#;
    let url = exec_url(&fx, exec_req(&ctr, &["sh", "-c", script], true, true, false, true)).await;
    let steps = json!([
        ["wait_for", 1, "is-a-tty"],
        ["resize", 100, 30],
        // The resize and the newline travel on different channels: ask until the new size shows.
        ["poke_until", 1, "30 100", 0, "\n"],
        ["resize", 81, 25],
        ["poke_until", 1, "25 81", 0, "\n"],
        ["send", 0, "q\n"],
        ["read_until_close"]
    ]);
    let out = ws_peer::run(&url, V5, steps).await;
    out.assert_ok();
    let text = out.text(1);
    assert!(text.contains("term=xterm"), "TERM is set for a tty exec: {text:?}");
    assert!(out.channel(2).is_empty(), "a terminal has one output stream: {out:?}");
    assert_exit_code(&out, 7);

    // The pty is the command's controlling terminal: ^C on it is SIGINT for the foreground group
    // (a plain character otherwise, and this exec would never end).
    let script = r#"trap 'echo got-sigint; exit 9' INT; echo armed; while :; do sleep 1; done"#;
    let url = exec_url(&fx, exec_req(&ctr, &["sh", "-c", script], true, true, false, true)).await;
    let steps = json!([["wait_for", 1, "armed"], ["send", 0, "\u{3}"], ["read_until_close"]]);
    let out = ws_peer::run(&url, V5, steps).await;
    out.assert_ok();
    assert!(out.text(1).contains("got-sigint"), "^C reached the command as SIGINT: {:?}", out.text(1));
    assert_exit_code(&out, 9);

    // tty together with stderr is invalid (api.proto), as is asking for no stream at all.
    let mut c = fx.client.clone();
    let r = c.runtime.exec(exec_req(&ctr, &["true"], false, true, true, true)).await;
    expect_code(r, &[Code::InvalidArgument], "Exec tty+stderr");
    let r = c.runtime.exec(exec_req(&ctr, &["true"], false, false, false, false)).await;
    expect_code(r, &[Code::InvalidArgument], "Exec without streams");
    let r = c.runtime.exec(exec_req(&ctr, &[], false, true, false, false)).await;
    expect_code(r, &[Code::InvalidArgument], "Exec without cmd");
    let r = c.runtime.exec(exec_req("0123456789abcdef0123456789abcdef", &["true"], false, true, false, false)).await;
    expect_code(r, &[Code::NotFound], "Exec in an unknown container");

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

/// Resident memory of a process in KiB (`VmRSS` in /proc/<pid>/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_client_is_flow_controlled_not_buffered() {
    let fx = Fixture::start().await;
    let (pod_id, _, ctr) = pod_with_container(&fx, "flow", fx.container_config("main", &["sh", "-c", LOOP])).await;
    let go = fx.work().join("flow-go");
    const TOTAL: u64 = 256 * 1024 * 1024;

    // 256 MiB of output to a client that reads nothing until told to: the producer must end up
    // blocked (bounded buffers all the way), not finished with the data parked in the daemon.
    let cmd = format!("head -c {TOTAL} /dev/zero; echo finished > /tmp/flow-done");
    let url = exec_url(&fx, exec_req(&ctr, &["sh", "-c", &cmd], false, true, false, false)).await;
    let steps = json!([["wait_file", go.to_str().unwrap()], ["count_until_close"]]);
    let peer = tokio::spawn(async move { ws_peer::run(&url, V5, steps).await });
    let daemon_pid = fx.daemon.pid().expect("daemon pid");
    let before = rss_kib(daemon_pid);
    wait_running(&format!("head -c {TOTAL}"), "producer").await;
    // Give an unbounded implementation every chance to swallow the output.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = rss_kib(daemon_pid);
    let done = fx.exec_ok(&ctr, &["test", "-e", "/tmp/flow-done"]).await.code == 0;
    assert!(!done, "the producer finished although the client read nothing: output was buffered");
    assert!(during < before + 64 * 1024, "daemon RSS grew from {before} KiB to {during} KiB while the client was stalled");
    std::fs::write(&go, b"").unwrap();
    let out = peer.await.unwrap();
    assert_eq!(out.error, None, "{out:?}");
    assert_eq!(out.counts.get(&1).copied(), Some(TOTAL), "every byte arrives once the client reads: {:?}", out.counts);

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_disconnect_kills_the_exec_and_leaves_the_container_running() {
    let fx = Fixture::start().await;
    let (pod_id, _, ctr) = pod_with_container(&fx, "disconnect", fx.container_config("main", &["sh", "-c", LOOP])).await;
    let go = fx.work().join("go");

    // `sleep 4242` reads no stdin and writes nothing: only the disconnect can end the session.
    let url = exec_url(&fx, exec_req(&ctr, &["sh", "-c", "echo started; exec sleep 4242"], true, true, true, false)).await;
    let steps = json!([["wait_for", 1, "started"], ["wait_file", go.to_str().unwrap()], ["drop"]]);
    let peer = tokio::spawn(async move { ws_peer::run(&url, V5, steps).await });
    wait_running("sleep 4242", "exec before the disconnect").await;
    std::fs::write(&go, b"").unwrap();
    let out = peer.await.unwrap();
    assert_eq!(out.error, None, "{out:?}");
    // The attached command and its helper (`cri-lxc __exec … -- sh -c … sleep 4242`) are gone.
    wait_gone("sleep 4242", "exec after the client dropped the connection").await;

    // The same with a tty session.
    std::fs::remove_file(&go).unwrap();
    let url = exec_url(&fx, exec_req(&ctr, &["sh", "-c", "echo started; exec sleep 4343"], true, true, false, true)).await;
    let steps = json!([["wait_for", 1, "started"], ["wait_file", go.to_str().unwrap()], ["drop"]]);
    let peer = tokio::spawn(async move { ws_peer::run(&url, V5, steps).await });
    wait_running("sleep 4343", "tty exec before the disconnect").await;
    std::fs::write(&go, b"").unwrap();
    assert_eq!(peer.await.unwrap().error, None);
    wait_gone("sleep 4343", "tty exec after the client dropped the connection").await;

    assert_eq!(fx.status_ok(&ctr).await.state, RUNNING, "the container itself keeps running");
    assert_eq!(fx.exec_stdout(&ctr, &["echo", "still-here"]).await, "still-here\n");
    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_websocket_input_ends_only_that_session() {
    let fx = Fixture::start().await;
    let (pod_id, _, ctr) = pod_with_container(&fx, "malformed", fx.container_config("main", &["sh", "-c", LOOP])).await;

    // Messages on channels the session does not read (9; resize without a tty; an empty message)
    // are ignored, as kubelet ignores them; the session goes on.
    let url = exec_url(&fx, exec_req(&ctr, &["cat"], true, true, false, false)).await;
    let steps = json!([["send", 9, "junk"], ["send", 4, "{\"Width\":1"], ["send", 0, "ok\n"], ["close", 0], ["read_until_close"]]);
    let out = ws_peer::run(&url, V5, steps).await;
    out.assert_ok();
    assert_eq!(out.text(1), "ok\n");
    assert_exit_code(&out, 0);

    // A broken frame (reserved opcode 0x3, unmasked) ends the session; the exec is killed.
    let url = exec_url(&fx, exec_req(&ctr, &["sh", "-c", "echo started; exec sleep 4545"], true, true, false, false)).await;
    let out = ws_peer::run(&url, V5, json!([["wait_for", 1, "started"], ["raw", "83 05 68 65 6c 6c 6f".replace(' ', "")], ["read_until_close"]])).await;
    assert!(out.closed_by_server, "the server closes a session after a protocol error: {out:?}");
    wait_gone("sleep 4545", "exec after a malformed frame").await;

    // A (masked) frame that claims 2^62 bytes: refused from its header, never buffered.
    let url = exec_url(&fx, exec_req(&ctr, &["sh", "-c", "echo started; exec sleep 4646"], true, true, false, false)).await;
    let out = ws_peer::run(&url, V5, json!([["wait_for", 1, "started"], ["raw", "82ff400000000000000001020304"], ["read_until_close"]])).await;
    assert!(out.closed_by_server, "{out:?}");
    wait_gone("sleep 4646", "exec after an oversized frame").await;

    // Plain HTTP garbage on the streaming port: an HTTP error, nothing else.
    let addr = url.trim_start_matches("http://").split('/').next().unwrap().to_string();
    let reply = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(b"\x00\x01GARBAGE \xff\r\n\r\n").unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
    .await
    .unwrap();
    assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 4"), "reply to garbage: {reply:?}");

    // The daemon is unharmed.
    let url = exec_url(&fx, exec_req(&ctr, &["echo", "alive"], false, true, false, false)).await;
    let out = ws_peer::run(&url, V5, json!([["read_until_close"]])).await;
    out.assert_ok();
    assert_eq!(out.text(1), "alive\n");
    assert!(fx.daemon.log().lines().all(|l| !l.contains("panicked")), "the daemon panicked:\n{}", fx.daemon.log());

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// tokens

#[tokio::test(flavor = "multi_thread")]
async fn urls_are_single_use_and_expire() {
    let fx = Fixture::start_with_config("log_level = \"debug\"\n[streaming]\ntoken_ttl_secs = 3\n").await;
    let (pod_id, _, ctr) = pod_with_container(&fx, "tokens", fx.container_config("main", &["sh", "-c", LOOP])).await;

    let url = exec_url(&fx, exec_req(&ctr, &["echo", "once"], false, true, false, false)).await;
    assert!(url.starts_with("http://127.0.0.1:"), "default address is loopback: {url}");
    let out = ws_peer::run(&url, V5, json!([["read_until_close"]])).await;
    out.assert_ok();
    assert_eq!(out.text(1), "once\n");
    let again = ws_peer::run(&url, V5, json!([["read_until_close"]])).await;
    assert_eq!(again.status, Some(404), "second use of a URL: {again:?}");

    // A token for one kind of stream does not open another.
    let url = exec_url(&fx, exec_req(&ctr, &["true"], false, true, false, false)).await;
    let out = ws_peer::run(&url.replace("/exec/", "/attach/"), V5, json!([])).await;
    assert_eq!(out.status, Some(404), "{out:?}");
    let out = ws_peer::run(&url.replace("/exec/", "/exec/x"), V5, json!([])).await;
    assert_eq!(out.status, Some(404), "made-up token: {out:?}");

    let url = exec_url(&fx, exec_req(&ctr, &["true"], false, true, false, false)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let out = ws_peer::run(&url, V5, json!([["read_until_close"]])).await;
    assert_eq!(out.status, Some(404), "expired URL: {out:?}");

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// attach

#[tokio::test(flavor = "multi_thread")]
async fn attach_streams_the_containers_stdio_and_detaching_leaves_it_running() {
    let fx = Fixture::start().await;
    let mut config = fx.container_config("main", &["sh", "-c", "while read l; do echo got:$l; echo err:$l >&2; done"]);
    config.stdin = true;
    let (pod_id, pod, ctr) = pod_with_container(&fx, "attach", config.clone()).await;
    let log = fx.log_file(&pod, &config);

    let req = AttachRequest { container_id: ctr.clone(), stdin: true, tty: false, stdout: true, stderr: true };
    let url = attach_url(&fx, req.clone()).await;
    let out = ws_peer::run(&url, V5, json!([["send", 0, "one\n"], ["wait_for", 1, "got:one\n"], ["wait_for", 2, "err:one\n"], ["close_ws"]])).await;
    out.assert_ok();
    assert_eq!(fx.status_ok(&ctr).await.state, RUNNING, "detaching leaves the container running");
    // What the attached client saw went to the CRI log too.
    wait_log_line(&log, "got:one", T30).await;

    // Attach again (the monitor serves any number of sessions over time); two clients at once
    // both get the output.
    let (u1, u2) = (attach_url(&fx, req.clone()).await, attach_url(&fx, AttachRequest { stdin: false, ..req.clone() }).await);
    let go = fx.work().join("attach-go");
    let go_path = go.to_str().unwrap().to_string();
    let watcher = tokio::spawn(async move { ws_peer::run(&u2, V5, json!([["wait_file", go_path], ["wait_for", 1, "got:two\n"], ["close_ws"]])).await });
    // The second client must be connected before the input is sent: the first message it gets is
    // the server's ready message, so give it a moment by waiting for the file only after attach.
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&go, b"").unwrap();
    let out = ws_peer::run(&u1, V5, json!([["send", 0, "two\n"], ["wait_for", 1, "got:two\n"], ["close_ws"]])).await;
    out.assert_ok();
    watcher.await.unwrap().assert_ok();

    // A container without stdin cannot be attached with stdin; an unknown one is NotFound.
    let plain = fx.create_and_start(&pod_id, &pod, fx.container_config("plain", &["sh", "-c", LOOP])).await;
    let mut c = fx.client.clone();
    let r = c.runtime.attach(AttachRequest { container_id: plain.clone(), ..req.clone() }).await;
    expect_code(r, &[Code::InvalidArgument], "Attach stdin to a container without stdin");
    let r = c.runtime.attach(AttachRequest { container_id: "0123456789abcdef0123456789abcdef".into(), ..req.clone() }).await;
    expect_code(r, &[Code::NotFound], "Attach to an unknown container");
    fx.stop_ok(&ctr, 0).await;
    let r = c.runtime.attach(req).await;
    expect_code(r, &[Code::FailedPrecondition], "Attach to an exited container");

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

/// `stdin_once`: the first attach session closing its stdin closes the container's (it reads EOF and
/// `cat` ends); without it the container's stdin stays open for the next session.
#[tokio::test(flavor = "multi_thread")]
async fn attach_closing_stdin_ends_a_stdin_once_container_only() {
    let fx = Fixture::start().await;
    let mut once = fx.container_config("once", &["cat"]);
    once.stdin = true;
    once.stdin_once = true;
    let (pod_id, pod, once_id) = pod_with_container(&fx, "stdin-once", once.clone()).await;
    let mut kept = fx.container_config("kept", &["cat"]);
    kept.stdin = true;
    let kept_id = fx.create_and_start(&pod_id, &pod, kept).await;

    for id in [&once_id, &kept_id] {
        let url = attach_url(&fx, AttachRequest { container_id: id.clone(), stdin: true, tty: false, stdout: true, stderr: false }).await;
        let out = ws_peer::run(&url, V5, json!([["send", 0, "hello\n"], ["wait_for", 1, "hello\n"], ["close", 0], ["sleep", 0.5], ["close_ws"]])).await;
        out.assert_ok();
    }
    let status = fx.wait_state(&once_id, EXITED, T30).await;
    assert_eq!(status.exit_code, 0, "cat read EOF and ended: {status:?}");
    wait_log_line(&fx.log_file(&pod, &once), "hello", T30).await;
    assert_eq!(fx.status_ok(&kept_id).await.state, RUNNING, "without stdin_once the stdin stays open");

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_to_a_tty_container_applies_resizes_and_survives_a_daemon_restart() {
    let mut fx = Fixture::start().await;
    let mut config = fx.container_config("main", &["sh", "-c", "while read l; do echo got:$l; stty size; done"]);
    config.stdin = true;
    config.tty = true;
    let (pod_id, _, ctr) = pod_with_container(&fx, "attach-tty", config).await;

    let req = AttachRequest { container_id: ctr.clone(), stdin: true, tty: true, stdout: true, stderr: false };
    let url = attach_url(&fx, req.clone()).await;
    let steps = json!([["resize", 90, 20], ["poke_until", 1, "20 90", 0, "x\n"], ["close_ws"]]);
    let out = ws_peer::run(&url, V5, steps).await;
    out.assert_ok();
    assert!(out.text(1).contains("got:x"), "{out:?}");

    // The monitor outlives the daemon: after a restart, attach works again.
    fx.restart_daemon().await;
    let url = attach_url(&fx, req).await;
    let out = ws_peer::run(&url, V5, json!([["send", 0, "after-restart\n"], ["wait_for", 1, "got:after-restart"], ["close_ws"]])).await;
    out.assert_ok();
    assert_eq!(fx.status_ok(&ctr).await.state, RUNNING);

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// port-forward

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_reaches_the_pods_loopback_and_reports_closed_ports() {
    let fx = Fixture::start().await;
    let serve = "mkdir -p /tmp/www && echo pod-hello > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www";
    let (pod_id, _, ctr) = pod_with_container(&fx, "forward", fx.container_config("server", &["sh", "-c", serve])).await;
    // The server listens on the pod's own 127.0.0.1 (nothing on the host's 127.0.0.1:8080 matters).
    let start = Instant::now();
    while fx.exec_ok(&ctr, &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"]).await.code != 0 {
        assert!(start.elapsed() < T30, "httpd in the pod did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let get = "GET / HTTP/1.0\r\n\r\n";
    let url = format!("{}?port=8080&port=8081", port_forward_url(&fx, &pod_id).await);
    let steps = json!([["send", 0, get], ["wait_for", 0, "pod-hello"], ["wait_for", 3, "8081"], ["close_ws"]]);
    let out = ws_peer::run(&url, &["v4.channel.k8s.io"], steps).await;
    out.assert_ok();
    // The first message of every channel is its port, 2 bytes little-endian.
    for (ch, port) in [(0u8, 8080u16), (1, 8080), (2, 8081), (3, 8081)] {
        let first = out.messages.iter().find(|(c, _)| *c == ch).map(|(_, d)| d.clone());
        assert_eq!(first, Some(port.to_le_bytes().to_vec()), "first message on channel {ch}: {out:?}");
    }
    let data = out.text(0);
    assert!(data.contains("200 OK") && data.contains("pod-hello"), "forwarded response: {data:?}");
    assert!(out.channel(1).len() == 2, "no error for the open port: {out:?}");
    let error = String::from_utf8_lossy(&out.channel(3)[2..]).into_owned();
    assert!(error.contains("8081"), "closed port reported on its error channel: {error:?}");

    // Concurrent sessions (base64 framing for one of them), each its own connection.
    let u1 = format!("{}?port=8080", port_forward_url(&fx, &pod_id).await);
    let u2 = format!("{}?port=8080", port_forward_url(&fx, &pod_id).await);
    let steps = json!([["send", 0, get], ["wait_for", 0, "pod-hello"], ["close_ws"]]);
    let (a, b) = tokio::join!(ws_peer::run(&u1, &["v4.channel.k8s.io"], steps.clone()), ws_peer::run(&u2, &["v4.base64.channel.k8s.io"], steps));
    a.assert_ok();
    b.assert_ok();
    assert!(b.text(0).contains("pod-hello"), "{b:?}");

    // Validation: ports must be valid, the pod must exist and be ready.
    let mut c = fx.client.clone();
    let r = c.runtime.port_forward(PortForwardRequest { pod_sandbox_id: pod_id.clone(), port: vec![70000] }).await;
    expect_code(r, &[Code::InvalidArgument], "PortForward to port 70000");
    let r = c.runtime.port_forward(PortForwardRequest { pod_sandbox_id: "0123456789abcdef0123456789abcdef".into(), port: vec![] }).await;
    expect_code(r, &[Code::NotFound], "PortForward to an unknown pod");
    fx.stop_pod_ok(&pod_id).await;
    let r = c.runtime.port_forward(PortForwardRequest { pod_sandbox_id: pod_id.clone(), port: vec![80] }).await;
    expect_code(r, &[Code::FailedPrecondition], "PortForward to a stopped pod");

    fx.remove_pod_ok(&pod_id).await;
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// SPDY/3.1 (what kubelet, kube-apiserver and crictl speak by default)

#[tokio::test(flavor = "multi_thread")]
async fn spdy_exec_streams_output_stdin_tty_and_exit_codes() {
    let fx = Fixture::start().await;
    let (pod_id, _, ctr) = pod_with_container(&fx, "spdy-exec", fx.container_config("main", &["sh", "-c", LOOP])).await;

    let url = exec_url(&fx, exec_req(&ctr, &["sh", "-c", "echo out; echo err >&2; exit 3"], false, true, true, false)).await;
    let conn = spdy_client::connect(&url, &["v4.channel.k8s.io", "v3.channel.k8s.io"]).await.expect("upgrade");
    assert_eq!(conn.protocol, "v4.channel.k8s.io", "the client's first supported offer wins");
    let out = spdy_client::remotecommand(&conn, None, true, true, None).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let status: serde_json::Value = serde_json::from_slice(&out.error).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0], json!({"reason": "ExitCode", "message": "3"}), "{status}");
    conn.session.closed().await;

    // stdin until FIN (v5), exit 0 is Success.
    let url = exec_url(&fx, exec_req(&ctr, &["sh", "-c", "cat; echo done"], true, true, true, false)).await;
    let conn = spdy_client::connect(&url, &["v5.channel.k8s.io"]).await.expect("upgrade");
    let out = spdy_client::remotecommand(&conn, Some(b"over spdy\n"), true, true, None).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over spdy\ndone\n");
    let status: serde_json::Value = serde_json::from_slice(&out.error).unwrap();
    assert_eq!(status["status"], "Success", "{status}");

    // A tty with a resize stream; the size is read until it shows (the streams are independent).
    let script = r#"echo term=$TERM; i=0; while [ $i -lt 100 ]; do s=$(stty size); [ "$s" = "33 111" ] && break; i=$((i+1)); sleep 0.1; done; echo size=$s"#;
    let url = exec_url(&fx, exec_req(&ctr, &["sh", "-c", script], true, true, false, true)).await;
    let conn = spdy_client::connect(&url, &["v4.channel.k8s.io"]).await.expect("upgrade");
    let out = spdy_client::remotecommand(&conn, Some(b""), true, false, Some((111, 33))).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("term=xterm") && text.contains("size=33 111"), "tty output: {text:?}");

    // v1 (channel.k8s.io): error text, no JSON.
    let url = exec_url(&fx, exec_req(&ctr, &["sh", "-c", "exit 5"], false, true, false, false)).await;
    let conn = spdy_client::connect(&url, &["channel.k8s.io"]).await.expect("upgrade");
    let out = spdy_client::remotecommand(&conn, None, true, false, None).await;
    assert!(!out.error.is_empty() && serde_json::from_slice::<serde_json::Value>(&out.error).is_err(), "{out:?}");

    // No supported protocol: 403, and the URL is used up.
    let url = exec_url(&fx, exec_req(&ctr, &["true"], false, true, false, false)).await;
    let refused = spdy_client::connect(&url, &["v9.channel.k8s.io"]).await.err().expect("refused");
    assert_eq!(refused.status, 403, "{refused:?}");
    let refused = spdy_client::connect(&url, &["v4.channel.k8s.io"]).await.err().expect("refused");
    assert_eq!(refused.status, 404, "{refused:?}");

    // Garbage instead of SPDY frames ends that connection only.
    let url = exec_url(&fx, exec_req(&ctr, &["true"], false, true, false, false)).await;
    let addr_path = url.trim_start_matches("http://").to_string();
    let (addr, path) = addr_path.split_once('/').unwrap();
    let reply = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("POST /{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        // A control frame of version 2 and an absurd length, then noise.
        tcp.write_all(&[0x80, 0x02, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8]).await.unwrap();
        let mut all = Vec::new();
        within("server closing a garbage SPDY connection", T30, tcp.read_to_end(&mut all)).await.unwrap();
        String::from_utf8_lossy(&all).into_owned()
    };
    assert!(reply.starts_with("HTTP/1.1 101"), "{reply:?}");
    let url = exec_url(&fx, exec_req(&ctr, &["echo", "alive"], false, true, false, false)).await;
    let conn = spdy_client::connect(&url, &["v4.channel.k8s.io"]).await.expect("upgrade");
    assert_eq!(spdy_client::remotecommand(&conn, None, true, false, None).await.stdout, b"alive\n");

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spdy_attach_and_port_forward() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fx = Fixture::start().await;
    let pod = fx.pod_config("spdy-pod");
    let pod_id = fx.run_pod(&pod).await;
    let mut config = fx.container_config("echo", &["sh", "-c", "while read l; do echo got:$l; done"]);
    config.stdin = true;
    let echo = fx.create_and_start(&pod_id, &pod, config).await;
    let serve = "mkdir -p /tmp/www && echo pod-hello > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www";
    let server = fx.create_and_start(&pod_id, &pod, fx.container_config("server", &["sh", "-c", serve])).await;
    let start = Instant::now();
    while fx.exec_ok(&server, &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"]).await.code != 0 {
        assert!(start.elapsed() < T30, "httpd in the pod did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Attach: stdin in, the container's answer out; closing the connection detaches.
    let url = attach_url(&fx, AttachRequest { container_id: echo.clone(), stdin: true, tty: false, stdout: true, stderr: true }).await;
    let conn = spdy_client::connect(&url, &["v5.channel.k8s.io", "v4.channel.k8s.io"]).await.expect("upgrade");
    let (_error_r, _error_w) = conn.open("error", &[]).await;
    let (_in_r, mut stdin) = conn.open("stdin", &[]).await;
    let (mut stdout, _out_w) = conn.open("stdout", &[]).await;
    let (_err_r, _err_w) = conn.open("stderr", &[]).await;
    stdin.write_all(b"via-spdy\n").await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("got:via-spdy") {
        let n = within("attach output", T30, stdout.read(&mut buf)).await.unwrap();
        assert!(n > 0, "attach stdout ended: {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    drop((stdin, stdout, conn));
    assert_eq!(fx.status_ok(&echo).await.state, RUNNING, "detaching leaves the container running");

    // Port-forward: two connections at once on one session (requestID 0 and 1), and a closed port.
    let url = port_forward_url(&fx, &pod_id).await;
    let conn = spdy_client::connect(&url, &["portforward.k8s.io"]).await.expect("upgrade");
    assert_eq!(conn.protocol, "portforward.k8s.io");
    let forward = |id: &'static str, port: &'static str| {
        let conn = &conn;
        async move {
            let hdrs = [("port", port), ("requestID", id)];
            let (error_r, mut error_w) = conn.open("error", &hdrs).await;
            error_w.shutdown().await.unwrap();
            let (data_r, mut data_w) = conn.open("data", &hdrs).await;
            data_w.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
            let (data, error) = tokio::join!(spdy_client::read_all(data_r), spdy_client::read_all(error_r));
            (String::from_utf8_lossy(&data).into_owned(), String::from_utf8_lossy(&error).into_owned())
        }
    };
    let ((d0, e0), (d1, e1), (d2, e2)) = tokio::join!(forward("0", "8080"), forward("1", "8080"), forward("2", "8081"));
    for (d, e) in [(&d0, &e0), (&d1, &e1)] {
        assert!(d.contains("200 OK") && d.contains("pod-hello"), "forwarded response: {d:?}");
        assert!(e.is_empty(), "no error for an open port: {e:?}");
    }
    assert!(d2.is_empty() && e2.contains("8081"), "closed port: data {d2:?} error {e2:?}");
    drop(conn);

    // Port-forward refuses remotecommand protocols.
    let url = port_forward_url(&fx, &pod_id).await;
    assert_eq!(spdy_client::connect(&url, &["v4.channel.k8s.io"]).await.err().expect("refused").status, 403);

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_spdy_client_is_flow_controlled_not_buffered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fx = Fixture::start().await;
    let (pod_id, _, ctr) = pod_with_container(&fx, "spdy-flow", fx.container_config("main", &["sh", "-c", LOOP])).await;
    // Smaller than the WebSocket case: the SPDY path moves ~3 MB/s in a debug build (64 KiB windows).
    // Still well above what the socket buffers, windows and queues can hold together.
    const TOTAL: u64 = 48 * 1024 * 1024;
    let cmd = format!("head -c {TOTAL} /dev/zero; echo finished > /tmp/flow-done");
    let url = exec_url(&fx, exec_req(&ctr, &["sh", "-c", &cmd], false, true, false, false)).await;
    let conn = spdy_client::connect(&url, &["v4.channel.k8s.io"]).await.expect("upgrade");
    let (error_r, mut error_w) = conn.open("error", &[]).await;
    error_w.shutdown().await.unwrap();
    let (mut stdout, mut stdout_w) = conn.open("stdout", &[]).await;
    stdout_w.shutdown().await.unwrap();

    let daemon_pid = fx.daemon.pid().expect("daemon pid");
    let before = rss_kib(daemon_pid);
    wait_running(&format!("head -c {TOTAL}"), "producer").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = rss_kib(daemon_pid);
    assert_ne!(fx.exec_ok(&ctr, &["test", "-e", "/tmp/flow-done"]).await.code, 0, "the producer finished although nothing was read");
    assert!(during < before + 24 * 1024, "daemon RSS grew from {before} KiB to {during} KiB while the client was stalled");

    let mut total = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = within("reading stdout", T30 * 4, stdout.read(&mut buf)).await.unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert_eq!(total, TOTAL, "every byte arrives once the client reads");
    let status: serde_json::Value = serde_json::from_slice(&spdy_client::read_all(error_r).await).unwrap();
    assert_eq!(status["status"], "Success", "{status}");

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}
