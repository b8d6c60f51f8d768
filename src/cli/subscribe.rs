//! `kadr subscribe`: a stream's results as JSON lines, progress and a summary on stderr.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use futures_util::StreamExt;

use kadr::client::tally::StreamTally;
use kadr::protocol::{self, Channels, OutputMessage};

use super::RedisArgs;

#[derive(Args)]
pub struct SubscribeArgs {
    #[arg(long, short)]
    pub stream: String,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Exit once this many sequence numbers are accounted for (detections or gaps).
    #[arg(long)]
    pub count: Option<u64>,
    /// Exit after this many seconds without a message (once one has arrived).
    #[arg(long)]
    pub idle_timeout: Option<f64>,
    /// Do not print the messages, only progress and the summary.
    #[arg(long)]
    pub quiet: bool,
    /// Also print the stream's error messages.
    #[arg(long)]
    pub errors: bool,
    /// Create this file once subscribed (scripts wait for it before publishing).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Write the final summary as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
}

pub async fn run(args: SubscribeArgs) -> anyhow::Result<()> {
    let channels = Channels::new(args.redis.prefix.clone());
    let client = redis::Client::open(args.redis.redis_url.as_str())?;
    let detections_channel = channels.detections(&args.stream);
    let errors_channel = channels.errors(&args.stream);
    let mut pubsub = kadr::subscribe(&client, &[&detections_channel, &errors_channel], &[])
        .await
        .with_context(|| {
            format!(
                "Redis at {} cannot be used",
                kadr::redact(&args.redis.redis_url)
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
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let s = tally.summary();
            eprintln!(
                "[{}] frames {}  detected {}  gaps {}  errors {}  {:.1} fps",
                args.stream, s.frames, s.detected, s.gap_frames, s.errors, s.fps
            );
        }
        if args.count.is_some_and(|c| tally.counts().frames >= c) {
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
