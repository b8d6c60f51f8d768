//! The `kadr` command's subcommands, one module each: its arguments and what it does.

pub mod bench_model;
pub mod detect;
pub mod inspect;
pub mod node;
pub mod publish;
pub mod subscribe;
pub mod track;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kadr",
    version,
    about = "YOLO object detection for live video over Redis, on a cluster of nodes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a node: take frames from Redis, detect, publish results in order.
    Node(node::NodeArgs),
    /// Detect objects in still images (JPEG or PNG); prints one JSON line per image.
    Detect(detect::DetectArgs),
    /// Say what kadr makes of a model file: export format, input size, classes and their
    /// names, thresholds inside the graph; refuse one it cannot read, with the reason.
    Inspect(inspect::InspectArgs),
    /// Measure the model alone with a node's settings: inference, and whole frames (decode,
    /// letterbox, inference, NMS), with the node's pool size of sessions in parallel.
    BenchModel(bench_model::BenchModelArgs),
    /// Publish a video file, image folder or camera as frame messages.
    Publish(publish::PublishArgs),
    /// Print a stream's results as JSON lines, with live progress on stderr.
    Subscribe(subscribe::SubscribeArgs),
    /// Track objects offline in a MOTChallenge detections file, with the node's tracker;
    /// prints the rows with track ids.
    Track(track::TrackArgs),
}

/// Where a client finds Redis and the channels.
#[derive(Args)]
pub struct RedisArgs {
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// For `rediss://`: the CA that signed Redis's certificate (PEM; default: the system's
    /// trusted roots).
    #[arg(long, env = "REDIS_CA")]
    pub redis_ca: Option<std::path::PathBuf>,
    /// For `rediss://` where Redis asks for a client certificate: the certificate and its key (PEM).
    #[arg(long, env = "REDIS_CERT")]
    pub redis_cert: Option<std::path::PathBuf>,
    #[arg(long, env = "REDIS_KEY")]
    pub redis_key: Option<std::path::PathBuf>,
    #[arg(long, default_value = "kadr")]
    pub prefix: String,
    /// Redis is a Redis Cluster, of which --redis-url is a node: names are version 2 (the
    /// stream in braces, one slot per stream).
    #[arg(long, env = "REDIS_CLUSTER")]
    pub redis_cluster: bool,
}

impl RedisArgs {
    pub fn channels(&self) -> kadr::protocol::Channels {
        kadr::protocol::Channels::with_tags(self.prefix.clone(), self.redis_cluster)
    }

    pub fn tls(&self) -> kadr::RedisTls {
        kadr::RedisTls {
            ca: self.redis_ca.clone(),
            cert: self.redis_cert.clone(),
            key: self.redis_key.clone(),
        }
    }
}

/// Where a client finds Kafka (`--transport kafka`).
#[derive(Args)]
pub struct KafkaArgs {
    /// Brokers asked first, `host:port,host:port`.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Topic of the frames, keyed by stream id.
    #[arg(long, default_value = kadr::kafka::FRAMES_TOPIC)]
    pub kafka_frames_topic: String,
    /// Topic of the publishers' reports, keyed by stream id.
    #[arg(long, default_value = kadr::kafka::ERRORS_TOPIC)]
    pub kafka_errors_topic: String,
}

impl KafkaArgs {
    pub fn options(&self) -> kadr::kafka::KafkaOptions {
        kadr::kafka::KafkaOptions {
            frames_topic: self.kafka_frames_topic.clone(),
            errors_topic: self.kafka_errors_topic.clone(),
            ..kadr::kafka::KafkaOptions::new(self.kafka_brokers.clone())
        }
    }
}

/// Run the subcommand given on the command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Node(args) => node::run(args).await,
        Command::Detect(args) => detect::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::BenchModel(args) => bench_model::run(args).await,
        Command::Publish(args) => publish::run(args).await,
        Command::Subscribe(args) => subscribe::run(args).await,
        Command::Track(args) => track::run(args),
    }
}
