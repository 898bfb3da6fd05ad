//! Pod sandbox and container lifecycle, driven over the daemon's socket the way kubelet drives it.
//!
//! Every test has its own docker-registry, daemon (temp root/state/socket) and work dir; the image is
//! Debian's static busybox built into an OCI image in Rust (`harness::busybox`), pushed to the
//! registry and pulled through `PullImage`. Each test ends by removing every pod it created and
//! checking that nothing is left on the host (`Fixture::assert_no_leaks`). No assertion depends on
//! how fast anything is; timeouts only stop a hung daemon from hanging the test.

mod harness;

use harness::busybox::{busybox_image, busybox_layer, APPLETS};
use harness::pods::*;
use harness::wait_for;
use k8s_cri::v1::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::Code;

// ---------------------------------------------------------------------------------------------
// helpers

/// A main process that runs until killed (ignores SIGTERM as PID 1 of its PID namespace).
const LOOP: &str = "while true; do sleep 1; done";
const UNKNOWN_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const T30: Duration = Duration::from_secs(30);
const T60: Duration = Duration::from_secs(60);

/// `ts` is a Unix-nanosecond time within this test run (catches seconds/milliseconds and zero).
fn assert_ts(fx: &Fixture, ts: i64, what: &str) {
    let slack = 5_000_000_000;
    let now = now_ns();
    assert!(
        ts >= fx.started_ns - slack && ts <= now + slack,
        "{what} = {ts} is not a Unix-nanosecond time of this test run ({} ..= {now})",
        fx.started_ns
    );
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn container_ids(cs: &[Container]) -> Vec<String> {
    let mut v: Vec<String> = cs.iter().map(|c| c.id.clone()).collect();
    v.sort();
    v
}

fn pod_ids(ps: &[PodSandbox]) -> Vec<String> {
    let mut v: Vec<String> = ps.iter().map(|p| p.id.clone()).collect();
    v.sort();
    v
}

fn cfilter(f: impl FnOnce(&mut ContainerFilter)) -> Option<ContainerFilter> {
    let mut filter = ContainerFilter::default();
    f(&mut filter);
    Some(filter)
}

fn pfilter(f: impl FnOnce(&mut PodSandboxFilter)) -> Option<PodSandboxFilter> {
    let mut filter = PodSandboxFilter::default();
    f(&mut filter);
    Some(filter)
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn mount(host: &Path, container: &str, readonly: bool) -> Mount {
    Mount {
        host_path: host.to_str().unwrap().to_string(),
        container_path: container.to_string(),
        readonly,
        ..Default::default()
    }
}

/// A container status must be EXITED with `code`, sane timestamps and kubelet's reason.
fn assert_exited(fx: &Fixture, s: &ContainerStatus, code: i32, what: &str) {
    assert_eq!(s.state, EXITED, "{what}: state {}", state_name(s.state));
    assert_eq!(s.exit_code, code, "{what}: exit code (reason {:?}, message {:?})", s.reason, s.message);
    assert_ts(fx, s.started_at, &format!("{what}: started_at"));
    assert_ts(fx, s.finished_at, &format!("{what}: finished_at"));
    assert!(s.finished_at >= s.started_at, "{what}: finished_at {} < started_at {}", s.finished_at, s.started_at);
    let reason = if code == 0 { "Completed" } else { "Error" };
    assert_eq!(s.reason, reason, "{what}: reason for exit code {code}");
}

/// Pid of the container's main `sh -c …` process whose command line carries `marker` (the
/// container's environment carries the fixture token, which rules out any runtime process that
/// merely has the command in its own argv).
async fn container_sh_pid(fx: &Fixture, marker: &str) -> i32 {
    let token = format!("{TOKEN_ENV}={}", fx.token);
    wait_for(&format!("the container process {marker}"), T30, || {
        let found: Vec<i32> = processes()
            .into_iter()
            .filter(|p| {
                let argv0 = p.cmdline.split(' ').next().unwrap_or("");
                p.state != 'Z'
                    && (argv0 == "sh" || argv0.ends_with("/sh"))
                    && p.cmdline.contains(marker)
                    && p.environ_contains(&token)
            })
            .map(|p| p.pid)
            .collect();
        (found.len() == 1).then(|| found[0])
    })
    .await
}

/// What the `REPORT` scripts print: where the command came from, its arguments, cwd, environment.
#[derive(Debug, Default)]
struct Report {
    source: String,
    args: Vec<String>,
    cwd: String,
    env: Vec<String>,
}

/// Prints `source:<$1-less label>`, one `arg:` line per argument, `cwd:`, one `env:` line per
/// variable, `end-of-output`, then sleeps (so ExecSync can look at the same process).
fn report_script(source: &str) -> String {
    format!(
        r#"echo "source:{source}"; for a in "$@"; do echo "arg:$a"; done; echo "cwd:$(pwd)"; env | sed 's/^/env:/'; echo end-of-output; exec sleep 3600"#
    )
}

fn parse_report(lines: &[String]) -> Report {
    let mut r = Report::default();
    for l in lines {
        if let Some(v) = l.strip_prefix("source:") {
            r.source = v.to_string();
        } else if let Some(v) = l.strip_prefix("arg:") {
            r.args.push(v.to_string());
        } else if let Some(v) = l.strip_prefix("cwd:") {
            r.cwd = v.to_string();
        } else if let Some(v) = l.strip_prefix("env:") {
            r.env.push(v.to_string());
        }
    }
    r
}

async fn wait_report(path: &Path) -> Report {
    let lines = wait_log_line(path, "end-of-output", T60).await;
    parse_report(&lines)
}

/// Collects mismatches of a table-driven test so one run reports every failing case.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.0.push(msg());
        }
    }
    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, got: T, want: T, what: impl FnOnce() -> String) {
        if got != want {
            self.0.push(format!("{}: got {got:?}, want {want:?}", what()));
        }
    }
    fn assert_none(self) {
        assert!(self.0.is_empty(), "{} failure(s):\n  {}", self.0.len(), self.0.join("\n  "));
    }
}

fn env_values<'a>(env: &'a [String], key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}=");
    env.iter().filter_map(|e| e.strip_prefix(prefix.as_str())).collect()
}

/// `wget -q -O - <url>` inside a container. (No `-T`: Debian's busybox 1.35 wget segfaults with
/// `-T` when the connection is refused.)
async fn fetch(fx: &Fixture, id: &str, url: &str) -> Exec {
    fx.exec_ok(id, &["wget", "-q", "-O", "-", url]).await
}

