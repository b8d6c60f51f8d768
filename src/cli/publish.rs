//! `kadr publish`: a video file, image folder or camera as frame messages.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use kadr::client::publish::{Input, Pace, PublishOptions, FRAMES_MAXLEN};
use kadr::protocol::{Channels, Transport};

use super::{KafkaArgs, RedisArgs};

#[derive(Args)]
pub struct PublishArgs {
    /// A video file, a folder of JPEG/PNG images, a webcam (`/dev/video0`), an RTSP camera
    /// (`rtsp://...`) or an HTTP MJPEG camera (`http://host/mjpg/video.mjpg`).
    #[arg(long, short)]
    pub input: String,
    #[arg(long, short)]
    pub stream: String,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Publish files and folders as fast as possible instead of in real time.
    #[arg(long)]
    pub fast: bool,
    /// Frames per second for files and folders (default: a file's own rate; 25 for folders).
    #[arg(long, conflicts_with = "fast")]
    pub fps: Option<f64>,
    /// Start a file or folder again when it ends.
    #[arg(long = "loop")]
    pub loop_input: bool,
    /// Ask the node never to drop these frames (for files; live cameras want drops).
    #[arg(long)]
    pub keep_all: bool,
    /// Frame size as WxH (the picture is scaled and letterboxed to it).
    #[arg(long, default_value = "1280x720")]
    pub size: String,
    /// Keep the source's own size instead of `--size`.
    #[arg(long)]
    pub source_size: bool,
    /// JPEG quality as FFmpeg's -q:v (2 best .. 31 worst).
    #[arg(long, default_value_t = 3)]
    pub quality: u8,
    /// Stop after this many frames.
    #[arg(long)]
    pub limit: Option<u64>,
    /// First sequence number.
    #[arg(long, default_value_t = 0)]
    pub start_seq: u64,
    /// A live source silent this long (ms) counts as dropped and is reconnected.
    #[arg(long, default_value_t = 5000)]
    pub stall_timeout_ms: u64,
    /// Longest wait (ms) between reconnection attempts; waits double from 250 ms.
    #[arg(long, default_value_t = 10_000)]
    pub reconnect_max_ms: u64,
    /// `pubsub`: PUBLISH each frame (nothing kept). `streams`: XADD it to a Redis Stream of
    /// the same name, kept until a node has published its result (no frame lost to a node
    /// failover or a node restart). `kafka`: produce it to `--kafka-frames-topic`, keyed by
    /// the stream id (docs/protocol.md, "Kafka"; nodes do not read Kafka yet).
    #[arg(long, default_value = "pubsub")]
    pub transport: Transport,
    /// Streams: frames the stream keeps at most (approximately), so Redis holds about this
    /// many frames per camera; older ones are trimmed, read or not.
    #[arg(long, default_value_t = FRAMES_MAXLEN)]
    pub frames_maxlen: u64,
}

fn parse_size(s: &str) -> anyhow::Result<(u32, u32)> {
    let (w, h) = s
        .split_once('x')
        .context("--size must be WxH, like 1280x720")?;
    let (w, h): (u32, u32) = (w.parse()?, h.parse()?);
    if w == 0 || h == 0 || w % 2 == 1 || h % 2 == 1 {
        bail!("--size must be positive and even");
    }
    Ok((w, h))
}

pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let size = if args.source_size {
        None
    } else {
        Some(parse_size(&args.size)?)
    };
    if !(2..=31).contains(&args.quality) {
        bail!("--quality must be 2..=31");
    }
    let opts = PublishOptions {
        input: Input::parse(&args.input)?,
        stream: args.stream,
        redis_tls: args.redis.tls(),
        redis_cluster: args.redis.redis_cluster,
        redis_url: args.redis.redis_url,
        prefix: args.redis.prefix,
        size,
        quality: args.quality,
        pace: match (args.fast, args.fps) {
            (true, _) => Pace::Fast,
            (false, Some(fps)) => Pace::Fps(fps),
            (false, None) => Pace::Source,
        },
        keep_all: args.keep_all,
        loop_input: args.loop_input,
        limit: args.limit,
        start_seq: args.start_seq,
        stall_timeout: Duration::from_millis(args.stall_timeout_ms.max(1)),
        reconnect_max: Duration::from_millis(args.reconnect_max_ms.max(250)),
        transport: args.transport,
        kafka: Some(args.kafka.options()),
        frames_maxlen: args.frames_maxlen.max(1),
    };
    let channel = match opts.transport {
        Transport::Kafka => format!(
            "Kafka topic {} (key {})",
            args.kafka.kafka_frames_topic, opts.stream
        ),
        _ => Channels::with_tags(opts.prefix.clone(), opts.redis_cluster).frames(&opts.stream),
    };
    let report = kadr::client::publish::run(opts).await?;
    let mut line = format!(
        "published {} frames to {channel} in {:.1} s ({:.1} fps)",
        report.sent,
        report.seconds,
        report.sent as f64 / report.seconds.max(1e-9)
    );
    if report.outages > 0 {
        line += &format!(", {} outages", report.outages);
    }
    if report.unpublished > 0 {
        line += &format!(
            ", {} live frames let go while {} was unreachable",
            report.unpublished,
            if args.transport == Transport::Kafka {
                "Kafka"
            } else {
                "Redis"
            }
        );
    }
    if report.skipped > 0 {
        line += &format!(", {} unreadable images skipped", report.skipped);
    }
    eprintln!("{line}");
    Ok(())
}
