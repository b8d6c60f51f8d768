//! `cluster.toml`: the node's configuration. Every field is documented in
//! `docs/configuration.md`; unknown fields are refused so a typo never passes silently.
//!
//! Each section has a module of its own with its struct, defaults and checks ([`node`],
//! [`cluster`], [`admin`], [`redis`], [`model`] (with `[detector]`), [`limits`], [`live`], [`tracker`],
//! [`streams`]);
//! this one reads the file, applies overrides and secrets, and reports every problem found, each
//! with its key's path, at once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

pub(crate) mod admin;
pub(crate) mod cluster;
pub(crate) mod kafka;
pub(crate) mod limits;
pub(crate) mod live;
pub(crate) mod model;
pub(crate) mod node;
pub(crate) mod redis;
pub(crate) mod streams;
pub(crate) mod tracker;

pub(crate) use admin::AdminConfig;
pub(crate) use cluster::{ClusterConfig, TlsConfig};
pub(crate) use limits::LimitsConfig;
pub(crate) use live::LiveConfig;
pub(crate) use model::{DetectorConfig, ModelConfig};
pub(crate) use node::{NodeConfig, Role};
pub(crate) use redis::RedisConfig;
pub use streams::{StreamConfig, StreamsConfig};
pub use tracker::TrackerConfig;

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
    /// Object ids from frame to frame, per stream.
    #[serde(default)]
    pub tracker: TrackerConfig,
    /// Settings of single streams: their lines and zones.
    #[serde(default)]
    pub streams: streams::StreamsConfig,
    /// Frames from a Kafka topic as well (none by default).
    #[serde(default)]
    pub kafka: kafka::KafkaConfig,
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

/// Problems found in a config: (key path, what is wrong).
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<(String, String)>);

impl Problems {
    pub(crate) fn add(&mut self, key: &str, problem: impl Into<String>) {
        self.0.push((key.to_string(), problem.into()));
    }

    /// `value` must be within `least..=most`.
    pub(crate) fn range(&mut self, key: &str, value: u64, least: u64, most: u64) {
        if value < least || value > most {
            self.add(key, format!("is {value}, must be {least}..={most}"));
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
        let redis = &mut cfg.redis;
        for p in [&mut redis.tls_ca, &mut redis.tls_cert, &mut redis.tls_key]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        for p in [
            cfg.model.onnxruntime_library.as_mut(),
            cfg.model.names_file.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        self.validate(path, purpose)?;
        Ok(self)
    }

    /// Check every field; report every problem at once, each with its key's path.
    fn validate(&self, path: &Path, purpose: Purpose) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        self.model.check(&mut p);
        self.detector.check(&mut p);
        self.redis.check(&mut p);
        self.limits.check(&mut p);
        p.0.extend(self.live.problems());
        self.tracker.check(&mut p);
        streams::check(
            &self.streams,
            self.tracker.enabled,
            self.limits.max_stream_id_bytes,
            &mut p,
        );
        if purpose == Purpose::Node {
            self.node.check(&mut p);
            self.kafka.check(&mut p);
            // Kafka gives each partition to one node: it, not the placement, decides who reads
            // a stream, and a node-wide lease would let only one node read at all.
            if self.kafka.enabled() && !self.cluster.stream_leases && self.node.has(Role::Source) {
                p.add(
                    "kafka.brokers",
                    "needs cluster.stream_leases = true on source nodes (a lease per stream)",
                );
            }
            self.cluster.check(&mut p);
            self.admin.check(&mut p);
            let (c, a) = (self.cluster.listen, self.admin.listen);
            if c.port() != 0 && c == a {
                p.add("admin.listen", "is the same address as cluster.listen");
            }
            // The sequencer's publish touches the lease and the stream's keys in one step: on
            // a Redis Cluster they must share a slot, which the node-wide lease cannot.
            if self.redis.cluster && !self.cluster.stream_leases && self.node.has(Role::Source) {
                p.add(
                    "redis.cluster",
                    "needs cluster.stream_leases = true on source nodes (a lease per stream, in the stream's slot)",
                );
            }
        }
        ConfigError::from_problems(path, p.0)
    }

    /// The streams with lines or zones (`[streams."ID".analytics]`), and theirs.
    pub fn analytics_by_stream(
        &self,
    ) -> std::collections::HashMap<String, crate::analytics::AnalyticsConfig> {
        streams::analytics_by_stream(&self.streams)
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.cluster.heartbeat_ms)
    }

    pub fn source_lease(&self) -> Duration {
        Duration::from_millis(self.cluster.source_lease_ms)
    }

