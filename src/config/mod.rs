//! `cluster.toml`: the node's configuration. Every field is documented in
//! `docs/configuration.md`; unknown fields are refused so a typo never passes silently.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

pub mod live;

pub use live::LiveConfig;

use crate::model::backend::{ExecutionProvider, Precision};
use crate::model::postprocess::PostprocessConfig;
use crate::model::ModelOptions;
use crate::protocol::FrameLimits;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: `{field}` {problem}")]
    Invalid {
        path: PathBuf,
        field: String,
        problem: String,
    },
    /// Several fields at once, each with its key's path.
    #[error("config {path}: {} problems:{}", problems.len(), list(problems))]
    InvalidMany {
        path: PathBuf,
        problems: Vec<(String, String)>,
    },
}

fn list(problems: &[(String, String)]) -> String {
    problems
        .iter()
        .map(|(field, problem)| format!("\n  `{field}` {problem}"))
        .collect()
}

impl ConfigError {
    /// `Ok` for no problem, [`ConfigError::Invalid`] for one, [`ConfigError::InvalidMany`] for more.
    fn from_problems(path: &Path, mut problems: Vec<(String, String)>) -> Result<(), ConfigError> {
        let path = path.to_path_buf();
        match problems.len() {
            0 => Ok(()),
            1 => {
                let (field, problem) = problems.remove(0);
                Err(ConfigError::Invalid {
                    path,
                    field,
                    problem,
                })
            }
            _ => Err(ConfigError::InvalidMany { path, problems }),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub node: NodeConfig,
    #[serde(default)]
    pub redis: RedisConfig,
    pub model: ModelConfig,
    #[serde(default)]
    pub detector: DetectorConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Freshness of live frames, per stream.
    #[serde(default)]
    pub live: LiveConfig,
    #[serde(default)]
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub admin: AdminConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Unique in the cluster; shown in logs and in the admin API.
    pub name: String,
    /// What this node runs. `source` and `sequencer` go together: the sequencer must hear of
    /// every frame the source accepts, so they share a node.
    pub roles: Vec<Role>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: "kadr".into(),
            roles: vec![Role::Source, Role::Sequencer, Role::Detector],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads frames from Redis and dispatches them to detectors across the cluster.
    Source,
    /// Puts results back in order and publishes them.
    Sequencer,
    /// Runs a pool of detectors for any source in the cluster.
    Detector,
}

impl NodeConfig {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// A secret read from the config or the environment; never printed.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "(unset)"
        } else {
            "(secret)"
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Where this node listens for other nodes. Loopback unless configured.
    pub listen: SocketAddr,
    /// The host other nodes dial to reach this one (at `listen`'s port); defaults to
    /// `listen`'s address. Needed when listening on 0.0.0.0.
    pub advertise_host: Option<String>,
    /// Shared secret every node must present; `KADR_CLUSTER_COOKIE` overrides it.
    pub cookie: Secret,
    /// Nodes to join at start (`host:port`); the rest of the cluster is learned from them.
    pub seeds: Vec<String>,
    /// How long start-up waits to join at least one seed before giving up.
    pub join_timeout_ms: u64,
    /// How often a node tells the others it is alive (and what it runs).
    pub heartbeat_ms: u64,
    /// How long a source node's claim on the frames channels lasts without renewal: a
    /// standby source node takes over within this after the active one dies.
    pub source_lease_ms: u64,
    /// TLS between nodes; plaintext when absent.
    pub tls: Option<TlsConfig>,
    /// A connection to `listen` that has not authenticated (TLS and cookie) within this is
    /// closed.
    pub handshake_timeout_ms: u64,
    /// Connections to `listen` waiting to authenticate at once; one more is closed at accept.
    pub max_pending_handshakes: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            advertise_host: None,
            cookie: Secret::default(),
            seeds: Vec::new(),
            join_timeout_ms: 10_000,
            heartbeat_ms: 1_000,
            source_lease_ms: 3_000,
            tls: None,
            handshake_timeout_ms: 5_000,
            max_pending_handshakes: 64,
        }
    }
}

