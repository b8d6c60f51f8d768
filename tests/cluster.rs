//! Three `kadr node` processes on loopback with one Redis: membership, work split across every
//! pool, a detector node killed with SIGKILL mid-stream and restarted, a wrong cookie, and the
//! admin API's shapes and token.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kadr::protocol::{Detection, OutputMessage};
use serde_json::Value;

const TOKEN: &str = "test-admin-token";
const COOKIE: &str = "test-cluster-cookie";

/// A `kadr node` process, killed on drop.
struct NodeProcess {
    name: String,
    child: Child,
    admin: String,
    log: PathBuf,
}

impl NodeProcess {
    fn start(
        config: &Path,
        name: &str,
        cluster_port: u16,
        overrides: &[String],
        cookie: &str,
    ) -> NodeProcess {
        Self::start_with_open_files(config, name, cluster_port, overrides, cookie, None)
    }

    /// As `start`; `open_files` sets the node's limit on open files (soft and hard).
    fn start_with_open_files(
        config: &Path,
        name: &str,
        cluster_port: u16,
        overrides: &[String],
        cookie: &str,
        open_files: Option<u64>,
    ) -> NodeProcess {
        let admin = format!("127.0.0.1:{}", common::free_port());
        let log = config.with_file_name(format!("{name}.log"));
        let mut cmd = common::kadr();
        cmd.arg("node")
            .arg("--config")
            .arg(config)
            .args(["--set", &format!("node.name={name}")])
            .args([
                "--set",
                &format!("cluster.listen=\"127.0.0.1:{cluster_port}\""),
            ])
            .args(["--set", &format!("admin.listen=\"{admin}\"")]);
        for o in overrides {
            cmd.args(["--set", o]);
        }
        if let Some(n) = open_files {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe and touches only this child's limits.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = cmd
            .env("KADR_CLUSTER_COOKIE", cookie)
            .env("KADR_ADMIN_TOKEN", TOKEN)
            .env("RUST_LOG", "info,ort=warn")
            .env_remove("KADR_REDIS_URL")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        NodeProcess {
            name: name.to_string(),
            child,
            admin,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> (u16, String) {
        http(&self.admin, "GET", path, None, None)
    }

    fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{} {path}: {body}", self.name);
        serde_json::from_str(&body).unwrap()
    }

    /// Wait until this node's view lists `names`, all up.
    fn wait_members(&mut self, names: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited ({status}):\n{}", self.name, self.log());
            }
            if let (200, body) = self.get("/cluster") {
                let view: Value = serde_json::from_str(&body).unwrap();
                let up: Vec<&str> = view["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|m| m["status"] == "up")
                    .map(|m| m["name"].as_str().unwrap())
                    .collect();
                if names.iter().all(|n| up.contains(n)) && up.len() == names.len() {
                    return view;
                }
                assert!(
                    Instant::now() < deadline,
                    "{}: members {up:?}, want {names:?}; its log:\n{}",
                    self.name,
                    self.log()
                );
            } else {
                assert!(
                    Instant::now() < deadline,
                    "{}: admin API not up:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn inferences(&self) -> u64 {
        metric(&self.get("/metrics").1, "kadr_inferences_total")
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in metrics:\n{text}"))
}

/// A minimal HTTP/1.1 client: (status, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    http_raw(addr, &req)
}

/// Send `request` as it is: (status, body).
fn http_raw(addr: &str, request: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `kadr subscribe` in the background; its summary once it has `count` frames.
struct Subscriber {
    child: Child,
    summary: PathBuf,
}

impl Subscriber {
    fn start(dir: &Path, redis: &str, stream: &str, count: u64) -> Subscriber {
        let summary = dir.join(format!("{stream}.summary.json"));
        let ready = dir.join(format!("{stream}.ready"));
        let child = common::kadr()
            .args([
                "subscribe",
                "--stream",
                stream,
                "--prefix",
                "kc",
                "--quiet",
                "--errors",
            ])
            .args([
                "--redis-url",
                redis,
                "--count",
                &count.to_string(),
                "--idle-timeout",
                "30",
            ])
            .arg("--summary-json")
            .arg(&summary)
            .arg("--ready-file")
            .arg(&ready)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "subscriber not ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        Subscriber { child, summary }
    }

    fn finish(mut self) -> Value {
        let status = self.child.wait().unwrap();
        assert!(status.success());
        serde_json::from_str(&std::fs::read_to_string(&self.summary).unwrap()).unwrap()
    }
}

fn publish(video: &Path, redis: &str, stream: &str, fast: bool) -> Child {
    let mut cmd = common::kadr();
    cmd.args([
        "publish",
        "--stream",
        stream,
        "--prefix",
        "kc",
        "--keep-all",
        "--redis-url",
        redis,
    ])
    .arg("--input")
    .arg(video)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if fast {
        cmd.arg("--fast");
    }
    cmd.spawn().unwrap()
}

fn write_config(dir: &Path, model: &Path, redis: &str) -> PathBuf {
    let path = dir.join("cluster.toml");
    std::fs::write(
        &path,
        format!(
            "[node]\nroles = [\"detector\"]\n\
             [redis]\nurl = \"{redis}\"\nchannel_prefix = \"kc\"\n\
             [model]\npath = \"{}\"\n\
             [detector]\npool_size = 1\n\
             [cluster]\nheartbeat_ms = 200\njoin_timeout_ms = 5000\n\
             [limits]\ngap_wait_ms = 2000\n",
            model.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn three_nodes_share_a_stream_survive_a_kill_and_refuse_a_wrong_cookie() {
    let (Some(model), Some(video)) = (common::model_384x640(), common::video("bigbuckbunny.mp4"))
    else {
        return;
    };
    let redis = common::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &model, &redis.url);
    let ports: Vec<u16> = (0..4).map(|_| common::free_port()).collect();
    let seed = format!("cluster.seeds=[\"127.0.0.1:{}\"]", ports[0]);
    let all_roles = "node.roles=[\"source\", \"sequencer\", \"detector\"]".to_string();

    let mut n1 = NodeProcess::start(&config, "n1", ports[0], &[all_roles], COOKIE);
    n1.wait_members(&["n1"], Duration::from_secs(60));
    let mut n2 = NodeProcess::start(&config, "n2", ports[1], std::slice::from_ref(&seed), COOKIE);
    let mut n3 = NodeProcess::start(&config, "n3", ports[2], std::slice::from_ref(&seed), COOKIE);
    // n2 and n3 only know n1; they find each other through its heartbeats.
    for n in [&mut n1, &mut n2, &mut n3] {
        n.wait_members(&["n1", "n2", "n3"], Duration::from_secs(60));
    }

    // --- Admin API shapes.
    let health = n2.get_json("/health");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["node"], "n2");
    assert_eq!(health["roles"], serde_json::json!(["detector"]));
    // What runs its detectors, as chosen at start (clusters mix machines).
    let backend = &health["backend"];
    assert!(
        ["cpu", "openvino"].contains(&backend["provider"].as_str().unwrap()),
        "{health}"
    );
    assert!(
        ["fp32", "bf16"].contains(&backend["precision"].as_str().unwrap()),
        "{health}"
    );
    assert!(health["detect_fps"].is_number(), "{health}");
    // Pools start after the join; wait for every node to report its detector.
    let deadline = Instant::now() + Duration::from_secs(60);
    let view = loop {
        let view = n1.get_json("/cluster");
        let members = view["members"].as_array().unwrap();
        if members.iter().all(|m| m["detectors"] == 1) && view["dispatcher"]["detectors"] == 3 {
            break view;
        }
        assert!(Instant::now() < deadline, "{view}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(view["node"], "n1");
    for m in view["members"].as_array().unwrap() {
        for field in [
            "name",
            "address",
            "admin",
            "roles",
            "detectors",
            "busy",
            "in_flight",
            "last_heartbeat_ms",
            "status",
            "detect_fps",
        ] {
            assert!(m.get(field).is_some(), "member lacks {field}: {m}");
        }
        assert_eq!(
            m["backend"],
            backend.clone(),
            "same machine, same choice: {m}"
        );
    }

    // --- One stream of real frames, split across all three pools, complete and in order.
    let before: Vec<u64> = [&n1, &n2, &n3].iter().map(|n| n.inferences()).collect();
    let sub = Subscriber::start(dir.path(), &redis.url, "bbb", 132);
    assert!(publish(&video, &redis.url, "bbb", true)
        .wait()
        .unwrap()
        .success());
    let summary = sub.finish();
    assert_eq!(summary["frames"], 132, "{summary}");
    assert_eq!(summary["detected"], 132, "{summary}");
    assert_eq!(summary["order_violations"], 0, "{summary}");
    for (n, b) in [&n1, &n2, &n3].iter().zip(&before) {
        let did = n.inferences() - b;
        eprintln!("{} detected {did} of 132 frames", n.name);
        assert!(did >= 10, "{} detected only {did} of 132 frames", n.name);
    }
    let streams = n1.get_json("/streams");
    let s = &streams["streams"][0];
    assert_eq!(s["stream"], "bbb");
    assert_eq!(s["frames_in"], 132);
    assert_eq!(s["frames_out"], 132);
    assert!(s["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{s}");
    for field in ["fps", "dropped", "failed", "lost", "missing", "errors"] {
        assert!(s.get(field).is_some(), "stream lacks {field}: {s}");
    }
    let metrics = n1.get("/metrics").1;
    assert_eq!(metric(&metrics, "kadr_frames_detected_total"), 132);
    assert!(
        metrics.contains("kadr_stream_latency_ms{node=\"n1\",stream=\"bbb\",quantile=\"0.99\"}")
    );

    // --- Kill -9 a detector node mid-stream: the stream goes on, complete and in order; at most
    // the one frame it held (pool 1 x 1 credit) becomes a gap.
    let sub = Subscriber::start(dir.path(), &redis.url, "kill", 132);
    let mut publisher = publish(&video, &redis.url, "kill", false);
    std::thread::sleep(Duration::from_millis(1500));
    n3.kill9();
    assert!(publisher.wait().unwrap().success());
    let summary = sub.finish();
    assert_eq!(summary["frames"], 132, "{summary}");
    assert_eq!(summary["order_violations"], 0, "{summary}");
    let gaps = summary["gap_frames"].as_u64().unwrap();
    eprintln!("after kill -9: {summary}");
    assert!(
        gaps <= 1,
        "{gaps} gaps after losing a node that held at most 1 frame: {summary}"
    );
    n1.wait_members(&["n1", "n2"], Duration::from_secs(10));

    // --- It rejoins (same name, same port) and takes work again.
    let n3 = NodeProcess::start(&config, "n3", ports[2], std::slice::from_ref(&seed), COOKIE);
    n1.wait_members(&["n1", "n2", "n3"], Duration::from_secs(60));
    let sub = Subscriber::start(dir.path(), &redis.url, "again", 132);
    assert!(publish(&video, &redis.url, "again", true)
        .wait()
        .unwrap()
        .success());
    let summary = sub.finish();
    assert_eq!(summary["detected"], 132, "{summary}");
    assert!(n3.inferences() >= 10, "rejoined node took no work");

    // --- A node with the wrong cookie is refused: it gives up, and no one lists it.
    let mut bad = NodeProcess::start(
        &config,
        "intruder",
        ports[3],
        &[seed, "cluster.join_timeout_ms=2000".into()],
        "not-the-cookie",
    );
    let status = bad.child.wait().unwrap();
    assert!(!status.success());
    let log = bad.log();
    eprintln!("wrong cookie: {}", log.lines().last().unwrap_or(""));
    assert!(
        log.contains("cluster.seeds") && log.contains("cluster.cookie"),
        "{log}"
    );
    let view = n1.get_json("/cluster");
    assert!(!view.to_string().contains("intruder"), "{view}");

    // --- Mutations need the token.
    let body = Some("{\"size\": 2}");
    assert_eq!(http(&n2.admin, "POST", "/pool", None, body).0, 401);
    assert_eq!(http(&n2.admin, "POST", "/pool", Some("wrong"), body).0, 401);
    assert_eq!(
        http(
            &n2.admin,
            "POST",
            "/pool",
            Some(TOKEN),
            Some("{\"size\": 9999}")
        )
        .0,
        400
    );
    assert_eq!(
        http(&n2.admin, "POST", "/pool", Some(TOKEN), Some("nonsense")).0,
        400
    );
    assert_eq!(http(&n2.admin, "GET", "/pool", Some(TOKEN), None).0, 405);
    // DNS rebinding: a page of evil.example that resolves to 127.0.0.1 names its own host.
    let rebound = "GET /health HTTP/1.1\r\nHost: evil.example:7500\r\nConnection: close\r\n\r\n";
    assert_eq!(http_raw(&n2.admin, rebound).0, 403);
    let local = "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    assert_eq!(http_raw(&n2.admin, local).0, 200);
    // The scheme is case-insensitive: `bearer` as some clients write it.
    let lower = format!(
        "POST /pool HTTP/1.1\r\nHost: {}\r\nAuthorization: bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{{\"size\": 2}}",
        n2.admin
    );
    let (status, resized) = http_raw(&n2.admin, &lower);
    assert_eq!(status, 200, "{resized}");
    let resized: Value = serde_json::from_str(&resized).unwrap();
    assert_eq!(resized["size"], 2);
    // The source node sees the fourth detector.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view = n1.get_json("/cluster");
        if view["dispatcher"]["detectors"] == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "resize not seen: {view}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(n3);
}

#[test]
fn tls_between_nodes_refuses_plaintext_and_foreign_certificates() {
    let Some(model) = common::model_384x640() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let certs = |sub: &str, name: &str| {
        let out = std::process::Command::new(common::root().join("scripts/cluster-certs.sh"))
            .arg(dir.path().join(sub))
            .arg(name)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    certs("ours", "n1");
    certs("ours", "n2");
    certs("theirs", "x"); // a different CA
    let config = write_config(dir.path(), &model, "redis://127.0.0.1:1");
    let tls = |sub: &str, name: &str| {
        let d = dir.path().join(sub);
        format!(
            "cluster.tls={{ cert = \"{}\", key = \"{}\", ca = \"{}\" }}",
            d.join(format!("{name}.pem")).display(),
            d.join(format!("{name}.key")).display(),
            d.join("ca.pem").display()
        )
    };
    let ports: Vec<u16> = (0..4).map(|_| common::free_port()).collect();
    let seed = format!("cluster.seeds=[\"127.0.0.1:{}\"]", ports[0]);
    let quick = "cluster.join_timeout_ms=2000".to_string();

    let mut n1 = NodeProcess::start(&config, "n1", ports[0], &[tls("ours", "n1")], COOKIE);
    n1.wait_members(&["n1"], Duration::from_secs(60));
    let mut n2 = NodeProcess::start(
        &config,
        "n2",
        ports[1],
        &[tls("ours", "n2"), seed.clone()],
        COOKIE,
    );
    n2.wait_members(&["n1", "n2"], Duration::from_secs(60));
    n1.wait_members(&["n1", "n2"], Duration::from_secs(10));

    // Right cookie, but no TLS: the handshake fails.
    let mut plain = NodeProcess::start(
        &config,
        "plain",
        ports[2],
        &[seed.clone(), quick.clone()],
        COOKIE,
    );
    // Right cookie, TLS, but a certificate from another CA.
    let mut foreign = NodeProcess::start(
        &config,
        "foreign",
        ports[3],
        &[tls("theirs", "x"), seed, quick],
        COOKIE,
    );
    for bad in [&mut plain, &mut foreign] {
        let status = bad.child.wait().unwrap();
        let log = bad.log();
        assert!(!status.success(), "{} joined:\n{log}", bad.name);
        assert!(
            log.contains("could not join the cluster"),
            "{}: {log}",
            bad.name
        );
        eprintln!("{}: {}", bad.name, log.lines().last().unwrap_or(""));
    }
    let view = n1.get_json("/cluster").to_string();
    assert!(
        !view.contains("plain") && !view.contains("foreign"),
        "{view}"
    );
}

/// Settings of a node with the source role and a 1 s node-wide source lease (one source node
/// reads, the other stands by: `cluster.stream_leases = false`); `seeded`: it joins through n1.
fn source_settings(ports: &[u16], seeded: bool) -> Vec<String> {
    let mut settings = vec![
        "node.roles=[\"source\", \"sequencer\", \"detector\"]".to_string(),
        "cluster.source_lease_ms=1000".to_string(),
        "cluster.stream_leases=false".to_string(),
    ];
    if seeded {
        settings.push(format!("cluster.seeds=[\"127.0.0.1:{}\"]", ports[0]));
    }
    settings
}

/// Two source nodes on one Redis: n1 holds the source lease, n2 joined it and stands by.
struct SourcePair {
    config: PathBuf,
    ports: Vec<u16>,
    n1: NodeProcess,
    n2: NodeProcess,
}

impl SourcePair {
    fn start(dir: &Path, model: &Path, redis: &str) -> SourcePair {
        Self::start_with(dir, model, redis, "")
    }

    /// As `start`, with `extra` appended to the nodes' cluster.toml.
    fn start_with(dir: &Path, model: &Path, redis: &str, extra: &str) -> SourcePair {
        let config = write_config(dir, model, redis);
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(extra);
        std::fs::write(&config, text).unwrap();
        let ports: Vec<u16> = (0..2).map(|_| common::free_port()).collect();
        let mut n1 = NodeProcess::start(
            &config,
            "n1",
            ports[0],
            &source_settings(&ports, false),
            COOKIE,
        );
        n1.wait_members(&["n1"], Duration::from_secs(60));
        let mut n2 = NodeProcess::start(
            &config,
            "n2",
            ports[1],
            &source_settings(&ports, true),
            COOKIE,
        );
        n2.wait_members(&["n1", "n2"], Duration::from_secs(60));
        SourcePair {
            config,
            ports,
            n1,
            n2,
        }
    }
}

/// One 50 MB entry on a frames stream (refused: over `limits.max_payload_bytes`) used to leave
/// the node about 67 MB larger for good: the connection that read it kept a read buffer of its
/// size, and the allocator kept what the refusal freed. Now that connection is replaced and free
/// memory is handed back to the system every few seconds.
#[test]
fn a_huge_entry_leaves_no_lasting_memory_behind() {
    let Some(model) = common::model_384x640() else {
        return;
    };
    let redis = common::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &model, &redis.url);
    let roles = "node.roles=[\"source\", \"sequencer\", \"detector\"]".to_string();
    let mut n1 = NodeProcess::start(&config, "n1", common::free_port(), &[roles], COOKIE);
    n1.wait_members(&["n1"], Duration::from_secs(60));
    let pid = n1.child.id();
    let resident_kb = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    std::thread::sleep(Duration::from_secs(2));
    let before = resident_kb();
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let _: String = redis::cmd("XADD")
        .arg("kc:frames:huge")
        .arg("*")
        .arg("frame")
        .arg(vec![0u8; 50 << 20])
        .query(&mut conn)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&n1.get("/metrics").1, "kadr_frames_refused_total") == 0 {
        assert!(Instant::now() < deadline, "never refused:\n{}", n1.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Given back within a few trims: under 30 MB of the 50 MB left.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let grown_mb = resident_kb().saturating_sub(before) / 1024;
        if grown_mb < 30 {
            eprintln!("resident memory {grown_mb} MB above what it was before the entry");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{grown_mb} MB more than before the entry, 20 s after its refusal"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A peer frozen longer than ten heartbeats (a paused container, a stalled VM) has its session
/// closed by the others, and both sides form a fresh one when it thaws: a session that carries
/// no heartbeat would otherwise make ractor_cluster refuse every new connection between them.
#[test]
fn a_frozen_peer_s_session_is_closed_and_the_two_reconnect_when_it_thaws() {
    let Some(model) = common::model_384x640() else {
        return;
    };
    let redis = common::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &model, &redis.url);
    let ports: Vec<u16> = (0..2).map(|_| common::free_port()).collect();
    let seed = format!("cluster.seeds=[\"127.0.0.1:{}\"]", ports[0]);
    let mut n1 = NodeProcess::start(&config, "n1", ports[0], &[], COOKIE);
    n1.wait_members(&["n1"], Duration::from_secs(60));
    let mut n2 = NodeProcess::start(&config, "n2", ports[1], &[seed], COOKIE);
    for n in [&mut n1, &mut n2] {
        n.wait_members(&["n1", "n2"], Duration::from_secs(60));
    }
    let closed = |n: &NodeProcess| {
        metric(
            &n.get("/metrics").1,
            "kadr_cluster_silent_sessions_closed_total",
        )
    };
    assert_eq!(closed(&n1), 0);

    // heartbeat_ms = 200: ten heartbeats are 2 s; freeze n2 for 4 s.
    let pid = n2.child.id() as libc::pid_t;
    // SAFETY: signals to our own child process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_secs(4));
    unsafe { libc::kill(pid, libc::SIGCONT) };

    assert!(closed(&n1) >= 1, "{}", n1.log());
    assert!(n1
        .log()
        .contains("closing the session of a peer that sends no heartbeat"));
    for n in [&mut n1, &mut n2] {
        n.wait_members(&["n1", "n2"], Duration::from_secs(30));
    }
}

#[test]
fn a_standby_source_node_takes_over_and_reports_what_was_lost() {
    let (Some(model), Some(video)) = (common::model_384x640(), common::video("bigbuckbunny.mp4"))
    else {
        return;
    };
    let redis = common::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let SourcePair {
        config,
        ports,
        mut n1,
        mut n2,
    } = SourcePair::start(dir.path(), &model, &redis.url);
    assert!(n2.log().contains("standing by"), "{}", n2.log());

    // The source node dies mid-stream; the standby takes over within the lease.
    let sub = Subscriber::start(dir.path(), &redis.url, "fo", 132);
    let mut publisher = publish(&video, &redis.url, "fo", false);
    std::thread::sleep(Duration::from_millis(1500));
    n1.kill9();
    assert!(publisher.wait().unwrap().success());
    let summary = sub.finish();
    eprintln!("failover: {summary}");
    // Every frame accounted for, in order: what n1 took with it is one `missing` gap.
    assert_eq!(summary["frames"], 132, "{summary}");
    assert_eq!(summary["order_violations"], 0, "{summary}");
    assert_eq!(summary["last_seq"], 131, "{summary}");
    let missing = summary["gaps_by_reason"]["missing"].as_u64().unwrap_or(0);
    assert!(missing >= 1, "{summary}");
    assert!(
        summary["detected"].as_u64().unwrap() >= 132 - 60,
        "{summary}"
    );

    // n1 comes back as the standby; n2 keeps the stream.
    let mut n1 = NodeProcess::start(
        &config,
        "n1",
        ports[0],
        &source_settings(&ports, true),
        COOKIE,
    );
    n1.wait_members(&["n1", "n2"], Duration::from_secs(60));
    n2.wait_members(&["n1", "n2"], Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !n1.log().contains("standing by") {
        assert!(Instant::now() < deadline, "{}", n1.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let sub = Subscriber::start(dir.path(), &redis.url, "after", 132);
    assert!(publish(&video, &redis.url, "after", true)
        .wait()
        .unwrap()
        .success());
    let summary = sub.finish();
    assert_eq!(summary["detected"], 132, "{summary}");
}

/// Over Redis Streams, the same failover costs nothing: the standby claims the frames the
/// killed node read but never answered, and carries on from there. Every frame is detected
/// exactly once, in order, with no gap. A subscriber killed mid-stream and started again with
/// its resume file misses no result; one that reads the results stream from `0` afterwards
/// finds all of them.
#[test]
fn over_streams_a_source_failover_and_a_subscriber_restart_lose_nothing() {
    let (Some(model), Some(video)) = (common::model_384x640(), common::video("bigbuckbunny.mp4"))
    else {
        return;
    };
    let redis = common::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let SourcePair { mut n1, n2, .. } = SourcePair::start(dir.path(), &model, &redis.url);

    let resume = dir.path().join("sx.resume");
    let printed = |k: usize| dir.path().join(format!("sx.{k}.jsonl"));
    let follow = |k: usize, from: Option<&str>| {
        let mut cmd = common::kadr();
        cmd.args([
            "subscribe",
            "--stream",
            "sx",
            "--prefix",
            "kc",
            "--redis-url",
        ])
        .arg(&redis.url)
        .args(["--idle-timeout", "20"])
        .stdout(std::fs::File::create(printed(k)).unwrap())
        .stderr(Stdio::null());
        match from {
            Some(id) => cmd.args(["--from", id]),
            None => cmd.arg("--resume").arg(&resume),
        };
        cmd.spawn().unwrap()
    };
    let mut first = follow(0, None);
    let mut publisher = common::kadr()
        .args(["publish", "--stream", "sx", "--prefix", "kc", "--keep-all"])
        .args(["--transport", "streams", "--redis-url", &redis.url])
        .arg("--input")
        .arg(&video)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    n1.kill9();
    std::thread::sleep(Duration::from_millis(1000));
    first.kill().unwrap();
    first.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let second = follow(1, None);
    assert!(publisher.wait().unwrap().success());
    let out = second.wait_with_output().unwrap();
    assert!(out.status.success());

    let seqs = |k: usize| -> Vec<(String, u64, u64)> {
        std::fs::read_to_string(printed(k))
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let count = v["count"].as_u64().unwrap_or(1);
                (
                    v["type"].as_str().unwrap().to_string(),
                    v["seq"].as_u64().unwrap(),
                    count,
                )
            })
            .collect()
    };
    // The two runs of the subscriber together: every number once, in order (the seam may
    // repeat a message, never skip one), and all of them detected.
    let mut next = 0;
    for (kind, seq, count) in seqs(0).into_iter().chain(seqs(1)) {
        assert!(seq <= next, "result {seq} skipped to, {next} expected");
        assert_eq!(kind, "detections", "a gap at {seq} over streams");
        next = next.max(seq + count);
    }
    assert_eq!(
        next,
        132,
        "{} then {}",
        printed(0).display(),
        printed(1).display()
    );

    // The results stream keeps them all: read from the start, exactly once each, in order.
    let all = follow(2, Some("0"));
    let out = all.wait_with_output().unwrap();
    assert!(out.status.success());
    let read = seqs(2);
    let numbers: Vec<u64> = read.iter().map(|(_, s, _)| *s).collect();
    assert_eq!(numbers, (0..132).collect::<Vec<u64>>(), "{read:?}");
    assert!(read.iter().all(|(kind, _, _)| kind == "detections"));
    // Every entry was acknowledged with its result: none pending.
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let pending: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg("kc:frames:sx")
        .arg("kadr")
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        pending[0],
        redis::Value::Int(0),
        "{pending:?}\n{}",
        n2.log()
    );
    let log = n2.log();
    assert!(
        log.contains("source holds the lease"),
        "n2 never took over:\n{log}"
    );
    for line in log.lines().filter(|l| l.contains("taken over")) {
        eprintln!("n2: {line}");
    }
}

/// Track ids follow a stream across a source failover: the standby carries on with the tracker
/// the killed node saved with its last result, so every object keeps its id. The stream is ten
/// frames of a mirrored picture (its objects take the first ids), then the picture itself, the
/// same in every frame: each of its boxes must keep one id throughout, before the kill and
/// after it (ids that a tracker started afresh after the kill would not give: it counts from
/// 1 again).
#[test]
fn track_ids_survive_a_source_failover() {
    let (Some(model), Some(fixtures)) = (common::model_384x640(), common::fixtures()) else {
        return;
    };
    let redis = common::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let still = dir.path().join("still");
    std::fs::create_dir(&still).unwrap();
    let picture = fixtures.join("yolov7/zidane.jpg");
    let mirrored = dir.path().join("mirrored.jpg");
    image::imageops::flip_horizontal(&image::open(&picture).unwrap().to_rgb8())
        .save(&mirrored)
        .unwrap();
    const FRAMES: u64 = 100;
    const MIRRORED: u64 = 10;
    for i in 0..FRAMES {
        let source = if i < MIRRORED { &mirrored } else { &picture };
        std::os::unix::fs::symlink(source, still.join(format!("{i:03}.jpg"))).unwrap();
    }
    let SourcePair { mut n1, n2, .. } = SourcePair::start(dir.path(), &model, &redis.url);
    let mut publisher = common::kadr()
        .args([
            "publish",
            "--stream",
            "still",
            "--prefix",
            "kc",
            "--keep-all",
        ])
        .args([
            "--fps",
            "10",
            "--transport",
            "streams",
            "--redis-url",
            &redis.url,
        ])
        .arg("--input")
        .arg(&still)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    n1.kill9();
    assert!(publisher.wait().unwrap().success());
    let out = common::kadr()
        .args([
            "subscribe",
            "--stream",
            "still",
            "--prefix",
            "kc",
            "--from",
            "0",
        ])
        .args(["--count", &FRAMES.to_string(), "--idle-timeout", "60"])
        .args(["--redis-url", &redis.url])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let results: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<u64> = results.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (0..FRAMES).collect::<Vec<_>>(),
        "every frame, in order"
    );
    let log = n2.log();
    assert!(
        log.contains("source holds the lease"),
        "n2 never took over:\n{log}"
    );

    // Each result's detections, as the protocol's own type reads them.
    let boxes = |r: &Value| -> Vec<Detection> {
        match serde_json::from_value(r.clone()).unwrap() {
            OutputMessage::Detections(d) => d.detections,
            gap => panic!("a gap over Streams: {gap:?}"),
        }
    };
    let iou = |a: &[f32; 4], b: &[f32; 4]| {
        let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
        let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
        let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
        w * h / (area(a) + area(b) - w * h)
    };
    let ids = |r: &Value| -> Vec<u64> { boxes(r).iter().filter_map(|d| d.track_id).collect() };
    let mirrored_ids: Vec<u64> = results[..MIRRORED as usize].iter().flat_map(ids).collect();
    assert!(
        !mirrored_ids.is_empty(),
        "no track ids at all: {}",
        results[0]
    );
    // The picture's objects, with the ids they got (seen twice in a row by now).
    let reference = &results[MIRRORED as usize + 5];
    let objects: Vec<Detection> = boxes(reference)
        .into_iter()
        .filter(|d| d.track_id.is_some())
        .collect();
    assert!(
        !objects.is_empty(),
        "the picture got no track ids: {reference}"
    );
    // A tracker started afresh on this frame would number its objects 1, 2, 3... in order:
    // these ids must not be those, or the check below could not tell a carried tracker from
    // a new one.
    let fresh: Vec<u64> = (1..=objects.len() as u64).collect();
    let reference_ids: Vec<u64> = objects.iter().filter_map(|d| d.track_id).collect();
    assert_ne!(reference_ids, fresh, "{reference}");
    let mut checked = 0;
    for r in &results[MIRRORED as usize + 5..] {
        for d in boxes(r) {
            let Some(same) = objects
                .iter()
                .find(|o| o.class_id == d.class_id && iou(&o.bbox, &d.bbox) > 0.9)
            else {
                continue;
            };
            assert_eq!(
                d.track_id, same.track_id,
                "frame {}: {:?} changed id",
                r["seq"], d.bbox
            );
            checked += 1;
        }
    }
    let frames = FRAMES - MIRRORED - 5;
    assert!(
        checked as u64 >= frames * objects.len() as u64 * 9 / 10,
        "only {checked} boxes matched the picture's {} in {frames} frames",
        objects.len()
    );
}

/// A door (a vertical line, walked through `in` from left to right) and the room past it (a
/// zone), counted by whichever source node
/// holds the stream: `[streams."walk".analytics]`.
const WALK_ANALYTICS: &str = "[[streams.walk.analytics.lines]]\nname = \"door\"\n\
    from = [640, 720]\nto = [640, 0]\n\
    [[streams.walk.analytics.zones]]\nname = \"room\"\n\
    polygon = [[700, 0], [1280, 0], [1280, 720], [700, 720]]\n";

/// Frames of two people walking right across a 1280x720 scene (the fixture's picture at half
/// size sliding over a grey ground, 8 px a frame): each crosses the door and enters the room
/// once, one before the middle of the clip and one after it.
fn walking_frames(fixtures: &Path, dir: &Path, frames: u32) -> PathBuf {
    let people = image::open(fixtures.join("yolov7/zidane_640x360.png"))
        .unwrap()
        .to_rgb8();
    let out = dir.join("walk");
    std::fs::create_dir(&out).unwrap();
    for i in 0..frames {
        let mut frame = image::RgbImage::from_pixel(1280, 720, image::Rgb([114, 114, 114]));
        image::imageops::overlay(&mut frame, &people, i64::from(i) * 8 - 40, 200);
        frame.save(out.join(format!("{i:03}.jpg"))).unwrap();
    }
    out
}

/// Events come out exactly once across a source failover: the node that takes the stream over
/// goes on with the counts and each object's place that the killed node saved with its last
/// result (in the same step as the result). So its counts are the tally of every event
/// published, by both nodes, none twice; a node that started its counts afresh would count
/// only what it saw itself, and one that forgot where objects were would say an `enter`
/// again.
fn events_survive_a_source_failover(over_streams: bool) {
    let (Some(model), Some(fixtures)) = (common::trained_model(), common::fixtures()) else {
        return;
    };
    let redis = common::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    const FRAMES: u32 = 90;
    let walk = walking_frames(&fixtures, dir.path(), FRAMES);
    let SourcePair { mut n1, n2, .. } =
        SourcePair::start_with(dir.path(), &model, &redis.url, WALK_ANALYTICS);
    let transport = if over_streams { "streams" } else { "pubsub" };
    let mut publisher = common::kadr()
        .args([
            "publish",
            "--stream",
            "walk",
            "--prefix",
            "kc",
            "--keep-all",
        ])
        .args(["--fps", "10", "--transport", transport])
        .args(["--redis-url", &redis.url])
        .arg("--input")
        .arg(&walk)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(4500));
    n1.kill9();
    assert!(publisher.wait().unwrap().success());
    // Everything out: n2's last-seq reaches the last frame.
    let mut conn = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last: Option<String> = redis::cmd("GET")
            .arg("kc:last-seq:walk")
            .query(&mut conn)
            .unwrap();
        if last.is_some_and(|l| l.ends_with(&format!(":{}", FRAMES - 1))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream never finished:\n{}",
            n2.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(n2.log().contains("source holds the lease"), "{}", n2.log());
    // Every event, from the events stream (written in the same step as the channel).
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("kc:events:walk")
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    let events: Vec<Value> = entries
        .iter()
        .map(|(_, fields)| {
            let json = &fields.iter().find(|(k, _)| k == "json").unwrap().1;
            serde_json::from_str(json).unwrap()
        })
        .collect();
    eprintln!("{transport}: {} events", events.len());
    for e in &events {
        eprintln!("  {e}");
    }
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "in order: {seqs:?}");
    let said = |name: &str, event: &str| -> Vec<u64> {
        events
            .iter()
            .filter(|e| e["name"] == name && e["event"] == event)
            .map(|e| e["track_id"].as_u64().unwrap())
            .collect()
    };
    let (crossed, entered) = (said("door", "in"), said("room", "enter"));
    for ids in [&crossed, &entered] {
        let mut unique = ids.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "an event said twice: {ids:?}");
    }
    assert!(said("door", "out").is_empty(), "nobody walks back");
    assert!(
        crossed.len() >= 2,
        "both people cross the door: {crossed:?}"
    );
    // n2's counts are the tally of every event, its own and n1's.
    let streams = n2.get_json("/streams");
    let walk_report = streams["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == "walk")
        .unwrap_or_else(|| panic!("n2 has no walk: {streams}"))
        .clone();
    let counts = &walk_report["analytics"]["counts"];
    assert_eq!(
        counts["lines"]["door"]["in"],
        crossed.len(),
        "{walk_report}"
    );
    assert_eq!(
        counts["zones"]["room"]["entered"],
        entered.len(),
        "{walk_report}"
    );
    // ...and some of those events were n1's: said about frames before n2 read any.
    let first_on_n2 = u64::from(FRAMES) - walk_report["frames_in"].as_u64().unwrap();
    assert!(
        seqs.first().is_some_and(|s| *s < first_on_n2),
        "no event before the failover (n2 read from frame {first_on_n2}): {seqs:?}"
    );
    assert!(
        seqs.last().is_some_and(|s| *s >= first_on_n2),
        "no event after the failover (n2 read from frame {first_on_n2}): {seqs:?}"
    );
}

#[test]
fn over_pubsub_events_survive_a_source_failover_exactly_once() {
    events_survive_a_source_failover(false);
}

#[test]
fn over_streams_events_survive_a_source_failover_exactly_once() {
    events_survive_a_source_failover(true);
}

/// Lines and zones replaced at run time through the admin API: the token is required, a bad
/// geometry is refused whole with its key's path, a good one is kept in Redis and counted by
/// the node holding the stream within a second, and deleting it brings `cluster.toml`'s back.
#[test]
fn the_admin_api_replaces_a_stream_s_lines_and_zones_at_run_time() {
    let (Some(model), Some(fixtures)) = (common::trained_model(), common::fixtures()) else {
        return;
    };
    let redis = common::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let walk = walking_frames(&fixtures, dir.path(), 90);
    let config = write_config(dir.path(), &model, &redis.url);
    let port = common::free_port();
    let mut node = NodeProcess::start(
        &config,
        "n1",
        port,
        &source_settings(&[port], false),
        COOKIE,
    );
    node.wait_members(&["n1"], Duration::from_secs(60));
    let path = "/streams/walk/analytics";
    let admin = node.admin.clone();
    let put = |token: Option<&str>, body: &str| http(&admin, "PUT", path, token, Some(body));
    let door = r#"{"lines": [{"name": "door", "from": [640, 720], "to": [640, 0]}]}"#;
    assert_eq!(put(None, door).0, 401);
    assert_eq!(put(Some("wrong"), door).0, 401);
    let (status, body) = put(
        Some(TOKEN),
        r#"{"lines": [{"name": "door", "from": [640, 720], "to": [640, 0]}],
            "zones": [{"name": "room", "polygon": [[700, 0], [1280, 0], [700, 720], [1280, 720]]}]}"#,
    );
    assert_eq!(status, 400, "{body}");
    let refusal: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(refusal["key"], "zones[0].polygon", "{body}");
    assert!(
        refusal["error"].as_str().unwrap().contains("cross"),
        "{body}"
    );
    assert_eq!(put(Some(TOKEN), "{\"lines\": 3}").0, 400);
    assert_eq!(
        node.get(path).0,
        404,
        "nothing set, nothing in cluster.toml"
    );
    let (status, body) = put(Some(TOKEN), door);
    assert_eq!(status, 200, "{body}");
    let shown = node.get_json(path);
    assert_eq!(shown["source"], "admin", "{shown}");
    assert_eq!(shown["analytics"]["lines"][0]["name"], "door", "{shown}");

    let mut publisher = common::kadr()
        .args([
            "publish",
            "--stream",
            "walk",
            "--prefix",
            "kc",
            "--keep-all",
        ])
        .args(["--fps", "20", "--redis-url", &redis.url])
        .arg("--input")
        .arg(&walk)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(publisher.wait().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let crossed = loop {
        let metrics = node.get("/metrics").1;
        let crossed: u64 = metrics
            .lines()
            .filter(|l| {
                l.starts_with("kadr_line_crossings_total{")
                    && l.contains("line=\"door\",direction=\"in\"")
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum();
        if crossed >= 2 {
            break crossed;
        }
        assert!(
            Instant::now() < deadline,
            "door crossings {crossed}:\n{metrics}\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(crossed, 2, "both people, once each");

    // Deleted: the stream counts nothing any more (cluster.toml has no lines for it).
    assert_eq!(http(&admin, "DELETE", path, None, None).0, 401);
    assert_eq!(http(&admin, "DELETE", path, Some(TOKEN), None).0, 200);
    assert_eq!(node.get(path).0, 404);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let streams = node.get_json("/streams");
        let walk = streams["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stream"] == "walk")
            .cloned();
        if walk.is_some_and(|w| w.get("analytics").is_none()) {
            break;
        }
        assert!(Instant::now() < deadline, "still counting: {streams}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// With Redis gone, a source node says so (`/health` 503 `redis_down`, `/metrics`), and a
/// SIGTERM still stops it within its drain time (it used to hang for over a minute).
#[test]
fn a_node_reports_redis_down_and_still_stops_on_sigterm() {
    let Some(model) = common::model_384x640() else {
        return;
    };
    let mut redis = common::Redis::start();
    if !redis.owned() {
        common::skip("REDIS_URL is set; this test stops its own server");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &model, &redis.url);
    let roles = "node.roles=[\"source\", \"sequencer\", \"detector\"]".to_string();
    let mut n1 = NodeProcess::start(&config, "n1", common::free_port(), &[roles], COOKIE);
    n1.wait_members(&["n1"], Duration::from_secs(60));
    assert_eq!(n1.get_json("/health")["redis"], "up");

    redis.stop();
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        let (status, body) = n1.get("/health");
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "still {status} {body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "redis_down", "{health}");
    assert_eq!(health["redis"], "down", "{health}");
    let metrics = n1.get("/metrics").1;
    assert_eq!(metric(&metrics, "kadr_redis_down"), 1);
    assert_eq!(metric(&metrics, "kadr_redis_outages_total"), 1);

    let term = Command::new("kill")
        .args(["-TERM", &n1.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    // Drain 10 s + grace 5 s; more than that means it hangs on Redis.
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        if let Some(status) = n1.child.try_wait().unwrap() {
            assert!(status.success(), "{status}:\n{}", n1.log());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no exit 25 s after SIGTERM with Redis down:\n{}",
            n1.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(n1.log().contains("Redis unreachable"), "{}", n1.log());
}

/// A node that cannot start says which thing failed and why, never shows the Redis password,
/// and, when its admin port is taken, fails before taking the source lease (it used to hold the
/// lease for its whole term, so no other node could take the stream).
#[test]
fn a_node_that_cannot_start_says_why_without_secrets_or_the_lease() {
    let Some(model) = common::model_384x640() else {
        return;
    };
    let redis = common::Redis::start();
    if !redis.owned() {
        common::skip("REDIS_URL is set; this test sets a password on its own server");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &model, &redis.url);
    let roles = "node.roles=[\"source\", \"sequencer\", \"detector\"]".to_string();
    let fails = |name: &str, extra: &[String]| -> String {
        let mut overrides = vec![roles.clone()];
        overrides.extend_from_slice(extra);
        let mut n = NodeProcess::start(&config, name, common::free_port(), &overrides, COOKIE);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = n.child.try_wait().unwrap() {
                assert!(!status.success(), "{name} started:\n{}", n.log());
                return n.log();
            }
            assert!(
                Instant::now() < deadline,
                "{name} still running:\n{}",
                n.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let log = fails("busy", &[format!("admin.listen=\"127.0.0.1:{port}\"")]);
    assert!(log.contains("admin.listen"), "{log}");
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let leases: Vec<String> = redis::cmd("KEYS")
        .arg("kc:*lease*")
        .query(&mut conn)
        .unwrap();
    assert!(
        leases.is_empty(),
        "a lease was taken by a node that could not start: {leases:?}"
    );

    let nobody = common::free_port();
    let log = fails(
        "refused",
        &[format!(
            "redis.url=\"redis://:hunter2x@127.0.0.1:{nobody}\""
        )],
    );
    assert!(log.contains("connection refused"), "{log}");
    assert!(!log.contains("hunter2x"), "password in the log:\n{log}");

    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("right-one")
        .query(&mut conn)
        .unwrap();
    let wrong_password = redis.url.replace("redis://", "redis://:hunter2x@");
    let log = fails("wrongpass", &[format!("redis.url=\"{wrong_password}\"")]);
    let _: () = redis::cmd("AUTH")
        .arg("right-one")
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("")
        .query(&mut conn)
        .unwrap();
    assert!(log.contains("refused the credentials"), "{log}");
    assert!(!log.contains("hunter2x"), "password in the log:\n{log}");

    let log = fails(
        "nohost",
        &["redis.url=\"redis://:hunter2x@no-such-host.invalid:6379\"".to_string()],
    );
    assert!(log.contains("DNS"), "{log}");
    assert!(!log.contains("hunter2x"), "password in the log:\n{log}");

    let not_a_model = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let log = fails(
        "badmodel",
        &[format!("model.path=\"{}\"", not_a_model.display())],
    );
    assert!(log.contains("cannot be read by kadr"), "{log}");
    assert!(log.contains("not a readable ONNX file"), "{log}");
    // One error, said once: not ractor's panic text around it.
    assert!(!log.contains("panicked"), "{log}");
}

/// Idle connections to the cluster port used to be kept for good: 1,100 of them exhausted a
/// node's 1024 file descriptors, it logged "Too many open files" 280,000 times a second and no
/// node could join. Now each must authenticate within the handshake deadline, only a few may
/// wait at once, and a node limited to 1024 descriptors serves through 3,000 of them.
#[test]
fn three_thousand_idle_connections_leave_the_node_serving() {
    let Some(model) = common::model_384x640() else {
        return;
    };
    // This test process holds the 3,000 sockets itself.
    let open_files = kadr::raise_open_files_limit().unwrap_or(0);
    if open_files < 3_500 {
        common::skip(&format!("this process may open only {open_files} files"));
        return;
    }
    let redis = common::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &model, &redis.url);
    let port = common::free_port();
    let mut n1 = NodeProcess::start_with_open_files(
        &config,
        "n1",
        port,
        &["cluster.handshake_timeout_ms=1000".into()],
        COOKIE,
        Some(1024),
    );
    n1.wait_members(&["n1"], Duration::from_secs(60));

    let mut idle = Vec::new();
    for _ in 0..3_000 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            idle.push(s);
        }
    }
    eprintln!("{} idle connections open", idle.len());
    assert!(idle.len() >= 2_900, "only {} connected", idle.len());

    // Still serving: the admin API answers and a new node joins.
    assert_eq!(n1.get_json("/health")["status"], "ok");
    let seed = format!("cluster.seeds=[\"127.0.0.1:{port}\"]");
    let mut n2 = NodeProcess::start(&config, "n2", common::free_port(), &[seed], COOKIE);
    n2.wait_members(&["n1", "n2"], Duration::from_secs(60));
    n1.wait_members(&["n1", "n2"], Duration::from_secs(60));

    // The flood was refused at accept or closed at the deadline, and said so in /metrics.
    std::thread::sleep(Duration::from_millis(1_500));
    let metrics = n1.get("/metrics").1;
    let refused = metric(&metrics, "kadr_cluster_connections_refused_total");
    let timed_out = metric(&metrics, "kadr_cluster_handshake_timeouts_total");
    eprintln!("refused at accept {refused}, closed at the deadline {timed_out}");
    assert!(refused + timed_out >= 2_900, "{refused} + {timed_out}");
    assert!(timed_out >= 1, "{timed_out}");
    // And the log stayed small.
    let log = n1.log();
    assert!(log.len() < 1_000_000, "log grew to {} bytes", log.len());
    assert_eq!(n1.get_json("/health")["status"], "ok");
    drop(idle);
}

/// A flood of junk connections to the cluster port leaves a few lines per kind in the log, not
/// five per connection, and the counts in `/metrics`.
#[test]
fn junk_connections_to_the_cluster_port_cannot_fill_the_log() {
    let Some(model) = common::model_384x640() else {
        return;
    };
    let redis = common::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &model, &redis.url);
    let port = common::free_port();
    let mut n1 = NodeProcess::start(&config, "n1", port, &[], COOKIE);
    n1.wait_members(&["n1"], Duration::from_secs(60));
    let before = n1.log().lines().count();
    for i in 0..600u32 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // A frame length far over the limit, or a short junk frame.
        let junk: &[u8] = if i % 2 == 0 {
            b"\xff\xff\xff\xffjunkjunk"
        } else {
            b"\x00\x00\x00\x08junkjunk"
        };
        let _ = s.write_all(junk);
    }
    // Every connection is answered and closed, counted as it goes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (failed, left_out) = loop {
        let m = n1.get("/metrics").1;
        let failed = metric(&m, "kadr_cluster_handshakes_failed_total")
            + metric(&m, "kadr_cluster_connections_refused_total");
        let left_out = metric(&m, "kadr_log_lines_left_out_total");
        if failed >= 300 && left_out > 0 {
            break (failed, left_out);
        }
        assert!(Instant::now() < deadline, "{m}\n{}", n1.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    let added = n1.log().lines().count() - before;
    eprintln!("{failed} junk connections counted, {left_out} library lines left out, {added} lines logged");
    assert!(
        added < 80,
        "{added} lines for 600 junk connections:\n{}",
        n1.log()
    );
    // And the node still serves.
    assert_eq!(n1.get_json("/health")["status"], "ok");
}

/// A lease per stream (the default): twelve cameras over three source nodes. Each node reads
/// 4 +/- 1 of them, every frame comes out once and in order; `kill -9` of one node costs only
/// its own streams a takeover gap (`missing`), the others none.
#[test]
fn twelve_streams_spread_over_three_source_nodes_and_a_kill_moves_only_its_own() {
    let Some(model) = common::model_384x640() else {
        return;
    };
    let Some(fixtures) = common::fixtures() else {
        return;
    };
    let jpeg = std::fs::read(fixtures.join("yolov7/bbb_frame60.jpg")).unwrap();
    let redis = common::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &model, &redis.url);
    let ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let settings = |seeded: bool| {
        let mut s = vec![
            "node.roles=[\"source\", \"sequencer\", \"detector\"]".to_string(),
            "cluster.source_lease_ms=1500".to_string(),
        ];
        if seeded {
            s.push(format!("cluster.seeds=[\"127.0.0.1:{}\"]", ports[0]));
        }
        s
    };
    let mut nodes = vec![NodeProcess::start(
        &config,
        "n1",
        ports[0],
        &settings(false),
        COOKIE,
    )];
    nodes[0].wait_members(&["n1"], Duration::from_secs(60));
    for (i, name) in ["n2", "n3"].into_iter().enumerate() {
        nodes.push(NodeProcess::start(
            &config,
            name,
            ports[i + 1],
            &settings(true),
            COOKIE,
        ));
    }
    for n in nodes.iter_mut() {
        n.wait_members(&["n1", "n2", "n3"], Duration::from_secs(60));
    }
    let streams: Vec<String> = (0..12).map(|i| format!("camera-{i:02}")).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = redis.url.clone();
    // Every result and gap of every stream, in the order they came.
    let (out_tx, out_rx) = std::sync::mpsc::channel::<OutputMessage>();
    let reader = rt.spawn({
        let url = url.clone();
        async move {
            let client = redis::Client::open(url).unwrap();
            let mut ps = client.get_async_pubsub().await.unwrap();
            ps.psubscribe("kc:detections:*").await.unwrap();
            let mut messages = ps.on_message();
            while let Some(m) = futures_util::StreamExt::next(&mut messages).await {
                let msg: OutputMessage = serde_json::from_slice(m.get_payload_bytes()).unwrap();
                if out_tx.send(msg).is_err() {
                    return;
                }
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    // 2 fps per camera, every frame KEEP: frames 0..2 settle the placement, 2..40 are watched.
    let publish = |from: u64, to: u64| {
        let (url, streams, jpeg) = (url.clone(), streams.clone(), jpeg.clone());
        rt.spawn(async move {
            let client = redis::Client::open(url).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            for seq in from..to {
                for s in &streams {
                    let mut msg = Vec::new();
                    kadr::protocol::encode_frame(
                        &mut msg,
                        s,
                        seq,
                        kadr::protocol::now_us(),
                        kadr::protocol::FLAG_KEEP,
                        &jpeg,
                    );
                    let _: i64 = redis::cmd("PUBLISH")
                        .arg(format!("kc:frames:{s}"))
                        .arg(msg)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    rt.block_on(publish(0, 2)).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let held = |n: &NodeProcess| metric(&n.get("/metrics").1, "kadr_streams_held");
    let shares: Vec<u64> = nodes.iter().map(held).collect();
    assert_eq!(shares.iter().sum::<u64>(), 12, "{shares:?}");
    assert!(shares.iter().all(|s| (3..=5).contains(s)), "{shares:?}");
    // Who reads what, from the leases themselves.
    let holder_of: std::collections::HashMap<String, String> = rt.block_on(async {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut m = std::collections::HashMap::new();
        for s in &streams {
            let token: String = redis::cmd("GET")
                .arg(format!("kc:lease:{s}"))
                .query_async(&mut conn)
                .await
                .unwrap();
            m.insert(s.clone(), token.split('/').next().unwrap().to_string());
        }
        m
    });
    // Every node's /streams says who reads each stream, as the leases do.
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, body) = n.get("/streams");
            let body: Value = serde_json::from_str(&body).unwrap();
            let shown: std::collections::HashMap<String, String> =
                serde_json::from_value(body["holders"].clone()).unwrap_or_default();
            if shown == holder_of {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}'s /streams holders {shown:?}, leases {holder_of:?}",
                n.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // The node with the most streams dies mid-stream.
    let victim = (0..3).max_by_key(|&i| shares[i]).unwrap();
    let victim_name = nodes[victim].name.clone();
    let publishing = publish(2, 40);
    std::thread::sleep(Duration::from_secs(6));
    nodes[victim].kill9();
    rt.block_on(publishing).unwrap();

    // Collect until every stream has accounted for its 40 frames.
    let mut by_stream: std::collections::HashMap<String, Vec<OutputMessage>> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let accounted = |msgs: &Vec<OutputMessage>| msgs.last().map_or(0, |m| m.seqs().1 + 1);
    while by_stream.len() < 12 || by_stream.values().any(|m| accounted(m) < 40) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "streams not all accounted for: {:?}",
            by_stream
                .iter()
                .map(|(s, m)| (s, accounted(m)))
                .collect::<Vec<_>>()
        );
        if let Ok(m) = out_rx.recv_timeout(left.min(Duration::from_secs(1))) {
            by_stream.entry(m.stream().to_string()).or_default().push(m);
        }
    }
    reader.abort();
    for (stream, msgs) in &by_stream {
        // In order, each number once, nothing missing from 0 to 39.
        let mut next = 0;
        let mut missing = 0;
        for m in msgs {
            let (first, last) = m.seqs();
            assert_eq!(first, next, "{stream}: {msgs:?}");
            next = last + 1;
            if let OutputMessage::Gap(g) = m {
                assert_eq!(
                    g.reason,
                    kadr::protocol::GapReason::Missing,
                    "{stream}: {g:?}"
                );
                // Frames 0 and 1 settled the placement: a stream handed over then (a node
                // ranked first for more than its share) may have a gap there.
                if g.seq >= 2 {
                    missing += g.count;
                }
            }
        }
        assert_eq!(next, 40, "{stream}");
        if holder_of[stream] == victim_name {
            eprintln!("{stream} (on the killed {victim_name}): {missing} missing");
        } else {
            let story: Vec<String> = nodes
                .iter()
                .flat_map(|n| {
                    n.log()
                        .lines()
                        .filter(|l| {
                            l.contains(stream.as_str()) || l.contains("streams this node reads")
                        })
                        .map(|l| format!("{}: {l}", n.name))
                        .collect::<Vec<_>>()
                })
                .collect();
            assert_eq!(
                missing,
                0,
                "{stream} was on {}, not the killed node:\n{}",
                holder_of[stream],
                story.join("\n")
            );
        }
    }
    // The survivors hold every stream now.
    let survivors: u64 = (0..3)
        .filter(|&i| i != victim)
        .map(|i| held(&nodes[i]))
        .sum();
    assert_eq!(survivors, 12);
}

/// A node on a Redis Cluster of three masters (each with a replica), over pub/sub: each
/// stream's keys live on its own shard (version 2 names), results come in order, a publisher of
/// version 1 names is told what to change, and a shard's master killed mid-stream costs its
/// streams a pause while the replica is promoted, and no frame: every frame is detected, in
/// order (the frames reach the node through a live node; the results wait for the promotion).
#[test]
fn on_a_redis_cluster_over_pubsub_a_killed_master_loses_no_frame() {
    redis_cluster_failover(false);
}

/// The same over Redis Streams: frames are appended to each stream's own shard, so the killed
/// master's stream waits for its replica; the others are read on. Every sequence number is
/// accounted for in order (an entry the master took but had not yet copied to its replica is
/// lost with it, as Redis's replication is asynchronous: a `missing` gap, on that stream only).
#[test]
fn on_a_redis_cluster_over_streams_a_killed_master_costs_only_its_streams() {
    redis_cluster_failover(true);
}

fn redis_cluster_failover(over_streams: bool) {
    let Some(model) = common::model_384x640() else {
        return;
    };
    let Some(fixtures) = common::fixtures() else {
        return;
    };
    let Some(mut redis) = common::RedisCluster::start() else {
        return;
    };
    let jpeg = std::fs::read(fixtures.join("yolov7/bbb_frame60.jpg")).unwrap();
    // One stream per shard.
    let masters: Vec<usize> = redis.masters().into_iter().map(|(i, _)| i).collect();
    let mut streams: Vec<(String, usize)> = Vec::new();
    for i in 0.. {
        let name = format!("camera-{i}");
        let master = redis.master_of(&format!("{{{name}}}"));
        if !streams.iter().any(|(_, m)| *m == master) {
            streams.push((name, master));
        }
        if streams.len() == masters.len() {
            break;
        }
    }
    // The node is pointed at one master and the test talks to another; the third is killed.
    let (node_redis, test_redis, victim) = (masters[0], masters[1], masters[2]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &model, &redis.url(node_redis));
    let others: Vec<String> = (0..6)
        .filter(|&i| i != node_redis)
        .map(|i| format!("\"{}\"", redis.url(i)))
        .collect();
    let mut node = NodeProcess::start(
        &config,
        "n1",
        common::free_port(),
        &[
            "node.roles=[\"source\", \"sequencer\", \"detector\"]".to_string(),
            "redis.cluster=true".to_string(),
            format!("redis.cluster_nodes=[{}]", others.join(", ")),
            "cluster.source_lease_ms=1500".to_string(),
        ],
        COOKIE,
    );
    node.wait_members(&["n1"], Duration::from_secs(60));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = redis.url(test_redis);
    let (out_tx, out_rx) = std::sync::mpsc::channel::<(bool, Vec<u8>)>();
    let reader = rt.spawn({
        let url = url.clone();
        async move {
            let client = redis::Client::open(url).unwrap();
            let mut ps = client.get_async_pubsub().await.unwrap();
            ps.psubscribe("kc:detections:*").await.unwrap();
            ps.psubscribe("kc:errors:*").await.unwrap();
            let mut messages = ps.on_message();
            while let Some(m) = futures_util::StreamExt::next(&mut messages).await {
                let is_error = m.get_channel_name().starts_with("kc:errors:");
                if out_tx
                    .send((is_error, m.get_payload_bytes().to_vec()))
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    const FRAMES: u64 = 40;
    // 4 fps per stream, every frame KEEP. Over pub/sub to a node that is not killed (a PUBLISH
    // on a Redis Cluster reaches every node); over Streams to each stream's shard, one task per
    // stream, each retrying a frame until its shard takes it.
    let cluster_client = redis::cluster::ClusterClientBuilder::new(vec![url.clone()])
        .retries(2)
        .build()
        .unwrap();
    let publish = |from: u64, to: u64, tagged: bool| {
        let (url, jpeg) = (url.clone(), jpeg.clone());
        let cluster_client = cluster_client.clone();
        let names: Vec<String> = streams.iter().map(|(s, _)| s.clone()).collect();
        rt.spawn(async move {
            let channels = kadr::protocol::Channels::with_tags("kc", tagged);
            let mut tasks = Vec::new();
            for s in names {
                let (url, jpeg, channels) = (url.clone(), jpeg.clone(), channels.clone());
                let cluster_client = cluster_client.clone();
                tasks.push(tokio::spawn(async move {
                    let mut plain = redis::Client::open(url)
                        .unwrap()
                        .get_multiplexed_async_connection()
                        .await
                        .unwrap();
                    let mut sharded = cluster_client.get_async_connection().await.unwrap();
                    for seq in from..to {
                        let mut msg = Vec::new();
                        kadr::protocol::encode_frame(
                            &mut msg,
                            &s,
                            seq,
                            kadr::protocol::now_us(),
                            kadr::protocol::FLAG_KEEP,
                            &jpeg,
                        );
                        if !over_streams {
                            let _: i64 = redis::cmd("PUBLISH")
                                .arg(channels.frames(&s))
                                .arg(msg)
                                .query_async(&mut plain)
                                .await
                                .unwrap();
                        } else {
                            let deadline = Instant::now() + Duration::from_secs(30);
                            loop {
                                let added: redis::RedisResult<String> = redis::cmd("XADD")
                                    .arg(channels.frames(&s))
                                    .arg("*")
                                    .arg("frame")
                                    .arg(&msg)
                                    .query_async(&mut sharded)
                                    .await;
                                match added {
                                    Ok(_) => break,
                                    Err(e) => {
                                        assert!(Instant::now() < deadline, "XADD: {e}");
                                        tokio::time::sleep(Duration::from_millis(100)).await;
                                    }
                                }
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };
    // A publisher of version 1 names first: told, on the channel it knows.
    rt.block_on(publish(0, 1, false)).unwrap();
    let publishing = publish(0, FRAMES, true);
    std::thread::sleep(Duration::from_secs(3));
    let (victim_stream, _) = streams.iter().find(|(_, m)| *m == victim).unwrap().clone();
    redis.kill(victim);
    rt.block_on(publishing).unwrap();

    let mut by_stream: std::collections::HashMap<String, Vec<OutputMessage>> = Default::default();
    let mut untagged_errors = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    let accounted = |msgs: &Vec<OutputMessage>| msgs.last().map_or(0, |m| m.seqs().1 + 1);
    while by_stream.len() < streams.len() || by_stream.values().any(|m| accounted(m) < FRAMES) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "streams not all accounted for: {:?}\n{}",
            by_stream
                .iter()
                .map(|(s, m)| (s, accounted(m)))
                .collect::<Vec<_>>(),
            node.log()
        );
        let Ok((is_error, payload)) = out_rx.recv_timeout(left.min(Duration::from_secs(1))) else {
            continue;
        };
        if is_error {
            let e: Value = serde_json::from_slice(&payload).unwrap();
            assert_eq!(e["code"], "untagged_channel", "{e}");
            assert!(
                e["message"]
                    .as_str()
                    .unwrap()
                    .contains("kc:frames:{camera-"),
                "{e}"
            );
            untagged_errors += 1;
            continue;
        }
        let m: OutputMessage = serde_json::from_slice(&payload).unwrap();
        by_stream.entry(m.stream().to_string()).or_default().push(m);
    }
    reader.abort();
    assert_eq!(
        untagged_errors,
        streams.len(),
        "one error per version 1 stream"
    );
    let warnings = || {
        node.log()
            .lines()
            .filter(|l| l.contains("WARN"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut lost_with_the_master = 0;
    for (stream, msgs) in &by_stream {
        // In order, each number once, every frame detected: kept frames wait out the failover.
        let seqs: Vec<(u64, u64)> = msgs.iter().map(OutputMessage::seqs).collect();
        let may_lose = over_streams && *stream == victim_stream;
        let mut next = 0;
        for m in msgs {
            let (first, last) = m.seqs();
            assert_eq!(
                first,
                next,
                "{stream} (killed shard: {victim_stream}): {seqs:?}\n{}",
                warnings()
            );
            next = last + 1;
            if let (true, OutputMessage::Gap(g)) = (may_lose, m) {
                assert_eq!(g.reason, kadr::protocol::GapReason::Missing, "{g:?}");
                lost_with_the_master += g.count;
                continue;
            }
            assert!(
                matches!(m, OutputMessage::Detections(_)),
                "{stream} (killed shard: {victim_stream}): {m:?}\n{}",
                warnings()
            );
        }
        assert_eq!(next, FRAMES, "{stream}");
    }
    if !over_streams {
        // The command-line clients on the cluster: `kadr publish` appends a clip's frames to
        // its stream's shard, `kadr subscribe` reads the results stream there.
        let video = common::video("bigbuckbunny.mp4").expect("fixtures are here");
        let cli = |args: &[&str]| {
            let mut cmd = common::kadr();
            cmd.args(args)
                .args(["--stream", "cli-cam", "--prefix", "kc", "--redis-cluster"])
                .args(["--redis-url", &url]);
            cmd
        };
        let published = cli(&["publish", "--transport", "streams", "--keep-all", "--fast"])
            .args(["--limit", "8", "--input"])
            .arg(&video)
            .output()
            .unwrap();
        assert!(
            published.status.success(),
            "{}",
            String::from_utf8_lossy(&published.stderr)
        );
        let summary = dir.path().join("cli-cam.summary.json");
        let subscribed = cli(&["subscribe", "--from", "0", "--count", "8", "--quiet"])
            .args(["--idle-timeout", "30", "--summary-json"])
            .arg(&summary)
            .output()
            .unwrap();
        assert!(subscribed.status.success());
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
        assert_eq!(summary["frames"], 8, "{summary}");
        assert_eq!(summary["detected"], 8, "{summary}");
        assert_eq!(summary["order_violations"], 0, "{summary}");
        assert_eq!(summary["duplicates"], 0, "{summary}");
    }
    eprintln!("{victim_stream}: {lost_with_the_master} frames lost with the killed master");
    assert!(lost_with_the_master <= 4, "{lost_with_the_master}");
    // The killed master's replica serves its slots now, and holds the stream's keys.
    let promoted = redis.master_of(&format!("{{{victim_stream}}}"));
    assert_ne!(promoted, victim);
    let last_seq = redis.cli(
        promoted,
        &["get", &format!("kc:last-seq:{{{victim_stream}}}")],
    );
    assert!(
        last_seq.trim().ends_with(&format!(":{}", FRAMES - 1)),
        "{last_seq}"
    );
}