    /// The names this node reads and writes: version 2 (hash-tagged) on a Redis Cluster.
    pub fn channels(&self) -> crate::protocol::Channels {
        crate::protocol::Channels::with_tags(self.redis.channel_prefix.clone(), self.redis.cluster)
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
            // Validated at load: a names file that cannot be read was a config error then.
            class_names: self.model.configured_names().ok().flatten(),
            split_input_conv: self.model.split_input_conv,
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
        // The model's producer's own IoU (YOLOv7 0.45, ultralytics 0.7) unless set.
        assert_eq!(c.model.iou_threshold, None);
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
    fn a_stream_s_lines_and_zones_are_read_and_a_bad_one_is_named_by_its_key() {
        let good = "[model]\npath = \"Cargo.toml\"\n\
             [[streams.\"gate-1\".analytics.lines]]\nname = \"door\"\nfrom = [0, 400]\nto = [1280, 400]\n\
             [[streams.\"gate-1\".analytics.zones]]\nname = \"lot\"\npolygon = [[0, 0], [100, 0], [100, 100]]\ndwell_s = 5\n";
        let cfg = parse(good).unwrap();
        let by_stream = cfg.analytics_by_stream();
        let gate = &by_stream["gate-1"];
        assert_eq!((gate.lines.len(), gate.zones.len()), (1, 1));
        assert_eq!(gate.zones[0].dwell_s, Some(5.0));
        let bad = parse(
            "[model]\npath = \"Cargo.toml\"\n[tracker]\nenabled = false\n\
             [[streams.cam.analytics.lines]]\nname = \"door\"\nfrom = [0, 400]\nto = [0, 400]\n",
        )
        .unwrap_err();
        let ConfigError::InvalidMany { problems, .. } = &bad else {
            panic!("expected two problems: {bad}");
        };
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "streams.\"cam\".analytics.lines[0].to",
                "streams.\"cam\".analytics"
            ]
        );
        let unknown = parse("[model]\npath = \"Cargo.toml\"\n[streams.cam.analytics]\nbands = 1\n")
            .unwrap_err();
        assert!(unknown.to_string().contains("bands"), "{unknown}");
        // An id no frame can carry (longer than limits.max_stream_id_bytes) names no stream.
        let long = "c".repeat(129);
        let too_long = parse(&format!(
            "[model]\npath = \"Cargo.toml\"\n[[streams.{long}.analytics.lines]]\n\
             name = \"door\"\nfrom = [0, 400]\nto = [1280, 400]\n"
        ))
        .unwrap_err();
        assert!(too_long.to_string().contains("1..=128"), "{too_long}");
    }

    #[test]
    fn a_redis_cluster_needs_a_lease_per_stream_and_names_of_one_scheme() {
        let err = parse(
            "[model]\npath = \"Cargo.toml\"\n[redis]\ncluster = true\n\
             [cluster]\nstream_leases = false\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("cluster.stream_leases"), "{err}");
        // The default is a lease per stream.
        parse(
            "[model]\npath = \"Cargo.toml\"\n[redis]\ncluster = true\n[cluster]\ncookie = \"test-cookie\"\n",
        )
        .unwrap();
        let ok = parse(
            "[model]\npath = \"Cargo.toml\"\n[redis]\ncluster = true\n\
             cluster_nodes = [\"redis://10.0.0.2:7000\"]\n\
             [cluster]\ncookie = \"test-cookie\"\nstream_leases = true\n",
        )
        .unwrap();
        assert!(ok.channels().is_tagged());
        assert_eq!(ok.redis.urls().len(), 2);
        let err =
            parse("[model]\npath = \"Cargo.toml\"\n[redis]\ncluster_nodes = [\"rediss://h:1\"]\n")
                .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("redis.cluster is false"), "{text}");
        assert!(
            text.contains("is not a redis:// URL like redis.url"),
            "{text}"
        );
        // One Redis: version 1 names.
        let one = parse("[model]\npath = \"Cargo.toml\"\n").unwrap();
        assert!(!one.channels().is_tagged());
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
                "[model]\npath = \"Cargo.toml\"\n[redis]\ntls_ca = \"Cargo.toml\"\n",
                "redis.tls_ca` is set, but redis.url is not rediss://",
            ),
            (
                "[model]\npath = \"Cargo.toml\"\n[redis]\nurl = \"rediss://x:6380\"\ntls_cert = \"Cargo.toml\"\n",
                "set both or neither",
            ),
            (
                "[model]\npath = \"Cargo.toml\"\n[redis]\nurl = \"rediss://x:6380\"\ntls_ca = \"no-such.pem\"\n",
                "no-such.pem is not a readable file",
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
