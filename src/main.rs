//! The `kadr` command: run a node, detect on still images, publish a video, subscribe to results.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;
use serde::Serialize;

use kadr::config::Config;
use kadr::model::backend::{ExecutionProvider, Precision};
use kadr::model::postprocess::PostprocessConfig;
use kadr::model::{decode_image, ModelOptions, Yolo};
use kadr::node::Node;
use kadr::protocol::{self, Channels, Detection, OutputMessage};
use kadr::publish::video;
use kadr::publish::{Input, Pace, PublishOptions};
use kadr::tally::StreamTally;

#[derive(Parser)]
#[command(
    name = "kadr",
    version,
    about = "YOLOv7 object detection for live video over Redis pub/sub"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: take frames from Redis, detect, publish results in order.
    Node {
        #[arg(long, short, default_value = "cluster.toml")]
        config: PathBuf,
        /// Overrides `redis.url` from the config.
        #[arg(long, env = "KADR_REDIS_URL")]
        redis_url: Option<String>,
        /// Override any config field, e.g. `--set node.name=node-2 --set cluster.listen=127.0.0.1:7401`
        /// (values are read as TOML: `3`, `true`, `["a", "b"]`; anything else is a string).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Detect objects in still images (JPEG or PNG); prints one JSON line per image.
    Detect {
        #[arg(long, short)]
        model: PathBuf,
        #[arg(long, default_value_t = 0.25)]
        conf: f32,
        #[arg(long, default_value_t = 0.45)]
        iou: f32,
        /// Path to libonnxruntime.so (found in .deps/onnxruntime/ by default).
        #[arg(long, env = "KADR_ONNXRUNTIME")]
        onnxruntime: Option<PathBuf>,
        /// Decode JPEGs at the smallest DCT scale covering the model input (`model.dct_scaling`;
        /// default: on unless `--precision fp32`).
        #[arg(long)]
        dct_scaling: Option<bool>,
        /// `fp32` is the reference-exact path; `auto` uses bf16 where the CPU has it.
        #[arg(long, value_enum, default_value = "auto")]
        precision: Precision,
        #[arg(long, value_enum, default_value = "auto")]
        execution_provider: ExecutionProvider,
        /// Same as `--execution-provider openvino`.
        #[arg(long)]
        openvino: bool,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Measure the model alone with a node's settings: inference, and whole frames (decode,
    /// letterbox, inference, NMS), with the node's pool size of sessions in parallel.
    BenchModel {
        #[arg(long, short, default_value = "cluster.toml")]
        config: PathBuf,
        /// Override config fields, as for `kadr node`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Video whose frames are decoded (1280x720 JPEG, as `kadr publish` sends them).
        #[arg(long, default_value = ".deps/video/bigbuckbunny.mp4")]
        input: String,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Sessions at once (default: the config's pool size).
        #[arg(long)]
        parallel: Option<usize>,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Measure every provider x precision x pool shape this machine can run, and print the
        /// fastest as `--set` lines.
        #[arg(long)]
        sweep: bool,
    },
    /// Publish a video file, image folder or camera as frame messages.
    Publish(PublishArgs),
    /// Print a stream's results as JSON lines, with live progress on stderr.
    Subscribe(SubscribeArgs),
}

#[derive(Args)]
struct RedisArgs {
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    #[arg(long, default_value = "kadr")]
    prefix: String,
}

#[derive(Args)]
struct PublishArgs {
    /// A video file, a folder of JPEG/PNG images, a webcam (`/dev/video0`), an RTSP camera
    /// (`rtsp://...`) or an HTTP MJPEG camera (`http://host/mjpg/video.mjpg`).
    #[arg(long, short)]
    input: String,
    #[arg(long, short)]
    stream: String,
    #[command(flatten)]
    redis: RedisArgs,
    /// Publish files and folders as fast as possible instead of in real time.
    #[arg(long)]
    fast: bool,
    /// Frames per second for files and folders (default: a file's own rate; 25 for folders).
    #[arg(long, conflicts_with = "fast")]
    fps: Option<f64>,
    /// Start a file or folder again when it ends.
    #[arg(long = "loop")]
    loop_input: bool,
    /// Ask the node never to drop these frames (for files; live cameras want drops).
    #[arg(long)]
    keep_all: bool,
    /// Frame size as WxH (the picture is scaled and letterboxed to it).
    #[arg(long, default_value = "1280x720")]
    size: String,
    /// Keep the source's own size instead of `--size`.
    #[arg(long)]
    source_size: bool,
    /// JPEG quality as FFmpeg's -q:v (2 best .. 31 worst).
    #[arg(long, default_value_t = 3)]
    quality: u8,
    /// Stop after this many frames.
    #[arg(long)]
    limit: Option<u64>,
    /// First sequence number.
    #[arg(long, default_value_t = 0)]
    start_seq: u64,
    /// A live source silent this long (ms) counts as dropped and is reconnected.
    #[arg(long, default_value_t = 5000)]
    stall_timeout_ms: u64,
    /// Longest wait (ms) between reconnection attempts; waits double from 250 ms.
    #[arg(long, default_value_t = 10_000)]
    reconnect_max_ms: u64,
}

#[derive(Args)]
struct SubscribeArgs {
    #[arg(long, short)]
    stream: String,
    #[command(flatten)]
    redis: RedisArgs,
    /// Exit once this many sequence numbers are accounted for (detections or gaps).
    #[arg(long)]
    count: Option<u64>,
    /// Exit after this many seconds without a message (once one has arrived).
    #[arg(long)]
    idle_timeout: Option<f64>,
    /// Do not print the messages, only progress and the summary.
    #[arg(long)]
    quiet: bool,
    /// Also print the stream's error messages.
    #[arg(long)]
    errors: bool,
    /// Create this file once subscribed (scripts wait for it before publishing).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Write the final summary as JSON to this file.
    #[arg(long)]
    summary_json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,ort=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Node {
            config,
            redis_url,
            overrides,
        } => run_node(config, redis_url, overrides).await,
        Command::Detect {
            model,
            conf,
            iou,
            onnxruntime,
            dct_scaling,
            precision,
            execution_provider,
            openvino,
            images,
        } => {
            let execution_provider = if openvino {
                ExecutionProvider::Openvino
            } else {
                execution_provider
            };
            detect(
                ModelOptions {
                    path: model,
                    onnxruntime_library: onnxruntime,
                    intra_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
                    dct_scaling,
                    execution_provider,
                    precision,
                    // Local files, not video: any size up to the hard ceiling.
                    max_pixels: kadr::model::MAX_IMAGE_PIXELS,
                    postprocess: PostprocessConfig {
                        conf_threshold: conf,
                        iou_threshold: iou,
                        ..PostprocessConfig::default()
                    },
                },
                images,
            )
        }
        Command::BenchModel {
            config,
            overrides,
            input,
            seconds,
            parallel,
            json,
            sweep,
        } => {
            if sweep {
                kadr::bench::sweep(&config, &overrides, &input, seconds, json.as_deref())
            } else {
                bench_model(config, overrides, input, seconds, parallel, json).await
            }
        }
        Command::Publish(args) => publish(args).await,
        Command::Subscribe(args) => subscribe(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kadr: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run_node(
    config: PathBuf,
    redis_url: Option<String>,
    mut overrides: Vec<String>,
) -> anyhow::Result<()> {
    if let Some(url) = redis_url {
        overrides.insert(0, format!("redis.url=\"{url}\""));
    }
    let cfg = Config::load_with(&config, &overrides)?;
    match kadr::node::raise_open_files_limit() {
        Ok(n) => tracing::debug!(open_files = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
    }
    let node = Node::start(&cfg).await?;
    let stats = node.stats.clone();
    let report = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        loop {
            tick.tick().await;
            tracing::info!(%stats, "stats");
        }
    });
    // A node that gave up (a part failing past its restart budget) exits non-zero, so that
    // systemd, Docker or Kubernetes starts it afresh.
    let gave_up = tokio::select! {
        _ = wait_for_shutdown_signal() => None,
        why = node.failed() => Some(why),
    };
    tracing::info!("shutting down");
    report.abort();
    node.shutdown(Duration::from_secs(10)).await;
    match gave_up {
        Some(why) => bail!("{why}"),
        None => Ok(()),
    }
}

async fn bench_model(
    config: PathBuf,
    overrides: Vec<String>,
    input: String,
    seconds: f64,
    parallel: Option<usize>,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    // The cookie is irrelevant here; do not make people set one to benchmark.
    let mut overrides = overrides;
    if std::env::var("KADR_CLUSTER_COOKIE").is_err() {
        overrides.push("cluster.cookie=\"bench-model-only\"".into());
    }
    let cfg = Config::load_with(&config, &overrides)?;
    let frames = video::load_frames(&input, Some((1280, 720)), 3, 300).await?;
    let parallel = parallel.unwrap_or_else(|| cfg.pool_size());
    eprintln!(
        "bench-model: {} frames of {input}, {parallel} session(s) x {} thread(s), {seconds} s each",
        frames.len(),
        cfg.detector.intra_threads
    );
    let opts = cfg.model_options();
    let report = tokio::task::spawn_blocking(move || {
        kadr::bench::bench_model(&opts, std::sync::Arc::new(frames), parallel, seconds)
    })
    .await??;
    println!("{report}");
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

async fn wait_for_shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[derive(Serialize)]
struct DetectLine<'a> {
    image: &'a str,
    width: u32,
    height: u32,
    detections: &'a [Detection],
}

fn detect(opts: ModelOptions, images: Vec<PathBuf>) -> anyhow::Result<()> {
    let (conf, iou) = (
        opts.postprocess.conf_threshold,
        opts.postprocess.iou_threshold,
    );
    if !(conf > 0.0 && conf <= 1.0 && iou > 0.0 && iou <= 1.0) {
        bail!("--conf and --iou must be in (0, 1]");
    }
    let mut yolo = Yolo::load(&opts)?;
    let b = yolo.backend();
    eprintln!(
        "kadr detect: {} {}, dct_scaling {} ({})",
        b.provider, b.precision, b.dct_scaling, b.reason
    );
    let mut failures = 0;
    for path in &images {
        let result = std::fs::read(path)
            .with_context(|| format!("cannot read {}", path.display()))
            .and_then(|bytes| {
                if kadr::jpeg::is_jpeg(&bytes) {
                    return Ok(yolo.detect_jpeg(&bytes)?);
                }
                let (rgb, w, h) = decode_image(&bytes)?;
                Ok(yolo.detect_rgb(&rgb, w, h)?)
            });
        match result {
            Ok(found) => {
                let line = DetectLine {
                    image: &path.to_string_lossy(),
                    width: found.width,
                    height: found.height,
                    detections: &found.detections,
                };
                println!("{}", serde_json::to_string(&line)?);
            }
            Err(e) => {
                failures += 1;
                eprintln!("kadr: {}: {e:#}", path.display());
            }
        }
    }
    if failures > 0 {
        bail!("{failures} of {} images failed", images.len());
    }
    Ok(())
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

async fn publish(args: PublishArgs) -> anyhow::Result<()> {
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
    };
    let channel = Channels::new(opts.prefix.clone()).frames(&opts.stream);
    let report = kadr::publish::run(opts).await?;
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
            ", {} live frames let go while Redis was unreachable",
            report.unpublished
        );
    }
    if report.skipped > 0 {
        line += &format!(", {} unreadable images skipped", report.skipped);
    }
    eprintln!("{line}");
    Ok(())
}

async fn subscribe(args: SubscribeArgs) -> anyhow::Result<()> {
    let channels = Channels::new(args.redis.prefix.clone());
    let client = redis::Client::open(args.redis.redis_url.as_str())?;
    let detections_channel = channels.detections(&args.stream);
    let errors_channel = channels.errors(&args.stream);
    let mut pubsub =
        kadr::redis_conn::subscribe(&client, &[&detections_channel, &errors_channel], &[])
            .await
            .with_context(|| {
                format!(
                    "Redis at {} cannot be used",
                    kadr::redis_conn::redact(&args.redis.redis_url)
                )
            })?;
    if let Some(path) = &args.ready_file {
        std::fs::write(path, b"ready\n")?;
    }
    let mut messages = pubsub.on_message();
    let mut tally = StreamTally::default();
    let mut first_at: Option<Instant> = None;
    let mut last_progress = Instant::now();
    let idle = args.idle_timeout.map(Duration::from_secs_f64);
    loop {
        let wait = match (idle, first_at) {
            (Some(idle), Some(_)) => idle,
            _ => Duration::from_secs(3600),
        };
        let msg = match tokio::time::timeout(wait, messages.next()).await {
            Ok(Some(m)) => m,
            Ok(None) => bail!("Redis connection closed"),
            Err(_) => break,
        };
        let (now_us, received) = (protocol::now_us(), Instant::now());
        first_at.get_or_insert(received);
        let payload = msg.get_payload_bytes();
        let text = String::from_utf8_lossy(payload);
        if msg.get_channel_name() != detections_channel {
            tally.record_error();
            if args.errors && !args.quiet {
                println!("{text}");
            }
            continue;
        }
        if !args.quiet {
            println!("{text}");
        }
        match serde_json::from_slice::<OutputMessage>(payload) {
            Ok(out) => tally.record(&out, now_us, received),
            Err(e) => {
                eprintln!("kadr: unreadable message: {e}");
                continue;
            }
        }
        let s = tally.summary();
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!(
                "[{}] frames {}  detected {}  gaps {}  errors {}  {:.1} fps",
                args.stream, s.frames, s.detected, s.gap_frames, s.errors, s.fps
            );
        }
        if args.count.is_some_and(|c| s.frames >= c) {
            break;
        }
    }
    let s = tally.summary();
    eprintln!(
        "[{}] done: {} frames ({} detected, {} in gaps {:?}), {} errors, {} order violations, {} duplicates, {:.1} fps, latency p50 {:.0} ms p95 {:.0} ms p99 {:.0} ms",
        args.stream, s.frames, s.detected, s.gap_frames, s.gaps_by_reason, s.errors, s.order_violations, s.duplicates, s.fps,
        s.latency_ms_p50, s.latency_ms_p95, s.latency_ms_p99
    );
    if let Some(path) = &args.summary_json {
        std::fs::write(path, serde_json::to_vec_pretty(&s)?)?;
    }
    Ok(())
}
