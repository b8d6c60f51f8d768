//! `kadr subscribe`: a stream's results as JSON lines, progress and a summary on stderr.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use futures_util::StreamExt;

use kadr::client::tally::StreamTally;
use kadr::protocol::{self, OutputMessage, JSON_FIELD};
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;

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
    /// Read the results (and errors) streams instead of the channels, from after this entry
    /// id: `0` for everything Redis still keeps, `$` for only what comes next, or the last id a
    /// previous run saw (an id is a time, so one id places both streams).
    #[arg(long)]
    pub from: Option<String>,
    /// Read the streams, resuming after the ids kept in this file (written, whole, once the
    /// messages read are printed); without the file, from `--from` (or `$`). Kill the subscriber
    /// and start it again with the same file: no result is missed (one may come twice).
    #[arg(long)]
    pub resume: Option<PathBuf>,
}

/// Where messages come from: the channels (nothing kept), or the streams (resumable).
enum Results {
    Channels {
        pubsub: redis::aio::PubSub,
        detections_channel: String,
    },
    Streams {
        /// On a Redis Cluster, to the shard of the stream's slot (both keys share it).
        conn: kadr::RedisConn,
        /// Keys, and the last entry id read from each: detections, errors.
        keys: [String; 2],
        last: [String; 2],
        resume: Option<PathBuf>,
        read: VecDeque<(bool, Vec<u8>)>,
    },
}

impl Results {
    /// The next message (`true` for an error), waiting at most `wait`.
    async fn next(&mut self, wait: Duration) -> anyhow::Result<Option<(bool, Vec<u8>)>> {
        match self {
            Results::Channels {
                pubsub,
                detections_channel,
            } => {
                let mut messages = pubsub.on_message();
                match tokio::time::timeout(wait, messages.next()).await {
                    Ok(Some(m)) => Ok(Some((
                        m.get_channel_name() != detections_channel,
                        m.get_payload_bytes().to_vec(),
                    ))),
                    Ok(None) => bail!("Redis connection closed"),
                    Err(_) => Ok(None),
                }
            }
            Results::Streams {
                conn,
                keys,
                last,
                resume,
                read,
            } => {
                let deadline = Instant::now() + wait;
                if read.is_empty() {
                    // Everything read so far has been handled: remember where that leaves us
                    // (a kill before this line repeats a message on resume, never skips one).
                    if let Some(path) = resume {
                        let tmp = path.with_extension("tmp");
                        std::fs::write(&tmp, format!("{} {}\n", last[0], last[1]))?;
                        std::fs::rename(&tmp, &*path)?;
                    }
                }
                while read.is_empty() {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    let block = left.min(Duration::from_secs(1)).as_millis().max(1) as usize;
                    let opts = StreamReadOptions::default().count(100).block(block);
                    let reply: StreamReadReply = conn
                        .xread_options(&keys[..], &last[..], &opts)
                        .await
                        .context("reading the results streams")?;
                    for stream in reply.keys {
                        let is_error = stream.key == keys[1];
                        for entry in stream.ids {
                            let json = match entry.map.get(JSON_FIELD) {
                                Some(redis::Value::BulkString(b)) => b.clone(),
                                _ => {
                                    eprintln!("kadr: entry {} has no {JSON_FIELD} field", entry.id);
                                    Vec::new()
                                }
                            };
                            last[usize::from(is_error)] = entry.id;
                            if !json.is_empty() {
                                read.push_back((is_error, json));
                            }
                        }
                    }
                }
                Ok(read.pop_front())
            }
        }
    }
}

pub async fn run(args: SubscribeArgs) -> anyhow::Result<()> {
    let channels = args.redis.channels();
    let detections_channel = channels.detections(&args.stream);
    let errors_channel = channels.errors(&args.stream);
    let unusable = || {
        format!(
            "Redis at {} cannot be used",
            kadr::redact(&args.redis.redis_url)
        )
    };
    let resumed = match &args.resume {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(path)?;
            let ids: Vec<String> = text.split_whitespace().map(String::from).collect();
            match <[String; 2]>::try_from(ids) {
                Ok(ids) => Some(ids),
                Err(_) => bail!("{} does not hold two entry ids", path.display()),
            }
        }
        _ => None,
    };
    let mut results = if resumed.is_some() || args.from.is_some() || args.resume.is_some() {
        let from = args.from.clone().unwrap_or_else(|| "$".into());
        let (_, mut conn) = args
            .redis
            .tls()
            .connect(&args.redis.redis_url, args.redis.redis_cluster)
            .await?;
        let keys = [detections_channel.clone(), errors_channel.clone()];
        let last = match resumed {
            Some(ids) => ids,
            None => [
                position(&mut conn, &keys[0], &from).await?,
                position(&mut conn, &keys[1], &from).await?,
            ],
        };
        Results::Streams {
            conn,
            keys,
            last,
            resume: args.resume.clone(),
            read: VecDeque::new(),
        }
    } else {
        // On a Redis Cluster, any node: a PUBLISH reaches them all.
        let client = args.redis.tls().client(&args.redis.redis_url)?;
        let pubsub = kadr::subscribe(&client, &[&detections_channel, &errors_channel], &[])
            .await
            .with_context(unusable)?;
        Results::Channels {
            pubsub,
            detections_channel: detections_channel.clone(),
        }
    };
    if let Some(path) = &args.ready_file {
        std::fs::write(path, b"ready\n")?;
    }
    let mut tally = StreamTally::default();
    let mut first_at: Option<Instant> = None;
    let mut last_progress = Instant::now();
    let idle = args.idle_timeout.map(Duration::from_secs_f64);
    loop {
        let wait = match (idle, first_at) {
            (Some(idle), Some(_)) => idle,
            _ => Duration::from_secs(3600),
        };
        let Some((is_error, payload)) = results.next(wait).await? else {
            break;
        };
        let (now_us, received) = (protocol::now_us(), Instant::now());
        first_at.get_or_insert(received);
        let payload = &payload[..];
        let text = String::from_utf8_lossy(payload);
        if is_error {
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

/// `$` as the id of the stream's newest entry now (XREAD's own `$` would skip entries added
/// between two reads); any other id as it is.
async fn position(conn: &mut kadr::RedisConn, key: &str, from: &str) -> anyhow::Result<String> {
    if from != "$" {
        return Ok(from.to_string());
    }
    let newest: redis::streams::StreamRangeReply = conn
        .xrevrange_count(key, "+", "-", 1)
        .await
        .context("reading the results stream")?;
    Ok(newest
        .ids
        .first()
        .map_or_else(|| "0-0".to_string(), |e| e.id.clone()))
}