impl ClusterConfig {
    /// The host other nodes dial.
    pub fn advertised_host(&self) -> String {
        self.advertise_host
            .clone()
            .unwrap_or_else(|| self.listen.ip().to_string())
    }

    /// `host:port`, as other nodes dial it.
    pub fn advertised(&self) -> String {
        let host = self.advertised_host();
        if host.contains(':') {
            format!("[{host}]:{}", self.listen.port())
        } else {
            format!("{host}:{}", self.listen.port())
        }
    }
}

/// Mutual TLS: every node presents a certificate signed by `ca` and checks its peer's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// This node's certificate chain (PEM).
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
    /// The cluster's certificate authority (PEM); peers must present a certificate it signed.
    pub ca: PathBuf,
    /// The name every node's certificate carries (a DNS subject alternative name).
    #[serde(default = "default_tls_server_name")]
    pub server_name: String,
}

fn default_tls_server_name() -> String {
    "kadr".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The admin HTTP API's address. Loopback unless configured.
    pub listen: SocketAddr,
    /// Bearer token for mutating calls; `KADR_ADMIN_TOKEN` overrides it. Unset: mutations refused.
    pub token: Secret,
    /// Live viewer pages open at once (each reads its stream's frames from Redis).
    pub max_viewers: usize,
    /// Host names (beside IP addresses and `localhost`) that requests may name in `Host`;
    /// `"*"` allows any. Others are refused, against DNS rebinding.
    pub allowed_hosts: Vec<String>,
}

/// Most viewers a config may allow: each costs a Redis connection and a stream's bandwidth.
pub const MAX_VIEWERS: usize = 64;

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7500)),
            token: Secret::default(),
            max_viewers: 8,
            allowed_hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    pub url: String,
    /// Every channel is named `{channel_prefix}:...`.
    pub channel_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            channel_prefix: "kadr".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// ONNX file; a relative path is relative to the config file's folder.
    pub path: PathBuf,
    #[serde(default = "default_conf")]
    pub conf_threshold: f32,
    #[serde(default = "default_iou")]
    pub iou_threshold: f32,
    #[serde(default = "default_max_detections")]
    pub max_detections: usize,
    /// Path to `libonnxruntime.so`; found in `.deps/onnxruntime/` when unset.
    #[serde(default)]
    pub onnxruntime_library: Option<PathBuf>,
    /// Decode JPEGs at the smallest DCT scale that covers the model input (faster; not
    /// bit-exact with the reference's full-size decode and resize). Unset: on unless
    /// `precision = "fp32"` asks for the reference-exact path.
    #[serde(default)]
    pub dct_scaling: Option<bool>,
    /// `auto` (OpenVINO where the CPU computes bf16, ONNX Runtime's CPU kernels otherwise),
    /// `cpu` or `openvino`. See `model::backend`.
    #[serde(default)]
    pub execution_provider: ExecutionProvider,
    /// `auto` (bf16 where the CPU has it and OpenVINO loads, fp32 otherwise), `fp32` (the
    /// reference-exact path) or `bf16`.
    #[serde(default)]
    pub precision: Precision,
}

