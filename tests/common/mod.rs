//! Shared test helpers: fixtures, models, a real redis-server on a free port, the kadr binary.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether every prerequisite must be there: in CI (`CI` set, as `.ci/run` runs) or with
/// `KADR_REQUIRE_ALL=1`. A test that cannot run then fails instead of passing green.
pub fn prerequisites_required() -> bool {
    let set = |var: &str| std::env::var(var).is_ok_and(|v| !v.is_empty() && v != "0");
    set("CI") || set("KADR_REQUIRE_ALL")
}

/// Say why a test does not run: skipped where prerequisites are optional, a failure where
/// they are required ([`prerequisites_required`]).
pub fn skip(why: &str) {
    if prerequisites_required() {
        panic!("prerequisite missing (CI or KADR_REQUIRE_ALL is set, so this fails): {why}");
    }
    eprintln!("SKIP: {why}");
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/fixtures/`, or `None` with a message (tests then skip).
pub fn fixtures() -> Option<PathBuf> {
    let dir = root().join("../shared/fixtures");
    if dir.join("yolov7").is_dir() {
        Some(dir)
    } else {
        skip(&format!(
            "{} is absent (fixture tests run in CI)",
            dir.display()
        ));
        None
    }
}

/// The 384x640 YOLOv7-tiny model: the fixture's, else the one `scripts/setup.sh` generates.
pub fn model_384x640() -> Option<PathBuf> {
    let candidates = [
        root().join("../shared/fixtures/yolov7/yolov7-tiny-random-384x640.onnx"),
        root().join("models/yolov7-tiny-random-384x640.onnx"),
    ];
    let found = candidates.into_iter().find(|p| p.is_file());
    if found.is_none() {
        skip("no model; run scripts/setup.sh");
    }
    found
}

/// The trained COCO detector the demo runs (Darknet YOLOv3-tiny, converted by setup.sh).
pub fn trained_model() -> Option<PathBuf> {
    let path = root().join("models/yolov3-tiny-coco-384x640.onnx");
    if path.is_file() {
        Some(path)
    } else {
        skip("no trained model; run scripts/setup.sh");
        None
    }
}

/// The demo video: `.deps/video/` (setup.sh) or the fixtures.
pub fn video(name: &str) -> Option<PathBuf> {
    let candidates = [
        root().join(".deps/video").join(name),
        root().join("../shared/fixtures/video").join(name),
    ];
    let found = candidates.into_iter().find(|p| p.is_file());
    if found.is_none() {
        skip(&format!("no {name}; run scripts/setup.sh"));
    }
    found
}

/// The config of a single in-process node: its Redis, its channel prefix, the model, the
/// test cookie and a free cluster port; `extra` is appended (more sections, e.g. `[limits]`).
pub fn single_node_config(model: &Path, redis: &str, prefix: &str, extra: &str) -> kadr::Config {
    let text = format!(
        "[redis]\nurl = \"{redis}\"\nchannel_prefix = \"{prefix}\"\n[model]\npath = \"{}\"\n\
         [cluster]\ncookie = \"test-cookie\"\nlisten = \"127.0.0.1:{}\"\n{extra}",
        model.display(),
        free_port()
    );
    kadr::Config::parse(&text, Path::new("test.toml"), Path::new(".")).unwrap()
}

pub fn kadr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kadr"))
}

/// Run a command, assert that it succeeded (showing its stderr if not), return its stdout.
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `kadr detect --model MODEL ARGS... IMAGES...`: one JSON value per printed line.
pub fn kadr_detect<I: AsRef<std::ffi::OsStr>>(
    model: &Path,
    args: &[&str],
    images: impl IntoIterator<Item = I>,
) -> Vec<serde_json::Value> {
    let stdout = stdout_of(
        kadr()
            .arg("detect")
            .arg("--model")
            .arg(model)
            .args(args)
            .args(images),
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server of our own on a free loopback port, killed on drop.
/// `REDIS_URL` in the environment points the tests at an existing server instead.
pub struct Redis {
    pub url: String,
    port: u16,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    /// Settings beyond the defaults (no persistence), kept across restarts.
    settings: Vec<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_with(&["--appendonly", "no"])
    }

    /// A server of our own with these settings (e.g. `--appendonly yes`); `REDIS_URL` still
    /// wins (check [`Redis::owned`]).
    pub fn start_with(settings: &[&str]) -> Redis {
        let settings: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
        if let Ok(url) = std::env::var("REDIS_URL") {
            return Redis {
                url,
                port: 0,
                child: None,
                dir: None,
                settings,
            };
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Self::spawn(port, dir.path(), &settings);
        Redis {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            child: Some(child),
            dir: Some(dir),
            settings,
        }
    }

    /// Whether this test owns the server (and so may restart it).
    pub fn owned(&self) -> bool {
        self.dir.is_some()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Send the server a signal by name (`STOP`, `CONT`): freeze it and let it go on.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("owned server").id();
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {pid}");
    }

    /// Stop the server and start a new one on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Start a new server on the port of one that was stopped.
    pub fn start_again(&mut self) {
        let dir = self
            .dir
            .as_ref()
            .expect("owned server")
            .path()
            .to_path_buf();
        self.child = Some(Self::spawn(self.port, &dir, &self.settings));
    }

    fn spawn(port: u16, dir: &Path, settings: &[String]) -> Child {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(settings)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server not found; run scripts/setup.sh");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal `.npy` reader for float32 little-endian C-order arrays.
pub fn read_npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{} is not .npy", path.display());
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape_txt = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_txt
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let data: Vec<f32> = bytes[start + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>());
    (shape, data)
}
pub mod browser;
pub mod camera;

/// A Redis Cluster of our own on loopback: three masters, each with a replica (six
/// redis-server processes, made a cluster by `redis-cli --cluster create`), killed on drop.
/// A node that misses 1 s of pings is failed over.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Option<Child>>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// None (after `skip`) where redis-cli is missing.
    pub fn start() -> Option<RedisCluster> {
        if Command::new("redis-cli").arg("--version").output().is_err() {
            skip("redis-cli not found (Debian's redis-tools); run scripts/setup.sh");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut ports = Vec::new();
        let mut children = Vec::new();
        for i in 0..6 {
            let (port, bus) = (free_port(), free_port());
            let node_dir = dir.path().join(i.to_string());
            std::fs::create_dir(&node_dir).unwrap();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .args(["--cluster-node-timeout", "1000"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server not found; run scripts/setup.sh");
            ports.push(port);
            children.push(Some(child));
        }
        for &port in &ports {
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let cluster = RedisCluster {
            ports,
            children,
            _dir: dir,
        };
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        // Every node must see the cluster whole, and every replica be in sync, before a
        // failover can be asked of it. 30 s were once too few in CI, with the other cluster
        // tests running beside it on 2 cores.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ready = (0..6).all(|i| {
                cluster
                    .cli(i, &["cluster", "info"])
                    .contains("cluster_state:ok")
                    && cluster.masters().len() == 3
            }) && cluster.replicas_in_sync();
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "the Redis Cluster did not form");
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(cluster)
    }

    pub fn url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}", self.ports[i])
    }

    /// `redis-cli -p <node i> args...`, its output.
    pub fn cli(&self, i: usize, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.ports[i].to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A node still running, to ask.
    fn alive(&self) -> usize {
        (0..self.ports.len())
            .find(|&i| self.children[i].is_some())
            .expect("a node running")
    }

    /// The masters serving slots now, as indexes into `ports`, with their slot ranges.
    pub fn masters(&self) -> Vec<(usize, Vec<(u16, u16)>)> {
        let nodes = self.cli(self.alive(), &["cluster", "nodes"]);
        let mut masters = Vec::new();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let port: u16 = fields[1]
                .split(['@', ':'])
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let Some(i) = self.ports.iter().position(|&p| p == port) else {
                continue;
            };
            let ranges = fields[8..]
                .iter()
                .filter_map(|r| {
                    let (a, b) = r.split_once('-').unwrap_or((r, r));
                    Some((a.parse().ok()?, b.parse().ok()?))
                })
                .collect();
            masters.push((i, ranges));
        }
        masters
    }

    fn replicas_in_sync(&self) -> bool {
        (0..6).all(|i| {
            let info = self.cli(i, &["info", "replication"]);
            info.contains("role:master") || info.contains("master_link_status:up")
        })
    }

    /// The master (index into `ports`) that serves `key` now.
    pub fn master_of(&self, key: &str) -> usize {
        let slot: u16 = self
            .cli(self.alive(), &["cluster", "keyslot", key])
            .trim()
            .parse()
            .unwrap();
        self.masters()
            .into_iter()
            .find(|(_, ranges)| ranges.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|(i, _)| i)
            .expect("every slot served")
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// A Kafka broker of our own: tansu (a broker that speaks Kafka's protocol, installed by
/// scripts/setup.sh), in memory, on a free loopback port, killed on drop. It starts in
/// milliseconds, so each test has its own; building it is what takes long, and is done once.
pub struct Kafka {
    /// `127.0.0.1:port`, as clients name a broker.
    pub brokers: String,
    tansu: PathBuf,
    child: Child,
}

impl Kafka {
    /// None (after `skip`) where tansu is not installed.
    pub fn start() -> Option<Kafka> {
        let tansu = std::env::var_os("KADR_TANSU")
            .map(PathBuf::from)
            .or_else(|| {
                let home = PathBuf::from(std::env::var_os("HOME")?);
                std::env::var_os("PATH")
                    .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                    .unwrap_or_default()
                    .into_iter()
                    .chain([home.join(".cargo/bin")])
                    .map(|dir| dir.join("tansu"))
                    .find(|p| p.is_file())
            });
        let Some(tansu) = tansu else {
            skip("tansu (a Kafka broker) not found; run scripts/setup.sh");
            return None;
        };
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Kafka {
            brokers: format!("127.0.0.1:{port}"),
            tansu,
            child,
        })
    }

    /// Create a topic with this many partitions.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(&self.tansu)
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://{}", self.brokers)])
            .output()
            .unwrap();
        assert!(out.status.success(), "tansu topic create {name}: {out:?}");
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