/// Poll `fetch` until it returns `body` (a server in the container may still be starting).
async fn wait_fetch(fx: &Fixture, id: &str, url: &str, body: &str) {
    let start = Instant::now();
    loop {
        let r = fetch(fx, id, url).await;
        if r.code == 0 && r.stdout == body {
            return;
        }
        if start.elapsed() > T60 {
            panic!("wget {url} in {id}: never got {body:?}; last: exit {} stdout {:?} stderr {:?}", r.code, r.stdout, r.stderr);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// harness self-tests (no pod RPCs: they pass before the lifecycle is implemented)

#[test]
fn harness_cri_log_parser_is_strict() {
    assert_eq!(parse_rfc3339_nanos("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_rfc3339_nanos("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
    assert_eq!(parse_rfc3339_nanos("2016-10-06T00:17:09.669794202Z"), Some(1_475_713_029_669_794_202));
    assert_eq!(parse_rfc3339_nanos("2016-10-06T02:17:09.669794202+02:00"), Some(1_475_713_029_669_794_202));
    for bad in ["2016-10-06 00:17:09Z", "2016-10-06T00:17:09.1234567890Z", "2016-10-06T00:17:09.Z", "2016-10-06T00:17:09", "2016-13-06T00:17:09Z"] {
        assert_eq!(parse_rfc3339_nanos(bad), None, "{bad}");
    }

    let log = b"2016-10-06T00:17:09.669794202Z stdout F hello world\n\
2016-10-06T00:17:09.669794203Z stderr F \n\
2016-10-06T00:17:10Z stdout P abc\n\
2016-10-06T00:17:10.1Z stdout P:x def\n\
2016-10-06T00:17:10.2Z stdout F ghi\n\
2016-10-06T00:17:10.3Z stdout P tail\n";
    let recs = parse_cri_log(log, true).unwrap();
    assert_eq!(recs.len(), 6);
    assert_eq!(recs[0].content, b"hello world");
    assert_eq!(recs[1].stream, "stderr");
    assert_eq!(recs[1].content, b"");
    let out = stream_lines(&recs, "stdout");
    assert_eq!(
        out,
        vec![(b"hello world".to_vec(), true), (b"abcdefghi".to_vec(), true), (b"tail".to_vec(), false)]
    );
    assert_eq!(stream_lines(&recs, "stderr"), vec![(Vec::new(), true)]);

    // a half-written last line is ignored while the log is live, an error once it is complete
    let live = b"2016-10-06T00:17:09Z stdout F a\n2016-10-06T00:17";
    assert_eq!(parse_cri_log(live, false).unwrap().len(), 1);
    assert!(parse_cri_log(live, true).is_err());
    for bad in [
        &b"2016-10-06T00:17:09Z stdout F\n"[..],      // no space after the tag (kubelet rejects it)
        b"2016-10-06T00:17:09Z stdin F x\n",           // bad stream
        b"2016-10-06T00:17:09Z stdout X x\n",          // bad tag
        b"2016-10-06T00:17:09  stdout F x\n",          // double space
        b"1475713029 stdout F x\n",                    // not RFC 3339
        b"2016-10-06T00:17:09.669794202 stdout F x\n", // no zone
    ] {
        assert!(parse_cri_log(bad, true).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn harness_busybox_image_runs_in_a_chroot() {
    let dir = tempfile::Builder::new().prefix("cri-lxc-busybox-").tempdir().unwrap();
    let layer = busybox_layer();
    let mut ar = tar::Archive::new(&layer.tar[..]);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.unpack(dir.path()).unwrap();
    for a in APPLETS {
        assert!(dir.path().join("bin").join(a).symlink_metadata().is_ok(), "applet {a}");
    }
    let out = std::process::Command::new("/usr/sbin/chroot")
        .arg(dir.path())
        .args(["/bin/sh", "-c", "id -u app; id -G app; id -u nobody; stat -c '%a %u' /tmp /home/app; echo ok"])
        .env_clear()
        .env("PATH", "/bin:/usr/bin")
        .output()
        .expect("run chroot");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text, "1000\n1000 2000\n65534\n1777 0\n755 1000\nok\n");
    // the image config
    let cfg: serde_json::Value = serde_json::from_slice(&busybox_image().stop_signal("SIGUSR1").config_json()).unwrap();
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(cfg["config"]["Env"], serde_json::json!(["PATH=/bin:/usr/bin"]));
    assert_eq!(cfg["config"]["StopSignal"], "SIGUSR1");
}

#[tokio::test(flavor = "multi_thread")]
async fn harness_fixture_starts_clean() {
    let fx = Fixture::start().await;
    // the leak check must not flag the daemon, the registry or the test itself
    assert_eq!(fx.leaks(), Vec::<String>::new());
    assert!(fx.image.contains("test/busybox:1"));
}

// ---------------------------------------------------------------------------------------------
// the full lifecycle

#[tokio::test(flavor = "multi_thread")]
async fn pod_and_container_full_lifecycle() {
    let fx = Fixture::start().await;

    // ----- RunPodSandbox → PodSandboxStatus
    let mut pod = fx.pod_config("web");
    pod.labels.insert("tier".into(), "front".into());
    pod.annotations.insert("note".into(), "hello pod".into());
    let pod_id = fx.run_pod(&pod).await;
    let mut other = fx.pod_config("other");
    other.labels.insert("tier".into(), "back".into());
    let other_id = fx.run_pod(&other).await;
    assert_ne!(pod_id, other_id);

    let st = fx.pod_status_ok(&pod_id).await;
    assert_eq!(st.id, pod_id);
    assert_eq!(st.metadata, pod.metadata, "metadata echoed");
    assert_eq!(st.state, READY, "a new pod is SANDBOX_READY");
    assert_ts(&fx, st.created_at, "pod created_at");
    assert_eq!(st.labels, pod.labels, "labels echoed");
    assert_eq!(st.annotations, pod.annotations, "annotations echoed");
    // `network` (the pod IP) is left to the CNI milestone: kubelet tolerates its absence.
    let ns = st
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .expect("PodSandboxStatus.linux.namespaces.options");
    assert_eq!(ns.network, NamespaceMode::Pod as i32, "network namespace mode");
    assert_eq!(ns.pid, NamespaceMode::Container as i32, "pid namespace mode");
    assert_eq!(ns.ipc, NamespaceMode::Pod as i32, "ipc namespace mode");

    // ----- ListPodSandbox and its filters
    let all = fx.list_pods(None).await;
    assert_eq!(pod_ids(&all), sorted(&[&pod_id, &other_id]));
    let item = all.iter().find(|p| p.id == pod_id).unwrap();
    assert_eq!(item.metadata, pod.metadata);
    assert_eq!(item.state, READY);
    assert_eq!(item.created_at, st.created_at);
    assert_eq!(item.labels, pod.labels);
    assert_eq!(item.annotations, pod.annotations);
    assert_eq!(pod_ids(&fx.list_pods(pfilter(|f| f.id = pod_id.clone())).await), vec![pod_id.clone()]);
    assert!(fx.list_pods(pfilter(|f| f.id = UNKNOWN_ID.into())).await.is_empty());
    let ready = pfilter(|f| f.state = Some(PodSandboxStateValue { state: READY }));
    assert_eq!(pod_ids(&fx.list_pods(ready.clone()).await), sorted(&[&pod_id, &other_id]));
    let notready = pfilter(|f| f.state = Some(PodSandboxStateValue { state: NOTREADY }));
    assert!(fx.list_pods(notready.clone()).await.is_empty());
    let front = pfilter(|f| f.label_selector = labels(&[("tier", "front")]));
    assert_eq!(pod_ids(&fx.list_pods(front).await), vec![pod_id.clone()]);
    let both = pfilter(|f| f.label_selector = labels(&[("tier", "front"), ("test", "lifecycle")]));
    assert_eq!(pod_ids(&fx.list_pods(both).await), vec![pod_id.clone()]);
    let none = pfilter(|f| f.label_selector = labels(&[("tier", "middle")]));
    assert!(fx.list_pods(none).await.is_empty());

    // ----- CreateContainer → CONTAINER_CREATED
    let mut web = fx.container_config("web", &["sh", "-c", &format!("trap 'exit 0' TERM; echo started; {LOOP}")]);
    web.labels.insert("role".into(), "server".into());
    web.annotations.insert("note".into(), "hello container".into());
    let web_log = fx.log_file(&pod, &web);
    let web_id = fx.create_ok(&pod_id, &pod, web.clone()).await;
    let idle = fx.container_config("idle", &["sh", "-c", LOOP]);
    let idle_id = fx.create_ok(&pod_id, &pod, idle.clone()).await;
    assert_ne!(web_id, idle_id);

    let s = fx.status_ok(&web_id).await;
    assert_eq!(s.id, web_id);
    assert_eq!(s.metadata, web.metadata);
    assert_eq!(s.state, CREATED, "after CreateContainer: {}", state_name(s.state));
    assert_ts(&fx, s.created_at, "container created_at");
    assert_eq!(s.started_at, 0, "started_at of a created container");
    assert_eq!(s.finished_at, 0, "finished_at of a created container");
    assert!(s.image.as_ref().is_some_and(|i| !i.image.is_empty()), "status.image: {:?}", s.image);
    assert!(!s.image_ref.is_empty(), "status.image_ref");
    assert_eq!(s.labels, web.labels, "container labels echoed");
    assert_eq!(s.annotations, web.annotations, "container annotations echoed");
    assert_eq!(
        Path::new(&s.log_path),
        web_log.as_path(),
        "status.log_path is log_directory joined with log_path (kubelet reads logs from it)"
    );
    let created_at = s.created_at;

    // ----- StartContainer → CONTAINER_RUNNING
    fx.start_ok(&web_id).await;
    let s = fx.status_ok(&web_id).await;
    assert_eq!(s.state, RUNNING, "after StartContainer: {} {:?}", state_name(s.state), s.message);
    assert_ts(&fx, s.started_at, "started_at");
    assert!(s.started_at >= created_at, "started_at {} < created_at {created_at}", s.started_at);
    assert_eq!(s.finished_at, 0);
    assert_eq!(s.created_at, created_at, "created_at is stable");
    wait_log_line(&web_log, "started", T60).await;

    // ----- ListContainers and its filters
    let all = fx.list_containers(None).await;
    assert_eq!(container_ids(&all), sorted(&[&web_id, &idle_id]));
    let c = all.iter().find(|c| c.id == web_id).unwrap();
    assert_eq!(c.pod_sandbox_id, pod_id);
    assert_eq!(c.metadata, web.metadata);
    assert_eq!(c.state, RUNNING);
    assert_eq!(c.created_at, created_at);
    assert!(c.image.as_ref().is_some_and(|i| !i.image.is_empty()));
    assert!(!c.image_ref.is_empty());
    assert_eq!(c.labels, web.labels);
    assert_eq!(c.annotations, web.annotations);
    let by_id = fx.list_containers(cfilter(|f| f.id = web_id.clone())).await;
    assert_eq!(container_ids(&by_id), vec![web_id.clone()]);
    let state = |s: i32| cfilter(move |f| f.state = Some(ContainerStateValue { state: s }));
    assert_eq!(container_ids(&fx.list_containers(state(RUNNING)).await), vec![web_id.clone()]);
    assert_eq!(container_ids(&fx.list_containers(state(CREATED)).await), vec![idle_id.clone()]);
    assert!(fx.list_containers(state(EXITED)).await.is_empty());
    let in_pod = fx.list_containers(cfilter(|f| f.pod_sandbox_id = pod_id.clone())).await;
    assert_eq!(container_ids(&in_pod), sorted(&[&web_id, &idle_id]));
    assert!(fx.list_containers(cfilter(|f| f.pod_sandbox_id = other_id.clone())).await.is_empty());
    assert!(fx.list_containers(cfilter(|f| f.pod_sandbox_id = UNKNOWN_ID.into())).await.is_empty());
    let server = fx.list_containers(cfilter(|f| f.label_selector = labels(&[("role", "server")]))).await;
    assert_eq!(container_ids(&server), vec![web_id.clone()]);
    let idle_sel = fx.list_containers(cfilter(|f| f.label_selector = labels(&[("container", "idle")]))).await;
    assert_eq!(container_ids(&idle_sel), vec![idle_id.clone()]);
    let combined = cfilter(|f| {
        f.pod_sandbox_id = pod_id.clone();
        f.state = Some(ContainerStateValue { state: CREATED });
    });
    assert_eq!(container_ids(&fx.list_containers(combined).await), vec![idle_id.clone()]);
    let mismatch = cfilter(|f| {
        f.id = web_id.clone();
        f.state = Some(ContainerStateValue { state: CREATED });
    });
    assert!(fx.list_containers(mismatch).await.is_empty());

    // ----- StopContainer → CONTAINER_EXITED (the SIGTERM trap exits 0)
    fx.stop_ok(&web_id, 30).await;
    let s = fx.status_ok(&web_id).await;
    assert_exited(&fx, &s, 0, "stopped web");
    assert_eq!(s.created_at, created_at);
    fx.stop_ok(&web_id, 30).await; // idempotent
    assert_eq!(fx.status_ok(&web_id).await.finished_at, s.finished_at, "a second stop changes nothing");
    assert_eq!(container_ids(&fx.list_containers(state(EXITED)).await), vec![web_id.clone()]);
    let log = std::fs::read(&web_log).unwrap();
    let recs = parse_cri_log(&log, true).unwrap_or_else(|e| panic!("log of the stopped container: {e}"));
    assert_eq!(stream_lines(&recs, "stdout"), vec![(b"started".to_vec(), true)]);

    // ----- RemoveContainer (twice)
    fx.remove_ok(&web_id).await;
    fx.remove_ok(&web_id).await;
    expect_code(fx.status(&web_id).await, &[Code::NotFound], "ContainerStatus of a removed container");
    assert!(fx.list_containers(cfilter(|f| f.id = web_id.clone())).await.is_empty());
    assert!(web_log.exists(), "the CRI log file belongs to kubelet: RemoveContainer must not delete it");

    // ----- StopPodSandbox → NOTREADY (twice)
    fx.stop_pod_ok(&pod_id).await;
    let st = fx.pod_status_ok(&pod_id).await;
    assert_eq!(st.state, NOTREADY, "a stopped pod is SANDBOX_NOTREADY");
    fx.stop_pod_ok(&pod_id).await;
    assert_eq!(pod_ids(&fx.list_pods(notready).await), vec![pod_id.clone()]);
    assert_eq!(pod_ids(&fx.list_pods(ready).await), vec![other_id.clone()]);

    // ----- RemovePodSandbox (twice) also removes the pod's remaining (created) container
    fx.remove_pod_ok(&pod_id).await;
    fx.remove_pod_ok(&pod_id).await;
    expect_code(fx.pod_status(&pod_id).await, &[Code::NotFound], "PodSandboxStatus of a removed pod");
    expect_code(fx.status(&idle_id).await, &[Code::NotFound], "ContainerStatus of a container of a removed pod");
    assert!(fx.list_containers(None).await.is_empty());
    assert_eq!(pod_ids(&fx.list_pods(None).await), vec![other_id.clone()]);
    fx.teardown_pod(&other_id).await;
    assert!(fx.list_pods(None).await.is_empty());

    // ----- unknown ids: Stop/Remove succeed, Status is NotFound
    fx.stop_ok(UNKNOWN_ID, 0).await;
    fx.remove_ok(UNKNOWN_ID).await;
    fx.stop_pod_ok(UNKNOWN_ID).await;
    fx.remove_pod_ok(UNKNOWN_ID).await;
    expect_code(fx.status(UNKNOWN_ID).await, &[Code::NotFound], "ContainerStatus(unknown id)");
    expect_code(fx.pod_status(UNKNOWN_ID).await, &[Code::NotFound], "PodSandboxStatus(unknown id)");

    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// exit codes, logs

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_and_reasons() {
    let fx = Fixture::start().await;
    let pod = fx.pod_config("exits");
    let pod_id = fx.run_pod(&pod).await;

    let mut ids = Vec::new();
    for (name, script) in [("zero", "exit 0"), ("one", "exit 1"), ("three", "echo to-stderr >&2; exit 3")] {
        let cfg = fx.container_config(name, &["sh", "-c", script]);
        let log = fx.log_file(&pod, &cfg);
        ids.push((name, fx.create_and_start(&pod_id, &pod, cfg).await, log));
    }
    let marker = format!("killme-{}", fx.token);
    let victim_cfg = fx.container_config("killed", &["sh", "-c", LOOP, &marker]);
    let victim = fx.create_and_start(&pod_id, &pod, victim_cfg).await;

    for ((name, id, log), code) in ids.iter().zip([0, 1, 3]) {
        let s = fx.wait_state(id, EXITED, T60).await;
        assert_exited(&fx, &s, code, name);
        // the log file exists (kubelet reads it) and is complete once the container is EXITED
        let data = std::fs::read(log).unwrap_or_else(|e| panic!("{name}: log {}: {e}", log.display()));
        let recs = parse_cri_log(&data, true).unwrap_or_else(|e| panic!("{name}: {e}"));
        if code == 3 {
            assert_eq!(stream_lines(&recs, "stderr"), vec![(b"to-stderr".to_vec(), true)]);
        } else {
            assert!(recs.is_empty(), "{name}: {recs:?}");
        }
    }

    // SIGKILL from outside (a shell that is PID 1 of its namespace cannot kill -9 itself)
    fx.wait_state(&victim, RUNNING, T30).await;
    let pid = container_sh_pid(&fx, &marker).await;
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let s = fx.wait_state(&victim, EXITED, T60).await;
    assert_exited(&fx, &s, 137, "killed with SIGKILL");

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn container_log_file_is_in_cri_format() {
    let fx = Fixture::start().await;
    let pod = fx.pod_config("logs");
    let pod_id = fx.run_pod(&pod).await;
    // stdout: two lines around an empty one, a 20000-byte line, then 20000 bytes without newline
    let script = r#"echo out1; echo err1 >&2; echo; echo out2; yes y | head -n 20000 | tr -d '\n'; echo; echo err2 >&2; yes x | head -n 20000 | tr -d '\n'"#;
    let cfg = fx.container_config("writer", &["sh", "-c", script]);
    let log = fx.log_file(&pod, &cfg);
    let id = fx.create_and_start(&pod_id, &pod, cfg).await;
    let s = fx.wait_state(&id, EXITED, T60).await;
    assert_exited(&fx, &s, 0, "writer");
    assert_eq!(Path::new(&s.log_path), log.as_path());

    let data = std::fs::read(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let recs = parse_cri_log(&data, true).unwrap_or_else(|e| {
        panic!("not a valid CRI log (complete once the container is EXITED: kubelet reads it for FallbackToLogsOnError): {e}")
    });
    let end = now_ns() as i128;
    for stream in ["stdout", "stderr"] {
        let mut last = 0i128;
        for r in recs.iter().filter(|r| r.stream == stream) {
            assert!(
                r.unix_nanos >= fx.started_ns as i128 - 5_000_000_000 && r.unix_nanos <= end + 5_000_000_000,
                "timestamp {} is not the time of this run",
                r.timestamp
            );
            assert!(r.unix_nanos >= last, "{stream} timestamps go backwards at {}", r.timestamp);
            last = r.unix_nanos;
        }
    }
    let out = stream_lines(&recs, "stdout");
    let texts: Vec<String> = out.iter().map(|(l, _)| String::from_utf8_lossy(&l[..l.len().min(20)]).into_owned()).collect();
    assert_eq!(out.len(), 5, "stdout lines (first 20 bytes each): {texts:?}");
    assert_eq!(out[0], (b"out1".to_vec(), true));
    assert_eq!(out[1], (Vec::new(), true), "an empty line is an F record with empty content");
    assert_eq!(out[2], (b"out2".to_vec(), true));
    assert_eq!(out[3], (vec![b'y'; 20000], true), "a long line: P chunks ending with an F chunk");
    assert_eq!(out[4], (vec![b'x'; 20000], false), "output ending without a newline: P chunks only");
    assert_eq!(stream_lines(&recs, "stderr"), vec![(b"err1".to_vec(), true), (b"err2".to_vec(), true)]);
    let x_chunks = recs.iter().filter(|r| r.content.first() == Some(&b'x')).count();
    assert!(x_chunks >= 1 && recs.iter().filter(|r| r.content.first() == Some(&b'x')).all(|r| r.partial));

    fx.teardown_pod(&pod_id).await;
    assert!(log.exists(), "RemovePodSandbox must not delete kubelet's log files");
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// ExecSync, StopContainer

#[tokio::test(flavor = "multi_thread")]
async fn exec_sync_output_exit_code_and_timeout() {
    let fx = Fixture::start().await;
    let pod = fx.pod_config("exec");
    let pod_id = fx.run_pod(&pod).await;
    let mut cfg = fx.container_config("target", &["sh", "-c", LOOP]);
    cfg.log_path = String::new(); // no log path at all (critest's default containers have none)
    let id = fx.create_ok(&pod_id, &pod, cfg).await;

    expect_err(fx.exec(&id, &["echo", "hi"], 10).await, "ExecSync in a CREATED container");
    fx.start_ok(&id).await;

    let r = fx.exec_ok(&id, &["echo", "hello"]).await;
    assert_eq!((r.stdout.as_str(), r.stderr.as_str(), r.code), ("hello\n", "", 0));
    let r = fx.exec_ok(&id, &["sh", "-c", "echo out; echo err >&2; exit 3"]).await;
    assert_eq!((r.stdout.as_str(), r.stderr.as_str(), r.code), ("out\n", "err\n", 3));
    let r = fx.exec(&id, &["true"], 0).await.expect("ExecSync with timeout 0 (no timeout)");
    assert_eq!(r.exit_code, 0);

    // big output on both streams, stderr first (a reader draining stdout first would deadlock)
    let r = fx.exec_ok(&id, &["sh", "-c", "yes e | head -c 300000 >&2; yes o | head -c 300000"]).await;
    assert_eq!(r.code, 0);
    assert_eq!(r.stdout.len(), 300000);
    assert_eq!(r.stderr.len(), 300000);
    assert!(r.stdout.bytes().all(|b| b == b'o' || b == b'\n'));
    assert!(r.stderr.bytes().all(|b| b == b'e' || b == b'\n'));

    // a command that does not exist: an error, or a non-zero exit code
    match fx.exec(&id, &["/no/such/binary"], 10).await {
        Ok(r) => assert_ne!(r.exit_code, 0, "ExecSync of a missing binary"),
        Err(e) => assert!(!e.message().is_empty()),
    }

    // timeout: DeadlineExceeded, and the process is gone afterwards
    let e = expect_code(fx.exec(&id, &["sleep", "37"], 2).await, &[Code::DeadlineExceeded], "ExecSync past its timeout");
    assert!(!e.message().is_empty());
    let ps = fx.exec_stdout(&id, &["ps"]).await;
    assert!(!ps.contains("sleep 37"), "the timed-out exec process is still running:\n{ps}");
    let token = format!("{TOKEN_ENV}={}", fx.token);
    let left: Vec<String> = processes()
        .into_iter()
        .filter(|p| p.state != 'Z' && p.cmdline == "sleep 37" && p.environ_contains(&token))
        .map(|p| format!("{} {}", p.pid, p.cmdline))
        .collect();
    assert!(left.is_empty(), "timed-out exec process still on the host: {left:?}");

    // the container is untouched by all this
    assert_eq!(fx.status_ok(&id).await.state, RUNNING);
    fx.stop_ok(&id, 0).await;
    assert_eq!(fx.status_ok(&id).await.state, EXITED);
    expect_err(fx.exec(&id, &["echo", "hi"], 10).await, "ExecSync in an EXITED container");
    expect_err(fx.exec(UNKNOWN_ID, &["echo", "hi"], 10).await, "ExecSync in an unknown container");

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_container_kills_a_process_ignoring_sigterm_after_the_timeout() {
    let fx = Fixture::start().await;
    let pod = fx.pod_config("stubborn");
    let pod_id = fx.run_pod(&pod).await;
    let cfg = fx.container_config("stubborn", &["sh", "-c", &format!("trap '' TERM; echo ready; {LOOP}")]);
    let log = fx.log_file(&pod, &cfg);
    let id = fx.create_and_start(&pod_id, &pod, cfg).await;
    wait_log_line(&log, "ready", T60).await;

    let t = Instant::now();
    fx.stop_ok(&id, 2).await;
    let took = t.elapsed();
    let s = fx.status_ok(&id).await;
    assert_exited(&fx, &s, 137, "stopped after ignoring SIGTERM");
    assert!(took >= Duration::from_millis(1900), "StopContainer(timeout 2) killed after only {took:?}: the grace period was not given");

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_container_sends_the_image_stop_signal() {
    let fx = Fixture::start().await;
    let usr1 = fx.push_and_pull("test/stopsignal:1", &busybox_image().stop_signal("SIGUSR1")).await;
    let pod = fx.pod_config("signals");
    let pod_id = fx.run_pod(&pod).await;

    let mut a = fx.container_config("usr1", &["sh", "-c", &format!("trap 'exit 42' USR1; echo ready; {LOOP}")]);
    a.image = Some(ImageSpec { image: usr1, ..Default::default() });
    let a_log = fx.log_file(&pod, &a);
    let a_id = fx.create_and_start(&pod_id, &pod, a).await;
    // without a StopSignal in the image the signal is SIGTERM
    let b = fx.container_config("term", &["sh", "-c", &format!("trap 'exit 43' TERM; echo ready; {LOOP}")]);
    let b_log = fx.log_file(&pod, &b);
    let b_id = fx.create_and_start(&pod_id, &pod, b).await;
    wait_log_line(&a_log, "ready", T60).await;
    wait_log_line(&b_log, "ready", T60).await;

    fx.stop_ok(&a_id, 30).await;
    assert_exited(&fx, &fx.status_ok(&a_id).await, 42, "image StopSignal SIGUSR1");
    fx.stop_ok(&b_id, 30).await;
    assert_exited(&fx, &fx.status_ok(&b_id).await, 43, "default stop signal SIGTERM");

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// process: args, env, working dir, user

#[tokio::test(flavor = "multi_thread")]
async fn process_args_env_and_workdir_from_image_and_cri() {
    let fx = Fixture::start().await;
    let image = busybox_image()
        .env("IMG_ONLY=from-image")
        .env("SHARED=image-value")
        .env("WITH_EQUALS=a=b")
        .entrypoint(&["sh", "-c", &report_script("image-entrypoint"), "argv0"])
        .cmd(&["c1", "c2"])
        .working_dir("/home/app");
    let img = fx.push_and_pull("test/process:1", &image).await;
    let pod = fx.pod_config("process");
    let pod_id = fx.run_pod(&pod).await;
    let cri_command = report_script("cri-command");

    struct Case {
        name: &'static str,
        command: Vec<String>,
        args: Vec<String>,
        working_dir: &'static str,
        source: &'static str,
        expect_args: Vec<&'static str>,
        expect_cwd: &'static str,
    }
    let cmd = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let cases = vec![
        Case { name: "image-defaults", command: vec![], args: vec![], working_dir: "", source: "image-entrypoint", expect_args: vec!["c1", "c2"], expect_cwd: "/home/app" },
        Case { name: "cri-args", command: vec![], args: cmd(&["a1", "a2 with space"]), working_dir: "", source: "image-entrypoint", expect_args: vec!["a1", "a2 with space"], expect_cwd: "/home/app" },
        Case { name: "cri-command", command: cmd(&["sh", "-c", &cri_command, "argv0"]), args: vec![], working_dir: "", source: "cri-command", expect_args: vec![], expect_cwd: "/home/app" },
        Case { name: "cri-command-args", command: cmd(&["sh", "-c", &cri_command, "argv0"]), args: cmd(&["x", "y"]), working_dir: "", source: "cri-command", expect_args: vec!["x", "y"], expect_cwd: "/home/app" },
        Case { name: "cri-workdir", command: vec![], args: vec![], working_dir: "/tmp", source: "image-entrypoint", expect_args: vec!["c1", "c2"], expect_cwd: "/tmp" },
        Case { name: "missing-workdir", command: vec![], args: vec![], working_dir: "/srv/created/by/runtime", source: "image-entrypoint", expect_args: vec!["c1", "c2"], expect_cwd: "/srv/created/by/runtime" },
    ];
    let mut f = Failures::default();
    let mut started = Vec::new();
    for c in &cases {
        let mut cfg = fx.container_config(c.name, &[]);
        cfg.image = Some(ImageSpec { image: img.clone(), ..Default::default() });
        cfg.command = c.command.clone();
        cfg.args = c.args.clone();
        cfg.working_dir = c.working_dir.to_string();
        cfg.envs.push(KeyValue { key: "SHARED".into(), value: "cri-value".into() });
        cfg.envs.push(KeyValue { key: "NEW".into(), value: "from-cri".into() });
        let log = fx.log_file(&pod, &cfg);
        let id = fx.create_ok(&pod_id, &pod, cfg).await;
        match fx.start(&id).await {
            Ok(()) => started.push((c, id, log)),
            Err(e) => f.0.push(format!("{}: StartContainer failed: {}", c.name, describe(&e))),
        }
    }

    for (c, id, log) in &started {
        let r = wait_report(log).await;
        let n = c.name;
        f.eq(r.source.as_str(), c.source, || format!("{n}: which command ran"));
        f.eq(r.args.clone(), c.expect_args.iter().map(|s| s.to_string()).collect(), || format!("{n}: arguments"));
        f.eq(r.cwd.as_str(), c.expect_cwd, || format!("{n}: working dir"));
        let env = &r.env;
        f.eq(env_values(env, "PATH"), vec!["/bin:/usr/bin"], || format!("{n}: image PATH in {env:?}"));
        f.eq(env_values(env, "IMG_ONLY"), vec!["from-image"], || format!("{n}: image env in {env:?}"));
        f.eq(env_values(env, "WITH_EQUALS"), vec!["a=b"], || format!("{n}: image env with '=' in {env:?}"));
        f.eq(env_values(env, "SHARED"), vec!["cri-value"], || format!("{n}: CRI env overrides the image's, once, in {env:?}"));
        f.eq(env_values(env, "NEW"), vec!["from-cri"], || format!("{n}: CRI env in {env:?}"));
        f.eq(env_values(env, TOKEN_ENV), vec![fx.token.as_str()], || format!("{n}: CRI env in {env:?}"));

        // ExecSync runs with the container's environment and working dir
        let exec_env: Vec<String> = fx.exec_stdout(id, &["env"]).await.lines().map(String::from).collect();
        for key in ["PATH", "IMG_ONLY", "SHARED", "NEW"] {
            f.eq(env_values(&exec_env, key), env_values(env, key), || format!("{n}: ExecSync env {key} in {exec_env:?}"));
        }
        f.eq(fx.exec_stdout(id, &["pwd"]).await, format!("{}\n", c.expect_cwd), || format!("{n}: ExecSync working dir"));
    }
    f.assert_none();

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn user_and_groups_from_image_and_security_context() {
    let fx = Fixture::start().await;
    let app_img = fx.push_and_pull("test/user-app:1", &busybox_image().user("app")).await;
    let numeric_img = fx.push_and_pull("test/user-numeric:1", &busybox_image().user("1000:2000")).await;
    let plain = fx.image.clone();
    let pod = fx.pod_config("users");
    let pod_id = fx.run_pod(&pod).await;
    let script = r#"echo "ids:$(id -u) $(id -g) $(id -G)"; echo end-of-output; exec sleep 3600"#;

    struct Case<'a> {
        name: &'static str,
        image: &'a str,
        sc: fn(&mut LinuxContainerSecurityContext),
        uid: i64,
        gid: i64,
        groups: Vec<i64>,
    }
    fn uid(s: &mut LinuxContainerSecurityContext, v: i64) {
        s.run_as_user = Some(Int64Value { value: v });
    }
    let cases = vec![
        Case { name: "image-user", image: &app_img, sc: |_| {}, uid: 1000, gid: 1000, groups: vec![2000] },
        Case { name: "image-user-numeric", image: &numeric_img, sc: |_| {}, uid: 1000, gid: 2000, groups: vec![] },
        Case { name: "override-image-user", image: &app_img, sc: |s| uid(s, 0), uid: 0, gid: 0, groups: vec![] },
        Case { name: "by-name", image: &plain, sc: |s| s.run_as_username = "app".into(), uid: 1000, gid: 1000, groups: vec![2000] },
        Case { name: "by-uid", image: &plain, sc: |s| uid(s, 1000), uid: 1000, gid: 1000, groups: vec![2000] },
        Case {
            name: "uid-and-gid",
            image: &plain,
            sc: |s| {
                uid(s, 1000);
                s.run_as_group = Some(Int64Value { value: 2000 });
            },
            uid: 1000,
            gid: 2000,
            groups: vec![],
        },
        Case {
            name: "supplemental",
            image: &plain,
            sc: |s| {
                uid(s, 1000);
                s.supplemental_groups = vec![3000];
            },
            uid: 1000,
            gid: 1000,
            groups: vec![2000, 3000],
        },
        Case { name: "nobody", image: &plain, sc: |s| uid(s, 65534), uid: 65534, gid: 65534, groups: vec![] },
        Case { name: "default-root", image: &plain, sc: |_| {}, uid: 0, gid: 0, groups: vec![] },
    ];
    let mut f = Failures::default();
    let mut started = Vec::new();
    for c in &cases {
        let mut cfg = fx.container_config(c.name, &["sh", "-c", script]);
        cfg.image = Some(ImageSpec { image: c.image.to_string(), ..Default::default() });
        (c.sc)(cfg.linux.as_mut().unwrap().security_context.as_mut().unwrap());
        let log = fx.log_file(&pod, &cfg);
        let id = fx.create_ok(&pod_id, &pod, cfg).await;
        match fx.start(&id).await {
            Ok(()) => started.push((c, id, log)),
            Err(e) => f.0.push(format!("{}: StartContainer failed: {}", c.name, describe(&e))),
        }
    }
    for (c, id, log) in &started {
        let n = c.name;
        let lines = wait_log_line(log, "end-of-output", T60).await;
        let ids = lines.iter().find_map(|l| l.strip_prefix("ids:")).unwrap_or_else(|| panic!("{n}: {lines:?}"));
        let nums: Vec<i64> = ids.split_whitespace().map(|x| x.parse().unwrap()).collect();
        f.eq((nums[0], nums[1]), (c.uid, c.gid), || format!("{n}: uid and gid of the main process ({ids})"));
        for g in &c.groups {
            f.check(nums[2..].contains(g), || format!("{n}: supplementary group {g} missing from the main process ({ids})"));
        }
        // ExecSync runs as the container's user, with its groups
        let u = fx.exec_stdout(id, &["id", "-u"]).await;
        let g = fx.exec_stdout(id, &["id", "-g"]).await;
        f.eq((u.trim().to_string(), g.trim().to_string()), (c.uid.to_string(), c.gid.to_string()), || format!("{n}: ExecSync uid and gid"));
        let gs = fx.exec_stdout(id, &["id", "-G"]).await;
        for g in &c.groups {
            f.check(gs.split_whitespace().any(|x| x == g.to_string()), || format!("{n}: ExecSync groups {:?} lack {g}", gs.trim()));
        }
    }
    f.assert_none();

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// mounts

#[tokio::test(flavor = "multi_thread")]
async fn host_path_mounts_read_write_read_only_file_and_missing_source() {
    let fx = Fixture::start().await;
    let rw = fx.host_dir("rw");
    std::fs::write(rw.join("from-host.txt"), "host-data\n").unwrap();
    let ro = fx.host_dir("ro");
    std::fs::write(ro.join("ro.txt"), "read-only-data\n").unwrap();
    let missing = fx.work().join("host/missing/nested");
    let hosts = fx.work().join("host/hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n10.1.2.3 test-entry\n").unwrap();

    let pod = fx.pod_config("mounts");
    let pod_id = fx.run_pod(&pod).await;
    let mut cfg = fx.container_config("mounter", &["sh", "-c", LOOP]);
    cfg.mounts = vec![
        mount(&rw, "/mnt/rw", false),
        mount(&ro, "/mnt/ro", true),
        mount(&missing, "/mnt/created", false),
        mount(&hosts, "/etc/hosts", false),
    ];
    let expected_mounts = cfg.mounts.clone();
    let id = fx.create_ok(&pod_id, &pod, cfg).await;
    fx.start_ok(&id).await;
    assert!(missing.is_dir(), "a missing host path is created as a directory");

    assert_eq!(fx.exec_stdout(&id, &["cat", "/mnt/rw/from-host.txt"]).await, "host-data\n");
    fx.exec_stdout(&id, &["sh", "-c", "echo written-inside > /mnt/rw/inside.txt"]).await;
    assert_eq!(std::fs::read_to_string(rw.join("inside.txt")).unwrap(), "written-inside\n", "a write inside shows on the host");
    std::fs::write(rw.join("later.txt"), "later\n").unwrap();
    assert_eq!(fx.exec_stdout(&id, &["cat", "/mnt/rw/later.txt"]).await, "later\n", "a host write shows inside");

    assert_eq!(fx.exec_stdout(&id, &["cat", "/mnt/ro/ro.txt"]).await, "read-only-data\n");
    let r = fx.exec_ok(&id, &["touch", "/mnt/ro/nope"]).await;
    assert_ne!(r.code, 0, "writing to a read-only mount must fail");
    assert!(!ro.join("nope").exists());

    fx.exec_stdout(&id, &["sh", "-c", "echo in-created > /mnt/created/file"]).await;
    assert_eq!(std::fs::read_to_string(missing.join("file")).unwrap(), "in-created\n");
    assert_eq!(fx.exec_stdout(&id, &["cat", "/etc/hosts"]).await, "127.0.0.1 localhost\n10.1.2.3 test-entry\n", "a file mount");

    let s = fx.status_ok(&id).await;
    for m in &expected_mounts {
        assert!(
            s.mounts.iter().any(|x| x.container_path == m.container_path && x.host_path == m.host_path && x.readonly == m.readonly),
            "ContainerStatus.mounts lacks {} -> {} (ro {}): {:?}",
            m.host_path,
            m.container_path,
            m.readonly,
            s.mounts
        );
    }

    fx.teardown_pod(&pod_id).await;
    // removing the container must not delete through its bind mounts
    assert_eq!(std::fs::read_to_string(rw.join("from-host.txt")).unwrap(), "host-data\n");
    assert_eq!(std::fs::read_to_string(rw.join("inside.txt")).unwrap(), "written-inside\n");
    assert_eq!(std::fs::read_to_string(ro.join("ro.txt")).unwrap(), "read-only-data\n");
    assert_eq!(std::fs::read_to_string(missing.join("file")).unwrap(), "in-created\n");
    assert!(hosts.is_file());
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// pod namespaces: network, hostname, DNS

#[tokio::test(flavor = "multi_thread")]
async fn containers_of_a_pod_share_network_and_hostname_other_pods_do_not() {
    let fx = Fixture::start().await;
    let mut one = fx.pod_config("pod-one");
    one.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["ns1.svc.cluster.local".into(), "svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let two = fx.pod_config("pod-two");
    let one_id = fx.run_pod(&one).await;
    let two_id = fx.run_pod(&two).await;

    let serve = |body: &str, extra: &str| {
        format!(
            "mkdir -p /tmp/www && echo {body} > /tmp/www/index.html && echo only-in-{body} > /tmp/www/only.html && {extra} exec httpd -f -p 8080 -h /tmp/www"
        )
    };
    let server1 = fx
        .create_and_start(&one_id, &one, fx.container_config("server", &["sh", "-c", &serve("pod-one", "httpd -p 8081 -h /tmp/www &&")]))
        .await;
    let client1 = fx.create_and_start(&one_id, &one, fx.container_config("client", &["sh", "-c", LOOP])).await;
    let server2 = fx.create_and_start(&two_id, &two, fx.container_config("server", &["sh", "-c", &serve("pod-two", "")])).await;

    // the client container reaches the server container of its pod on 127.0.0.1
    wait_fetch(&fx, &client1, "http://127.0.0.1:8080/", "pod-one\n").await;
    wait_fetch(&fx, &client1, "http://127.0.0.1:8081/only.html", "only-in-pod-one\n").await;
    // the other pod has its own loopback: its own server on the same port, nothing on 8081
    wait_fetch(&fx, &server2, "http://127.0.0.1:8080/", "pod-two\n").await;
    let r = fetch(&fx, &server2, "http://127.0.0.1:8081/only.html").await;
    assert_ne!(r.code, 0, "pod two reached pod one's 127.0.0.1:8081: {r:?}");

    // hostname: the pod's, shared by its containers
    assert_eq!(fx.exec_stdout(&server1, &["hostname"]).await, "pod-one\n");
    assert_eq!(fx.exec_stdout(&client1, &["hostname"]).await, "pod-one\n");
    assert_eq!(fx.exec_stdout(&server2, &["hostname"]).await, "pod-two\n");

    // DNS config → /etc/resolv.conf
    let resolv = fx.exec_stdout(&client1, &["cat", "/etc/resolv.conf"]).await;
    let lines: Vec<Vec<&str>> = resolv.lines().map(|l| l.split_whitespace().collect()).collect();
    for want in [
        vec!["nameserver", "10.96.0.10"],
        vec!["search", "ns1.svc.cluster.local", "svc.cluster.local"],
        vec!["options", "ndots:5"],
    ] {
        assert!(lines.contains(&want), "/etc/resolv.conf lacks {want:?}:\n{resolv}");
    }

    fx.teardown_pod(&one_id).await;
    fx.teardown_pod(&two_id).await;
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// daemon restarts

#[tokio::test(flavor = "multi_thread")]
async fn containers_survive_daemon_kill_and_restart() {
    let mut fx = Fixture::start().await;
    let ctl = fx.host_dir("ctl");
    let pod = fx.pod_config("survivor");
    let pod_id = fx.run_pod(&pod).await;

    let ticker = fx.container_config("ticker", &["sh", "-c", r#"i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.1; done"#]);
    let ticker_log = fx.log_file(&pod, &ticker);
    let ticker_id = fx.create_and_start(&pod_id, &pod, ticker).await;
    let mut exiter = fx.container_config("exiter", &["sh", "-c", "echo waiting; while [ ! -e /ctl/go ]; do sleep 0.1; done; echo bye; exit 5"]);
    exiter.mounts = vec![mount(&ctl, "/ctl", true)];
    let exiter_log = fx.log_file(&pod, &exiter);
    let exiter_id = fx.create_and_start(&pod_id, &pod, exiter).await;
    let late_id = fx.create_ok(&pod_id, &pod, fx.container_config("late", &["sh", "-c", LOOP])).await;

    let ticks = |p: &Path| stdout_lines(p).iter().filter(|l| l.starts_with("tick ")).count();
    wait_log(&ticker_log, "3 ticks", T60, |l| l.iter().filter(|x| x.starts_with("tick ")).count() >= 3).await;
    wait_log_line(&exiter_log, "waiting", T60).await;

    // ----- kill -9: the containers keep running and logging without the daemon
    fx.kill_daemon().await;
    let n = ticks(&ticker_log);
    wait_log(&ticker_log, "ticks while the daemon is down", T60, |l| l.iter().filter(|x| x.starts_with("tick ")).count() >= n + 5).await;
    // one container exits while the daemon is down
    std::fs::write(ctl.join("go"), "").unwrap();
    wait_log_line(&exiter_log, "bye", T60).await;

    fx.start_daemon().await;
    let pods = fx.list_pods(None).await;
    assert_eq!(pod_ids(&pods), vec![pod_id.clone()]);
    assert_eq!(pods[0].state, READY, "the pod is still ready after the restart");
    let states: HashMap<String, i32> = fx.list_containers(None).await.into_iter().map(|c| (c.id, c.state)).collect();
    assert_eq!(states.len(), 3, "{states:?}");
    assert_eq!(states[&ticker_id], RUNNING, "ticker after the restart: {}", state_name(states[&ticker_id]));
    assert_eq!(states[&late_id], CREATED, "never-started container after the restart: {}", state_name(states[&late_id]));
    let s = fx.wait_state(&exiter_id, EXITED, T60).await;
    assert_exited(&fx, &s, 5, "container that exited while the daemon was down");
    assert_eq!(fx.status_ok(&ticker_id).await.state, RUNNING);
    let n = ticks(&ticker_log);
    wait_log(&ticker_log, "ticks after the restart", T60, |l| l.iter().filter(|x| x.starts_with("tick ")).count() >= n + 5).await;
    assert_eq!(fx.exec_stdout(&ticker_id, &["echo", "alive"]).await, "alive\n", "ExecSync after the restart");
    fx.start_ok(&late_id).await;
    assert_eq!(fx.status_ok(&late_id).await.state, RUNNING, "a container created before the restart starts after it");

    // ----- a graceful restart (SIGTERM) does not stop containers either
    fx.restart_daemon().await;
    assert_eq!(fx.status_ok(&ticker_id).await.state, RUNNING, "ticker after a SIGTERM restart");
    assert_eq!(fx.status_ok(&late_id).await.state, RUNNING, "late after a SIGTERM restart");
    assert_exited(&fx, &fx.status_ok(&exiter_id).await, 5, "exiter after a second restart");
    let n = ticks(&ticker_log);
    wait_log(&ticker_log, "ticks after the second restart", T60, |l| l.iter().filter(|x| x.starts_with("tick ")).count() >= n + 3).await;

    // ----- Stop and Remove work after the restarts
    fx.stop_ok(&ticker_id, 5).await;
    assert_eq!(fx.status_ok(&ticker_id).await.state, EXITED);
    let data = std::fs::read(&ticker_log).unwrap();
    parse_cri_log(&data, true).unwrap_or_else(|e| panic!("ticker log across restarts: {e}"));
    fx.stop_ok(&late_id, 5).await;
    for id in [&ticker_id, &exiter_id, &late_id] {
        fx.remove_ok(id).await;
    }
    fx.teardown_pod(&pod_id).await;
    assert!(fx.list_pods(None).await.is_empty());
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// concurrency

#[tokio::test(flavor = "multi_thread")]
async fn twenty_pods_started_concurrently() {
    let fx = Fixture::start().await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let cri = fx.cri.clone();
        tasks.push(tokio::spawn(async move {
            let pod = cri.pod_config(&format!("many-{i}"));
            let pod_id = cri.run_pod(&pod).await;
            let ctr = cri.create_and_start(&pod_id, &pod, cri.container_config("main", &["sh", "-c", LOOP])).await;
            (pod_id, ctr)
        }));
    }
    let mut started = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await {
            Ok(v) => started.push(v),
            Err(e) => panic!("pod many-{i}: {e}"),
        }
    }
    let mut pods: Vec<&str> = started.iter().map(|(p, _)| p.as_str()).collect();
    pods.sort();
    pods.dedup();
    assert_eq!(pods.len(), 20, "pod ids are distinct");
    for (_, c) in &started {
        fx.wait_state(c, RUNNING, T60).await;
    }
    let running = fx.list_containers(cfilter(|f| f.state = Some(ContainerStateValue { state: RUNNING }))).await;
    assert_eq!(running.len(), 20);
    let ready = fx.list_pods(pfilter(|f| f.state = Some(PodSandboxStateValue { state: READY }))).await;
    assert_eq!(ready.len(), 20);

    let mut tasks = Vec::new();
    for (pod_id, _) in started {
        let cri = fx.cri.clone();
        tasks.push(tokio::spawn(async move { cri.teardown_pod(&pod_id).await }));
    }
    for t in tasks {
        t.await.expect("teardown task");
    }
    assert!(fx.list_pods(None).await.is_empty());
    assert!(fx.list_containers(None).await.is_empty());
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// bad input

#[tokio::test(flavor = "multi_thread")]
async fn invalid_pod_sandbox_requests_are_rejected() {
    let fx = Fixture::start().await;
    expect_code(fx.run_pod_with(None, "").await, &[Code::InvalidArgument], "RunPodSandbox without config");
    let mut no_meta = fx.pod_config("no-meta");
    no_meta.metadata = None;
    expect_code(fx.run_pod_with(Some(no_meta), "").await, &[Code::InvalidArgument], "RunPodSandbox without metadata");
    let e = expect_code(
        fx.run_pod_with(Some(fx.pod_config("bad-handler")), "no-such-runtime").await,
        &[Code::InvalidArgument],
        "RunPodSandbox with an unknown runtime handler",
    );
    assert!(e.message().contains("no-such-runtime"), "the message names the handler: {}", e.message());
    assert!(fx.list_pods(None).await.is_empty(), "nothing was created by the rejected requests");

    let default_pod = fx.pod_config("handler-default");
    let a = fx.run_pod_with(Some(default_pod.clone()), "").await.unwrap_or_else(|e| panic!("handler \"\": {}", describe(&e)));
    let b = fx
        .run_pod_with(Some(fx.pod_config("handler-lxc")), "lxc")
        .await
        .unwrap_or_else(|e| panic!("handler \"lxc\": {}", describe(&e)));
    assert_eq!(fx.pod_status_ok(&a).await.state, READY);
    assert_eq!(fx.pod_status_ok(&b).await.state, READY);

    // the same metadata again while the first pod exists: the name is reserved
    let e = expect_err(fx.run_pod_with(Some(default_pod), "").await, "RunPodSandbox with a name in use");
    assert!(e.message().contains("reserved"), "message: {}", describe(&e));
    assert_eq!(fx.list_pods(None).await.len(), 2);

    fx.teardown_pod(&a).await;
    fx.teardown_pod(&b).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_container_requests_are_rejected() {
    let fx = Fixture::start().await;
    let pod = fx.pod_config("bad-containers");
    let pod_id = fx.run_pod(&pod).await;
    let cfg = |name: &str| fx.container_config(name, &["sh", "-c", LOOP]);

    expect_code(fx.create(UNKNOWN_ID, &pod, cfg("orphan")).await, &[Code::NotFound], "CreateContainer in an unknown pod");
    let req = |config: Option<ContainerConfig>| CreateContainerRequest {
        pod_sandbox_id: pod_id.clone(),
        config,
        sandbox_config: Some(pod.clone()),
    };
    expect_err(fx.create_raw(req(None)).await, "CreateContainer without config");
    let mut c = cfg("no-meta");
    c.metadata = None;
    expect_err(fx.create_raw(req(Some(c))).await, "CreateContainer without metadata");
    let mut c = cfg("no-image");
    c.image = None;
    expect_err(fx.create_raw(req(Some(c))).await, "CreateContainer without image");

    let mut c = cfg("not-pulled");
    let never = fx.registry.image("test/never-pulled:1");
    c.image = Some(ImageSpec { image: never.clone(), ..Default::default() });
    let e = expect_err(fx.create(&pod_id, &pod, c).await, "CreateContainer with an image that was not pulled");
    assert!(
        e.code() == Code::NotFound || e.message().to_lowercase().contains("not found"),
        "expected a not-found error for {never}, got {}",
        describe(&e)
    );
    assert!(fx.list_containers(None).await.is_empty(), "nothing was created by the rejected requests");

    // names: (name, attempt) is unique within the pod until the container is removed
    let first = fx.create_ok(&pod_id, &pod, cfg("dup")).await;
    let e = expect_err(fx.create(&pod_id, &pod, cfg("dup")).await, "CreateContainer with a name in use");
    assert!(e.message().contains("reserved"), "message: {}", describe(&e));
    let mut retry = cfg("dup");
    retry.metadata.as_mut().unwrap().attempt = 1;
    let second = fx.create_ok(&pod_id, &pod, retry).await; // kubelet's restart: attempt + 1
    fx.remove_ok(&first).await;
    let third = fx.create_ok(&pod_id, &pod, cfg("dup")).await; // the name is free again
    assert_eq!(fx.list_containers(None).await.len(), 2);

    // a stopped pod takes no new containers
    let stopped = fx.pod_config("stopped");
    let stopped_id = fx.run_pod(&stopped).await;
    fx.stop_pod_ok(&stopped_id).await;
    let e = expect_err(fx.create(&stopped_id, &stopped, cfg("late")).await, "CreateContainer in a stopped pod");
    let msg = e.message().to_lowercase();
    assert!(
        ["not ready", "notready", "not_ready", "stopped", "not running"].iter().any(|w| msg.contains(w)),
        "the message should say the pod is not ready: {}",
        describe(&e)
    );

    for id in [&second, &third] {
        fx.remove_ok(id).await;
    }
    fx.teardown_pod(&pod_id).await;
    fx.remove_pod_ok(&stopped_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_cannot_run_fails_cleanly() {
    let fx = Fixture::start().await;
    let pod = fx.pod_config("broken");
    let pod_id = fx.run_pod(&pod).await;
    for (name, cmd) in [("missing-binary", "/no/such/binary"), ("not-executable", "/etc/passwd")] {
        let cfg = fx.container_config(name, &[cmd]);
        let log = fx.log_file(&pod, &cfg);
        let id = fx.create_ok(&pod_id, &pod, cfg).await;
        match within(&format!("StartContainer({name})"), T60, fx.start(&id)).await {
            Err(e) => {
                let msg = e.message().to_lowercase();
                assert!(
                    msg.contains(cmd) || msg.contains("no such file") || msg.contains("permission denied") || msg.contains("not found"),
                    "{name}: StartContainer error should say what is wrong: {}",
                    describe(&e)
                );
                let s = fx.status_ok(&id).await;
                assert_ne!(s.state, RUNNING, "{name}: RUNNING after a failed start");
                if s.state == EXITED {
                    assert_ne!(s.exit_code, 0, "{name}: a failed start is not a success");
                }
            }
            Ok(()) => {
                let s = fx.wait_state(&id, EXITED, T60).await;
                assert_ne!(s.exit_code, 0, "{name}: exit code");
                let logged = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(
                    !s.message.is_empty() || logged.contains(cmd),
                    "{name}: neither ContainerStatus.message nor the log says what went wrong (reason {:?})",
                    s.reason
                );
            }
        }
        fx.remove_ok(&id).await;
        expect_code(fx.status(&id).await, &[Code::NotFound], "ContainerStatus after remove");
    }
    // the pod is fine
    let ok = fx.create_and_start(&pod_id, &pod, fx.container_config("fine", &["sh", "-c", LOOP])).await;
    assert_eq!(fx.status_ok(&ok).await.state, RUNNING);
    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// leaks

#[tokio::test(flavor = "multi_thread")]
async fn removing_pods_in_every_state_leaves_nothing_behind() {
    let fx = Fixture::start().await;

    // pod A: a running container, an exited one, a never-started one, after an exec; stopped first
    let a = fx.pod_config("leak-a");
    let a_id = fx.run_pod(&a).await;
    let running = fx.create_and_start(&a_id, &a, fx.container_config("running", &["sh", "-c", LOOP])).await;
    let exited = fx.create_and_start(&a_id, &a, fx.container_config("exited", &["true"])).await;
    let created = fx.create_ok(&a_id, &a, fx.container_config("created", &["sh", "-c", LOOP])).await;
    assert_eq!(fx.exec_stdout(&running, &["echo", "x"]).await, "x\n");
    fx.wait_state(&exited, EXITED, T60).await;

    fx.stop_pod_ok(&a_id).await;
    assert_eq!(fx.pod_status_ok(&a_id).await.state, NOTREADY);
    let s = fx.status_ok(&running).await;
    assert_eq!(s.state, EXITED, "StopPodSandbox stops the pod's running containers: {}", state_name(s.state));
    expect_err(fx.exec(&running, &["echo", "x"], 10).await, "ExecSync in a container of a stopped pod");
    fx.remove_pod_ok(&a_id).await;
    for id in [&running, &exited, &created] {
        expect_code(fx.status(id).await, &[Code::NotFound], "container of a removed pod");
    }

    // pod B: removed while READY with a running container (RemovePodSandbox must force it)
    let b = fx.pod_config("leak-b");
    let b_id = fx.run_pod(&b).await;
    let b_ctr = fx.create_and_start(&b_id, &b, fx.container_config("running", &["sh", "-c", LOOP])).await;
    // the leak check is not vacuous: while a pod runs it sees the pod's processes, mounts, cgroups
    let live = fx.leaks();
    for what in ["container process left", "mount left", "cgroup left", "is not empty"] {
        assert!(live.iter().any(|l| l.contains(what)), "leak check sees no {what:?} of a running pod:\n  {}", live.join("\n  "));
    }
    fx.remove_pod_ok(&b_id).await;
    expect_code(fx.pod_status(&b_id).await, &[Code::NotFound], "removed ready pod");
    expect_code(fx.status(&b_ctr).await, &[Code::NotFound], "container of a pod removed while running");

    // pod C: never had a container
    let c = fx.pod_config("leak-c");
    let c_id = fx.run_pod(&c).await;
    fx.teardown_pod(&c_id).await;

    assert!(fx.list_pods(None).await.is_empty());
    assert!(fx.list_containers(None).await.is_empty());
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// ReopenContainerLog (kubelet's log rotation)

/// The counter values of `count <n>` stdout lines, in order; panics on any other stdout line or on
/// an unterminated one (`what` names the file for the message).
fn counters(recs: &[LogRecord], what: &str) -> Vec<u64> {
    stream_lines(recs, "stdout")
        .into_iter()
        .filter(|(_, done)| *done)
        .map(|(l, _)| {
            let l = String::from_utf8_lossy(&l).into_owned();
            l.strip_prefix("count ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{what}: unexpected stdout line {l:?}"))
        })
        .collect()
}

/// `v` is `first, first + 1, …` (no line lost or repeated).
fn assert_contiguous(v: &[u64], first: u64, what: &str) {
    let want: Vec<u64> = (first..first + v.len() as u64).collect();
    assert_eq!(v, want.as_slice(), "{what}: counter lines are not contiguous from {first}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reopen_container_log_after_rotation() {
    let fx = Fixture::start().await;
    let pod = fx.pod_config("rotate");
    let pod_id = fx.run_pod(&pod).await;
    let cfg = fx.container_config("counter", &["sh", "-c", r#"i=0; while true; do i=$((i+1)); echo "count $i"; sleep 0.1; done"#]);
    let log = fx.log_file(&pod, &cfg);
    let id = fx.create_and_start(&pod_id, &pod, cfg).await;
    let count_lines = |l: &[String]| l.iter().filter(|x| x.starts_with("count ")).count();
    wait_log(&log, "3 counter lines", T60, |l| count_lines(l) >= 3).await;

    // kubelet's rotation, twice: rename 0.log, ReopenContainerLog, the writer starts a new 0.log.
    let mut next = 1u64; // the first counter value the current 0.log must start with
    for round in 1..=2 {
        let rotated = log.with_file_name(format!("0.log.{round}"));
        std::fs::rename(&log, &rotated).unwrap();
        if let Err(e) = fx.reopen_log(&id).await {
            panic!("round {round}: ReopenContainerLog after renaming the log failed: {}", describe(&e));
        }
        // the new file appears and gets new lines (read_log parses strictly, panicking otherwise)
        wait_log(&log, &format!("round {round}: 3 counter lines in the reopened 0.log"), T60, |l| count_lines(l) >= 3).await;
        // the writer has moved on: the rotated file is final, complete and strictly valid
        let data = std::fs::read(&rotated).unwrap();
        let recs = parse_cri_log(&data, true).unwrap_or_else(|e| panic!("round {round}: rotated {}: {e}", rotated.display()));
        let old = counters(&recs, &rotated.display().to_string());
        assert!(!old.is_empty(), "round {round}: the rotated file has no counter lines");
        assert_contiguous(&old, next, &format!("round {round}: rotated {}", rotated.display()));
        let last_old = *old.last().unwrap();
        let new = counters(&read_log(&log), "reopened 0.log");
        assert!(
            new.iter().all(|n| *n > last_old),
            "round {round}: the reopened 0.log has counters {new:?}, not all after the rotated file's last {last_old}"
        );
        assert_contiguous(&new, last_old + 1, &format!("round {round}: reopened 0.log (nothing lost between the files)"));
        next = last_old + 1;
    }
    assert_eq!(fx.status_ok(&id).await.state, RUNNING, "the container keeps running through rotations");

    // ReopenContainerLog on a container that is not running: an error naming the problem
    let check_not_running = |e: &tonic::Status, cid: &str, what: &str| {
        let msg = e.message().to_lowercase();
        assert!(
            msg.contains(cid) || msg.contains(&cid[..12]) || msg.contains("not running"),
            "{what}: the message should name the container or say it is not running: {}",
            describe(e)
        );
    };
    let created = fx.create_ok(&pod_id, &pod, fx.container_config("never-started", &["sh", "-c", LOOP])).await;
    let e = expect_err(fx.reopen_log(&created).await, "ReopenContainerLog on a CREATED container");
    check_not_running(&e, &created, "CREATED container");

    fx.stop_ok(&id, 0).await;
    assert_eq!(fx.status_ok(&id).await.state, EXITED);
    let data = std::fs::read(&log).unwrap();
    let recs = parse_cri_log(&data, true).unwrap_or_else(|e| panic!("final 0.log after the container exited: {e}"));
    assert_contiguous(&counters(&recs, "final 0.log"), next, "final 0.log");
    let e = expect_err(fx.reopen_log(&id).await, "ReopenContainerLog on an EXITED container");
    check_not_running(&e, &id, "EXITED container");
    expect_code(fx.reopen_log(UNKNOWN_ID).await, &[Code::NotFound], "ReopenContainerLog(unknown id)");

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// RemoveImage and containers

#[tokio::test(flavor = "multi_thread")]
async fn remove_image_in_use_is_refused_untag_is_allowed() {
    let fx = Fixture::start().await;
    let tag1 = fx.image.clone();
    let tag2 = fx.push_and_pull("test/busybox:2", &busybox_image()).await;
    let img = fx.image_status(&tag1).await.expect("ImageStatus(tag 1)");
    let img2 = fx.image_status(&tag2).await.expect("ImageStatus(tag 2)");
    assert_eq!(img.id, img2.id, "the same image under two tags has one id");
    let image_id = img.id.clone();
    for t in [&tag1, &tag2] {
        assert!(img2.repo_tags.contains(t), "repo_tags {:?} lack {t}", img2.repo_tags);
    }

    let pod = fx.pod_config("image-user");
    let pod_id = fx.run_pod(&pod).await;
    let mut cfg = fx.container_config("user", &["sh", "-c", LOOP]);
    cfg.image = Some(ImageSpec { image: tag2.clone(), ..Default::default() });
    let ctr = fx.create_and_start(&pod_id, &pod, cfg).await;

    // untagging the tag the container was created from is fine: the image keeps tag 1
    if let Err(e) = fx.remove_image(&tag2).await {
        panic!("RemoveImage({tag2}) (untag while in use) failed: {}", describe(&e));
    }
    let after = fx.image_status(&tag1).await.expect("ImageStatus(tag 1) after untagging tag 2");
    assert_eq!(after.id, image_id);
    assert!(after.repo_tags.contains(&tag1), "tag 1 is gone: {:?}", after.repo_tags);
    assert!(!after.repo_tags.contains(&tag2), "tag 2 is still there: {:?}", after.repo_tags);
    assert!(fx.image_status(&tag2).await.is_none(), "ImageStatus(tag 2) after untagging");

    // deleting the image itself is refused while a container uses it
    let e = expect_code(fx.remove_image(&image_id).await, &[Code::FailedPrecondition], "RemoveImage(id) of an image in use");
    assert!(e.message().contains("in use"), "message: {}", describe(&e));
    assert!(fx.list_images().await.iter().any(|i| i.id == image_id), "the image in use is still listed");
    assert_eq!(fx.image_status(&image_id).await.map(|i| i.id), Some(image_id.clone()), "ImageStatus(id) after the refusal");
    assert_eq!(fx.exec_stdout(&ctr, &["echo", "still-fine"]).await, "still-fine\n", "the container is unaffected");

    // once the container is removed the image can go
    fx.stop_ok(&ctr, 0).await;
    fx.remove_ok(&ctr).await;
    if let Err(e) = fx.remove_image(&image_id).await {
        panic!("RemoveImage({image_id}) after its container was removed failed: {}", describe(&e));
    }
    assert!(!fx.list_images().await.iter().any(|i| i.id == image_id), "the removed image is still listed");
    assert!(fx.image_status(&tag1).await.is_none(), "ImageStatus(tag 1) after removing the image");

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// PID namespace modes

/// A pod config with `pid` as the pod's PID namespace mode (and the containers', via
/// [`pid_container`]), as kubelet sends it (e.g. POD for `shareProcessNamespace: true`).
fn pid_pod(fx: &Fixture, name: &str, pid: NamespaceMode) -> PodSandboxConfig {
    let mut pod = fx.pod_config(name);
    let sc = pod.linux.as_mut().unwrap().security_context.as_mut().unwrap();
    sc.namespace_options.as_mut().unwrap().pid = pid as i32;
    pod
}

fn pid_container(fx: &Fixture, name: &str, pid: NamespaceMode, command: &[&str]) -> ContainerConfig {
    let mut cfg = fx.container_config(name, command);
    let sc = cfg.linux.as_mut().unwrap().security_context.as_mut().unwrap();
    sc.namespace_options.as_mut().unwrap().pid = pid as i32;
    cfg
}

fn assert_pod_pid_mode(st: &PodSandboxStatus, pid: NamespaceMode) {
    let ns = st.linux.as_ref().and_then(|l| l.namespaces.as_ref()).and_then(|n| n.options.as_ref());
    assert_eq!(ns.map(|n| n.pid), Some(pid as i32), "PodSandboxStatus.linux.namespaces.options.pid");
}

/// Host pid of the container process whose command line is exactly `cmdline` (and that carries
/// the fixture token in its environment).
async fn container_pid(fx: &Fixture, cmdline: &str) -> i32 {
    let token = format!("{TOKEN_ENV}={}", fx.token);
    wait_for(&format!("the container process {cmdline:?}"), T30, || {
        let found: Vec<i32> = processes()
            .into_iter()
            .filter(|p| p.state != 'Z' && p.cmdline == cmdline && p.environ_contains(&token))
            .map(|p| p.pid)
            .collect();
        (found.len() == 1).then(|| found[0])
    })
    .await
}

/// `/proc/<pid>/ns/pid` (e.g. `pid:[4026531836]`).
fn pid_ns(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).map(|p| p.display().to_string()).unwrap_or_else(|e| format!("<{e}>"))
}

/// The pid as seen in its innermost PID namespace (last `NSpid:` field of `/proc/<pid>/status`).
fn inner_pid(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("NSpid:"))?.split_whitespace().last()?.parse().ok()
}

/// Host pid and command line of PID 1 of the PID namespace `ns` (a `pid:[…]` link).
fn init_of_pid_ns(ns: &str) -> Option<(i32, String)> {
    processes()
        .into_iter()
        .find(|p| p.state != 'Z' && pid_ns(p.pid) == ns && inner_pid(p.pid) == Some(1))
        .map(|p| (p.pid, p.cmdline))
}

/// `/proc/1/cmdline` inside a container, NULs as spaces.
async fn pid1_cmdline(fx: &Fixture, id: &str) -> String {
    fx.exec_stdout(id, &["cat", "/proc/1/cmdline"]).await.replace('\0', " ").trim_end().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn pid_namespace_pod_mode_shares_processes_between_containers() {
    let fx = Fixture::start().await;
    let pod = pid_pod(&fx, "pid-pod", NamespaceMode::Pod);
    let pod_id = fx.run_pod(&pod).await;
    assert_pod_pid_mode(&fx.pod_status_ok(&pod_id).await, NamespaceMode::Pod);
    let a_cfg = pid_container(&fx, "a", NamespaceMode::Pod, &["sh", "-c", "exec sleep 1001"]);
    let b_cfg = pid_container(&fx, "b", NamespaceMode::Pod, &["sh", "-c", "exec sleep 1002"]);
    let a = fx.create_and_start(&pod_id, &pod, a_cfg).await;
    let b = fx.create_and_start(&pod_id, &pod, b_cfg).await;
    let a_pid = container_pid(&fx, "sleep 1001").await;
    let b_pid = container_pid(&fx, "sleep 1002").await;
    assert_eq!(pid_ns(a_pid), pid_ns(b_pid), "the containers of a POD-mode pod share one PID namespace (host view)");
    assert_ne!(pid_ns(a_pid), pid_ns(std::process::id() as i32), "the pod's PID namespace is not the host's");

    // each container sees the other's process
    let ps_a = fx.exec_stdout(&a, &["ps"]).await;
    assert!(ps_a.contains("sleep 1002"), "ps in container a does not list container b's sleep 1002:\n{ps_a}");
    assert!(ps_a.contains("sleep 1001"), "ps in container a does not list its own sleep 1001:\n{ps_a}");
    let ps_b = fx.exec_stdout(&b, &["ps"]).await;
    assert!(ps_b.contains("sleep 1001"), "ps in container b does not list container a's sleep 1001:\n{ps_b}");

    // PID 1 of the pod's namespace is the pod's infra process, not a container's command
    for (id, name) in [(&a, "a"), (&b, "b")] {
        let init = pid1_cmdline(&fx, id).await;
        assert!(!init.is_empty(), "/proc/1/cmdline in {name} is empty");
        assert!(!init.contains("sleep 100"), "PID 1 seen from {name} is a container's command: {init:?}\n{ps_a}");
    }
    // the leak check would catch the infra process if it outlived the pod
    let (infra_pid, infra_cmd) = init_of_pid_ns(&pid_ns(a_pid)).expect("no PID 1 of the pod's PID namespace on the host");
    assert_ne!(infra_pid, a_pid);
    assert_ne!(infra_pid, b_pid);
    let live = fx.leaks();
    assert!(
        live.iter().any(|l| l.contains(&format!("pid {infra_pid} "))),
        "the leak check does not see the pod's infra process {infra_pid} ({infra_cmd}) while the pod runs:\n  {}",
        live.join("\n  ")
    );

    // stopping a leaves b (and its process) alone
    fx.stop_ok(&a, 0).await;
    assert_eq!(fx.status_ok(&a).await.state, EXITED);
    assert_eq!(fx.status_ok(&b).await.state, RUNNING, "stopping container a stopped container b");
    let ps_b = fx.exec_stdout(&b, &["ps"]).await;
    assert!(ps_b.contains("sleep 1002"), "b's sleep 1002 is gone after stopping a:\n{ps_b}");
    assert!(!ps_b.contains("sleep 1001"), "a's sleep 1001 is still there after stopping a:\n{ps_b}");

    // StopPodSandbox stops b and every process of the sandbox, the infra process too
    fx.stop_pod_ok(&pod_id).await;
    assert_eq!(fx.status_ok(&b).await.state, EXITED, "StopPodSandbox stops container b");
    wait_for(&format!("the infra process {infra_pid} ({infra_cmd}) to end after StopPodSandbox"), T30, || {
        let gone = processes().iter().all(|p| p.pid != infra_pid || p.state == 'Z' || p.cmdline != infra_cmd);
        gone.then_some(())
    })
    .await;
    fx.remove_pod_ok(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pid_namespace_container_mode_isolates() {
    let fx = Fixture::start().await;
    let pod = pid_pod(&fx, "pid-container", NamespaceMode::Container);
    let pod_id = fx.run_pod(&pod).await;
    assert_pod_pid_mode(&fx.pod_status_ok(&pod_id).await, NamespaceMode::Container);
    let a = fx.create_and_start(&pod_id, &pod, pid_container(&fx, "a", NamespaceMode::Container, &["sh", "-c", "exec sleep 2001"])).await;
    let b = fx.create_and_start(&pod_id, &pod, pid_container(&fx, "b", NamespaceMode::Container, &["sh", "-c", "exec sleep 2002"])).await;
    let a_pid = container_pid(&fx, "sleep 2001").await;
    let b_pid = container_pid(&fx, "sleep 2002").await;
    assert_ne!(pid_ns(a_pid), pid_ns(b_pid), "CONTAINER mode: each container has a PID namespace of its own");

    let ps_a = fx.exec_stdout(&a, &["ps"]).await;
    assert!(ps_a.contains("sleep 2001"), "ps in a does not list its own sleep 2001:\n{ps_a}");
    assert!(!ps_a.contains("sleep 2002"), "ps in a lists b's sleep 2002:\n{ps_a}");
    let ps_b = fx.exec_stdout(&b, &["ps"]).await;
    assert!(!ps_b.contains("sleep 2001"), "ps in b lists a's sleep 2001:\n{ps_b}");
    let init_a = pid1_cmdline(&fx, &a).await;
    assert!(!init_a.contains("sleep 2002"), "PID 1 in a is b's command: {init_a:?}");
    let init_b = pid1_cmdline(&fx, &b).await;
    assert!(!init_b.contains("sleep 2001"), "PID 1 in b is a's command: {init_b:?}");

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pid_namespace_node_mode_sees_host_processes() {
    let fx = Fixture::start().await;
    let pod = pid_pod(&fx, "pid-node", NamespaceMode::Node);
    let pod_id = fx.run_pod(&pod).await;
    assert_pod_pid_mode(&fx.pod_status_ok(&pod_id).await, NamespaceMode::Node);
    let id = fx.create_and_start(&pod_id, &pod, pid_container(&fx, "host-pid", NamespaceMode::Node, &["sh", "-c", "exec sleep 3001"])).await;
    let pid = container_pid(&fx, "sleep 3001").await;
    let me = std::process::id() as i32;
    assert_eq!(pid_ns(pid), pid_ns(me), "NODE mode: the container is in the host's PID namespace");

    // the container's /proc is mounted from the host PID namespace: the test process is in it.
    // Exit codes of `ls /proc` and `ps` are not checked: on a busy host a process can vanish between
    // readdir and stat, which makes them complain and exit 1 while their output is still right.
    let ls = fx.exec_ok(&id, &["ls", "/proc"]).await.stdout;
    assert!(ls.split_whitespace().any(|e| e == me.to_string()), "/proc in the container lacks the test's pid {me}:\n{ls}");
    let mine = std::fs::read("/proc/self/cmdline").unwrap();
    let inside = fx.exec_ok(&id, &["cat", &format!("/proc/{me}/cmdline")]).await;
    assert_eq!(inside.stdout.as_bytes(), &mine[..], "/proc/{me}/cmdline inside the container (stderr {:?})", inside.stderr);
    let host_init = std::fs::read("/proc/1/cmdline").unwrap();
    let init = fx.exec_ok(&id, &["cat", "/proc/1/cmdline"]).await;
    assert_eq!(init.stdout.as_bytes(), &host_init[..], "/proc/1/cmdline inside is the host's init");
    let ps = fx.exec_ok(&id, &["ps"]).await.stdout;
    assert!(ps.lines().any(|l| l.split_whitespace().next() == Some(me.to_string().as_str())), "ps in the container lacks pid {me}:\n{ps}");

    fx.teardown_pod(&pod_id).await;
    fx.assert_no_leaks().await;
}

// ---------------------------------------------------------------------------------------------
// host network and IPC namespaces

/// `(st_dev, st_ino)` of `/proc/<pid>/ns/<ns>` (`pid` = "self" for the test process): equal for
/// processes in the same namespace.
fn ns_id(pid: &str, ns: &str) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let path = format!("/proc/{pid}/ns/{ns}");
    let m = std::fs::metadata(&path).unwrap_or_else(|e| panic!("stat {path}: {e}"));
    (m.dev(), m.ino())
}

/// A free TCP port on 127.0.0.1 (bound and released right away).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread")]
async fn host_network_and_ipc_pods_use_the_host_namespaces() {
    let fx = Fixture::start().await;
    let host_ns = NamespaceOption {
        network: NamespaceMode::Node as i32,
        ipc: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ..Default::default()
    };
    // as kubelet builds a hostNetwork + hostIPC pod: no hostname (the node's is kept), NODE for
    // network and IPC in the pod's and every container's security context
    let mut pod = fx.pod_config("host-net");
    pod.hostname = String::new();
    pod.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options = Some(host_ns.clone());
    let host_ctr = |name: &str, command: &[&str]| {
        let mut cfg = fx.container_config(name, command);
        cfg.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options = Some(host_ns.clone());
        cfg
    };
    let pod_id = fx.run_pod(&pod).await;
    let st = fx.pod_status_ok(&pod_id).await;
    let opts = st.linux.as_ref().and_then(|l| l.namespaces.as_ref()).and_then(|n| n.options.as_ref());
    assert_eq!(opts.map(|o| o.network), Some(NamespaceMode::Node as i32), "PodSandboxStatus.linux.namespaces.options.network: {opts:?}");
    assert_eq!(opts.map(|o| o.ipc), Some(NamespaceMode::Node as i32), "PodSandboxStatus.linux.namespaces.options.ipc: {opts:?}");
    assert_eq!(opts.map(|o| o.pid), Some(NamespaceMode::Container as i32), "PodSandboxStatus.linux.namespaces.options.pid: {opts:?}");

    let id = fx.create_and_start(&pod_id, &pod, host_ctr("host-sleep", &["sleep", "1000"])).await;
    let pid = container_pid(&fx, "sleep 1000").await.to_string();
    for ns in ["net", "ipc", "uts"] {
        assert_eq!(
            ns_id(&pid, ns),
            ns_id("self", ns),
            "host network/IPC pod: /proc/{pid}/ns/{ns} of the container is not the host's (container {:?}, host {:?})",
            std::fs::read_link(format!("/proc/{pid}/ns/{ns}")),
            std::fs::read_link(format!("/proc/self/ns/{ns}")),
        );
    }
    // a process started by ExecSync is in the host's network namespace too
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap().display().to_string();
    let inside = fx.exec_stdout(&id, &["readlink", "/proc/self/ns/net"]).await;
    assert_eq!(inside.trim_end(), host_net, "readlink /proc/self/ns/net in an ExecSync process");

    // the node's hostname, in the UTS namespace and in /etc/hostname
    let host_name = nix::unistd::gethostname().unwrap().to_string_lossy().into_owned();
    assert_eq!(fx.exec_stdout(&id, &["hostname"]).await, format!("{host_name}\n"), "hostname in a host-network container");
    assert_eq!(fx.exec_stdout(&id, &["cat", "/etc/hostname"]).await, format!("{host_name}\n"), "/etc/hostname in a host-network container");

    // a listener in a container of the pod is reachable from the host's loopback
    let port = free_port();
    let nc = fx
        .create_and_start(&pod_id, &pod, host_ctr("host-nc", &["nc", "-l", "-p", &port.to_string(), "-e", "echo", "hello"]))
        .await;
    let got = wait_for(&format!("a connection to the container's nc on 127.0.0.1:{port}"), T30, || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        Some(buf)
    })
    .await;
    assert_eq!(got, "hello\n", "read from the container's nc on 127.0.0.1:{port}");
    assert_exited(&fx, &fx.wait_state(&nc, EXITED, T30).await, 0, "nc after serving one connection");

    // an ordinary pod in the same test: namespaces of its own
    let other = fx.pod_config("pod-net");
    let other_id = fx.run_pod(&other).await;
    let st = fx.pod_status_ok(&other_id).await;
    let opts = st.linux.as_ref().and_then(|l| l.namespaces.as_ref()).and_then(|n| n.options.as_ref());
    assert_eq!(opts.map(|o| o.network), Some(NamespaceMode::Pod as i32), "PodSandboxStatus of the ordinary pod: {opts:?}");
    let other_ctr = fx.create_and_start(&other_id, &other, fx.container_config("pod-sleep", &["sleep", "1001"])).await;
    let other_pid = container_pid(&fx, "sleep 1001").await.to_string();
    for ns in ["net", "ipc", "uts"] {
        assert_ne!(ns_id(&other_pid, ns), ns_id("self", ns), "ordinary pod: /proc/{other_pid}/ns/{ns} of the container is the host's");
    }
    assert_eq!(fx.exec_stdout(&other_ctr, &["hostname"]).await, "pod-net\n", "hostname in the ordinary pod");

    fx.teardown_pod(&pod_id).await;
    fx.teardown_pod(&other_id).await;
    fx.assert_no_leaks().await;
}