fn default_conf() -> f32 {
    0.25
}
fn default_iou() -> f32 {
    0.45
}
fn default_max_detections() -> usize {
    300
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// Detector actors on this node; 0 means one per available core.
    pub pool_size: usize,
    /// ONNX Runtime threads inside one inference.
    pub intra_threads: usize,
    /// Frames handed to one detector at a time (1 = the next frame waits in the node's queue).
    pub max_in_flight: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            pool_size: 0,
            intra_threads: 1,
            max_in_flight: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest frame message accepted, header included.
    pub max_payload_bytes: usize,
    pub max_stream_id_bytes: usize,
    /// Live frames waiting for a detector, all streams together: the memory bound. Past it,
    /// the stream with the most waiting loses its oldest. Freshness is `[live]`'s business.
    pub queue_capacity: usize,
    /// How long a finished result may wait behind a missing earlier frame before that frame
    /// is reported as a gap. The sequencer never holds a stream longer than this.
    pub gap_wait_ms: u64,
    /// A frame with no result after this long is reported lost even if nothing waits behind it.
    pub frame_timeout_ms: u64,
    /// Never drop frames for lateness, on any stream (a publisher can ask per frame too).
    pub keep_all_frames: bool,
    /// Streams tracked at once; frames of further streams are refused with an error.
    pub max_streams: usize,
    /// A frame numbered more than this after its stream's last is refused (`seq_jump`) until
    /// consecutive frames confirm the new numbering.
    pub max_seq_jump: u64,
    /// `KEEP` frames a source node holds at once (waiting and at detectors); one more is shed as
    /// a `dropped` gap. With `max_payload_bytes`, the bound on memory under KEEP overload.
    pub max_kept_frames: usize,
    /// Largest frame, width x height as its JPEG header declares; a larger one is refused
    /// (`image_too_large`) before any pixel is decoded. Bounds each detector's decode buffer.
    pub max_pixels: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: 8 * 1024 * 1024,
            max_stream_id_bytes: 128,
            queue_capacity: 256,
            gap_wait_ms: 1000,
            frame_timeout_ms: 30_000,
            keep_all_frames: false,
            max_streams: 1024,
            max_seq_jump: 300,
            max_kept_frames: 288,
            max_pixels: crate::model::DEFAULT_MAX_PIXELS,
        }
    }
}

/// What a config is loaded for: each command validates what it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `kadr node`: every section.
    Node,
    /// `kadr bench-model`: the model and detector settings only (no cookie, ports or peers).
    BenchModel,
}

impl Config {
    /// Read a config file for `kadr node`, apply `key.path=value` overrides (`--set`) and the
    /// environment's secrets (`KADR_CLUSTER_COOKIE`, `KADR_ADMIN_TOKEN`), then validate.
    pub fn load_with(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        Self::load_for(path, overrides, Purpose::Node)
    }

    /// As [`Config::load_with`], validating what `purpose` uses.
    pub fn load_for(
        path: &Path,
        overrides: &[String],
        purpose: Purpose,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let secrets = [
            ("KADR_CLUSTER_COOKIE", "cluster.cookie"),
            ("KADR_ADMIN_TOKEN", "admin.token"),
        ];
        let from_env: Vec<(&str, String)> = secrets
            .iter()
            .filter_map(|(var, key)| std::env::var(var).ok().map(|v| (*key, v)))
            .collect();
        if overrides.is_empty() && from_env.is_empty() {
            // Straight from the text, so errors carry line numbers.
            let cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            return cfg.resolve(path, base, purpose);
        }
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        for item in overrides {
            apply_override(&mut table, item).map_err(|message| ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            })?;
        }
        for (key, value) in from_env {
            set_path(&mut table, key, toml::Value::String(value));
        }
        let cfg: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        cfg.resolve(path, base, purpose)
    }

    /// Parse and validate config text; relative paths are resolved against `base`.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.resolve(path, base, Purpose::Node)
    }

    /// Make relative paths relative to the config's folder, then validate.
    fn resolve(mut self, path: &Path, base: &Path, purpose: Purpose) -> Result<Self, ConfigError> {
        let cfg = &mut self;
        if let Some(tls) = cfg.cluster.tls.as_mut() {
            for p in [&mut tls.cert, &mut tls.key, &mut tls.ca] {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        if cfg.model.path.is_relative() {
            cfg.model.path = base.join(&cfg.model.path);
        }
        if let Some(lib) = cfg.model.onnxruntime_library.as_mut() {
            if lib.is_relative() {
                *lib = base.join(&*lib);
            }
        }
        self.validate(path, purpose)?;
        Ok(self)
    }

    /// Check every field; report every problem at once, each with its key's path.
    fn validate(&self, path: &Path, purpose: Purpose) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.check(&mut problems);
        problems.extend(self.live.problems());
        if purpose == Purpose::Node {
            self.check_cluster(&mut problems);
        }
        ConfigError::from_problems(path, problems)
    }

    fn check(&self, problems: &mut Vec<(String, String)>) {
        let invalid = |field: &str, problem: String| (field.to_string(), problem);
        let unit = |v: f32| v > 0.0 && v <= 1.0;
        if !unit(self.model.conf_threshold) {
            problems.push(invalid(
                "model.conf_threshold",
                format!("is {}, must be in (0, 1]", self.model.conf_threshold),
            ));
        }
        if !unit(self.model.iou_threshold) {
            problems.push(invalid(
                "model.iou_threshold",
                format!("is {}, must be in (0, 1]", self.model.iou_threshold),
            ));
        }
        if let Some(why) =
            crate::model::backend::impossible(self.model.execution_provider, self.model.precision)
        {
            problems.push(invalid("model.precision", why.into()));
        }
        if !self.model.path.is_file() {
            problems.push(invalid(
                "model.path",
                format!(
                    "{} is not a file; run `scripts/setup.sh` to generate the demo model",
                    self.model.path.display()
                ),
            ));
        }
        if self.redis.url.starts_with("rediss://") {
            // Said here rather than as "unreachable" at start: this build has no TLS to Redis.
            problems.push(invalid(
                "redis.url",
                "rediss:// (TLS to Redis) is not supported by this build yet; reach Redis over a TLS tunnel (stunnel, a service mesh) with redis://".into(),
            ));
        }
        if !self.redis.url.starts_with("redis://") && !self.redis.url.starts_with("unix://") {
            problems.push(invalid(
                "redis.url",
                format!(
                    "{:?} is not a redis:// URL",
                    crate::redis_conn::redact(&self.redis.url)
                ),
            ));
        }
        let prefix_ok = !self.redis.channel_prefix.is_empty()
            && !self
                .redis
                .channel_prefix
                .contains(['*', '?', '[', ']', ' ']);
        if !prefix_ok {
            problems.push(invalid(
                "redis.channel_prefix",
                "must be non-empty, without spaces or glob characters".into(),
            ));
        }
        // (field, value, least, most): the upper bounds catch typos that would exhaust memory.
        let ranges: [(&'static str, u64, u64, u64); 14] = [
            (
                "cluster.handshake_timeout_ms",
                self.cluster.handshake_timeout_ms,
                100,
                600_000,
            ),
            (
                "cluster.max_pending_handshakes",
                self.cluster.max_pending_handshakes as u64,
                1,
                10_000,
            ),
            (
                "limits.max_pixels",
                self.limits.max_pixels,
                1,
                crate::model::MAX_IMAGE_PIXELS,
            ),
            (
                "limits.max_kept_frames",
                self.limits.max_kept_frames as u64,
                1,
                100_000,
            ),
            ("limits.max_seq_jump", self.limits.max_seq_jump, 1, 1 << 40),
            (
                "model.max_detections",
                self.model.max_detections as u64,
                1,
                30_000,
            ),
            ("detector.pool_size", self.detector.pool_size as u64, 0, 256),
            (
                "detector.intra_threads",
                self.detector.intra_threads as u64,
                1,
                256,
            ),
            (
                "detector.max_in_flight",
                self.detector.max_in_flight as u64,
                1,
                64,
            ),
            (
                "limits.queue_capacity",
                self.limits.queue_capacity as u64,
                1,
                100_000,
            ),
            ("limits.gap_wait_ms", self.limits.gap_wait_ms, 1, 3_600_000),
            (
                "limits.frame_timeout_ms",
                self.limits.frame_timeout_ms,
                1,
                86_400_000,
            ),
            (
                "limits.max_streams",
                self.limits.max_streams as u64,
                1,
                1_000_000,
            ),
            (
                "limits.max_payload_bytes",
                self.limits.max_payload_bytes as u64,
                64,
                512 << 20,
            ),
        ];
        for (field, v, least, most) in ranges {
            if v < least || v > most {
                problems.push(invalid(field, format!("is {v}, must be {least}..={most}")));
            }
        }
        if !(1..=u16::MAX as usize).contains(&self.limits.max_stream_id_bytes) {
            problems.push(invalid(
                "limits.max_stream_id_bytes",
                "must be 1..=65535".into(),
            ));
        }
    }

    fn check_cluster(&self, problems: &mut Vec<(String, String)>) {
        let invalid = |field: &str, problem: String| (field.to_string(), problem);
        let name_ok = !self.node.name.is_empty()
            && self.node.name.len() <= 64
            && self
                .node
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !name_ok {
            problems.push(invalid(
                "node.name",
                "must be 1-64 characters of letters, digits, '-', '_' or '.'".into(),
            ));
        }
        if self.node.roles.is_empty() {
            problems.push(invalid("node.roles", "must name at least one role".into()));
        }
        if self.node.has(Role::Source) != self.node.has(Role::Sequencer) {
            problems.push(invalid(
                "node.roles",
                "must have both \"source\" and \"sequencer\" or neither (the sequencer must hear of every frame the source accepts)".into(),
            ));
        }
        if self.cluster.cookie.expose().len() < 8 {
            problems.push(invalid(
                "cluster.cookie",
                "must be set, at least 8 characters (or set KADR_CLUSTER_COOKIE); every node of a cluster shares it".into(),
            ));
        }
        for seed in &self.cluster.seeds {
            if !is_host_port(seed) {
                problems.push(invalid(
                    "cluster.seeds",
                    format!("{seed:?} is not host:port"),
                ));
            }
        }
        let host = self.cluster.advertised_host();
        if host.is_empty() || host == "0.0.0.0" || host == "::" {
            problems.push(invalid(
                "cluster.advertise_host",
                format!("{host:?} is not an address other nodes can dial; set it to this node's host name or IP"),
            ));
        }
        if self.cluster.listen.port() == 0 {
            problems.push(invalid(
                "cluster.listen",
                "needs a port (not 0): peers dial it".into(),
            ));
        }
        let ranges: [(&'static str, u64, u64, u64); 3] = [
            (
                "admin.max_viewers",
                self.admin.max_viewers as u64,
                0,
                MAX_VIEWERS as u64,
            ),
            (
                "cluster.join_timeout_ms",
                self.cluster.join_timeout_ms,
                100,
                600_000,
            ),
            (
                "cluster.heartbeat_ms",
                self.cluster.heartbeat_ms,
                50,
                60_000,
            ),
        ];
        for (field, v, least, most) in ranges {
            if v < least || v > most {
                problems.push(invalid(field, format!("is {v}, must be {least}..={most}")));
            }
        }
        if let Some(tls) = &self.cluster.tls {
            for (field, p) in [
                ("cluster.tls.cert", &tls.cert),
                ("cluster.tls.key", &tls.key),
                ("cluster.tls.ca", &tls.ca),
            ] {
                if !p.is_file() {
                    problems.push(invalid(field, format!("{} is not a file", p.display())));
                }
            }
        }
        if self.cluster.listen.port() != 0
            && self.cluster.listen.port() == self.admin.listen.port()
            && self.cluster.listen.ip() == self.admin.listen.ip()
        {
            problems.push(invalid(
                "admin.listen",
                "is the same address as cluster.listen".into(),
            ));
        }
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.cluster.heartbeat_ms)
    }

    pub fn source_lease(&self) -> Duration {
        Duration::from_millis(self.cluster.source_lease_ms)
    }

    pub fn join_timeout(&self) -> Duration {
        Duration::from_millis(self.cluster.join_timeout_ms)
    }

    /// Detector actors to run: `pool_size`, or one per available core.
    pub fn pool_size(&self) -> usize {
        match self.detector.pool_size {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    pub fn model_options(&self) -> ModelOptions {
        ModelOptions {
            path: self.model.path.clone(),
            onnxruntime_library: self.model.onnxruntime_library.clone(),
            intra_threads: self.detector.intra_threads,
            dct_scaling: self.model.dct_scaling,
            execution_provider: self.model.execution_provider,
            precision: self.model.precision,
            max_pixels: self.limits.max_pixels,
            postprocess: PostprocessConfig {
                conf_threshold: self.model.conf_threshold,
                iou_threshold: self.model.iou_threshold,
                max_detections: self.model.max_detections,
                ..PostprocessConfig::default()
            },
        }
    }

    pub fn frame_limits(&self) -> FrameLimits {
        FrameLimits {
            max_message_bytes: self.limits.max_payload_bytes,
            max_stream_id_bytes: self.limits.max_stream_id_bytes,
        }
    }

    pub fn gap_wait(&self) -> Duration {
        Duration::from_millis(self.limits.gap_wait_ms)
    }

    pub fn frame_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.frame_timeout_ms)
    }
}

fn is_host_port(s: &str) -> bool {
    matches!(s.rsplit_once(':'), Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

/// `a.b.c=value`: the value is read as TOML (`3`, `true`, `["x"]`), or else taken as a string.
fn apply_override(table: &mut toml::Table, item: &str) -> Result<(), String> {
    let (key, raw) = item
        .split_once('=')
        .ok_or_else(|| format!("override {item:?} is not key=value"))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(format!("override {item:?} has no key"));
    }
    set_path(table, key.trim(), value);
    Ok(())
}

fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("split yields one part");
    let mut t = table;
    for part in parts {
        let entry = t
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        t = entry.as_table_mut().expect("made a table");
    }
    t.insert(last.to_string(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        // Cargo.toml stands in for a model file: validation only checks that it exists.
        let base = Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = if text.contains("[cluster]") {
            text.to_string()
        } else {
            format!("{text}\n[cluster]\ncookie = \"test-cookie\"\n")
        };
        Config::parse(&text, Path::new("test.toml"), base)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("[model]\npath = \"Cargo.toml\"\n").unwrap();
        assert_eq!(c.model.conf_threshold, 0.25);
        assert_eq!(c.model.iou_threshold, 0.45);
        assert_eq!(c.limits.max_payload_bytes, 8 * 1024 * 1024);
        assert_eq!(c.redis.channel_prefix, "kadr");
        assert!(c.pool_size() >= 1);
        assert!(c.model.path.is_absolute());
        assert!(c.node.has(Role::Detector) && c.node.has(Role::Source));
        assert_eq!(c.cluster.listen.to_string(), "127.0.0.1:7400");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:7500");
        assert!(c.admin.token.is_empty());
    }

    #[test]
    fn overrides_set_any_field_and_secrets_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        std::fs::write(
            &path,
            format!("[model]\npath = {model:?}\n[cluster]\ncookie = \"the-cookie-1\"\n"),
        )
        .unwrap();
        let c = Config::load_with(
            &path,
            &[
                "node.name=node-2".into(),
                "cluster.seeds=[\"127.0.0.1:7400\"]".into(),
                "detector.pool_size=3".into(),
                "node.roles=[\"detector\"]".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.node.name, "node-2");
        assert_eq!(c.cluster.seeds, vec!["127.0.0.1:7400".to_string()]);
        assert_eq!(c.detector.pool_size, 3);
        assert_eq!(c.node.roles, vec![Role::Detector]);
        assert_eq!(c.cluster.cookie.expose(), "the-cookie-1");
        assert!(!format!("{c:?}").contains("the-cookie-1"));
        let err = Config::load_with(&path, &["detector.pool_size=x".into()]).unwrap_err();
        assert!(err.to_string().contains("pool_size"), "{err}");
    }

    #[test]
    fn every_problem_in_a_file_is_reported_at_once_with_its_key() {
        let err = parse(
            "[model]\npath = \"Cargo.toml\"\nconf_threshold = 2.0\n[limits]\nqueue_capacity = 0\n\
             [live.streams.cam1]\nqueue_depth = 0\n[cluster]\ncookie = \"short\"\n",
        )
        .unwrap_err();
        let ConfigError::InvalidMany { problems, .. } = &err else {
            panic!("expected several problems: {err}");
        };
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "model.conf_threshold",
                "limits.queue_capacity",
                "live.streams.\"cam1\".queue_depth",
                "cluster.cookie"
            ]
        );
        let text = err.to_string();
        assert!(text.starts_with("config test.toml: 4 problems:"), "{text}");
        assert!(
            text.contains("\n  `limits.queue_capacity` is 0, must be 1..=100000"),
            "{text}"
        );
        // One problem reads as before.
        let one = parse("[model]\npath = \"Cargo.toml\"\n[live]\nqueue_depth = 0\n").unwrap_err();
        assert_eq!(
            one.to_string(),
            "config test.toml: `live.queue_depth` is 0, must be 1..=1024"
        );
    }

    #[test]
    fn bench_model_needs_no_cookie_and_a_node_does() {
        let dir = std::env::temp_dir().join(format!("kadr-purpose-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bench.toml");
        let model = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        std::fs::write(&path, format!("[model]\npath = {model:?}\n")).unwrap();
        assert!(Config::load_for(&path, &[], Purpose::BenchModel).is_ok());
        // (Unless the environment carries a cookie, as a developer's shell may.)
        if std::env::var("KADR_CLUSTER_COOKIE").is_err() {
            let err = Config::load_for(&path, &[], Purpose::Node).unwrap_err();
            assert!(err.to_string().contains("cluster.cookie"), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[model]\npath = \"Cargo.toml\"\ncolour = 1\n", "colour"),
            ("[model]\npath = \"nope.onnx\"\n", "model.path"),
            (
                "[model]\npath = \"Cargo.toml\"\nconf_threshold = 1.5\n",
                "model.conf_threshold",
            ),
            (
                "[model]\npath = \"Cargo.toml\"\n[limits]\nqueue_capacity = 0\n",
                "limits.queue_capacity",
            ),
            (
                "[model]\npath = \"Cargo.toml\"\n[detector]\npool_size = 10000\n",
                "detector.pool_size",
            ),
            (
                "[model]\npath = \"Cargo.toml\"\n[limits]\nmax_payload_bytes = 10\n",
                "limits.max_payload_bytes",
            ),
            (
                "[model]\npath = \"Cargo.toml\"\n[redis]\nurl = \"http://x\"\n",
                "redis.url",
            ),
            (
                "[model]\npath = \"Cargo.toml\"\n[redis]\nurl = \"rediss://x:6380\"\n",
                "is not supported by this build",
            ),
            (
                "[model]\npath = \"Cargo.toml\"\n[limits]\nmax_seq_jump = 0\n",
                "limits.max_seq_jump",
            ),
            (
                "[model]\npath = \"Cargo.toml\"\n[redis]\nchannel_prefix = \"a*\"\n",
                "redis.channel_prefix",
            ),
            ("[redis]\nurl = \"redis://x\"\n", "model"),
            (
                "[model]\npath = \"Cargo.toml\"\n[cluster]\ncookie = \"short\"\n",
                "cluster.cookie",
            ),
            (
                "[model]\npath = \"Cargo.toml\"\n[node]\nroles = [\"source\"]\n",
                "node.roles",
            ),
            (
                "[model]\npath = \"Cargo.toml\"\n[node]\nroles = [\"gpu\"]\n",
                "gpu",
            ),
            (
                "[model]\npath = \"Cargo.toml\"\n[cluster]\ncookie = \"long-enough\"\nseeds = [\"nohost\"]\n",
                "cluster.seeds",
            ),
            (
                "[model]\npath = \"Cargo.toml\"\n[cluster]\ncookie = \"long-enough\"\nlisten = \"0.0.0.0:7400\"\n",
                "cluster.advertise_host",
            ),
            (
                "[model]\npath = \"Cargo.toml\"\n[node]\nname = \"a b\"\n",
                "node.name",
            ),
        ];
        for (text, field) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(field), "{text:?}: {err}");
        }
    }
}
