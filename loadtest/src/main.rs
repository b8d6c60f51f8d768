//! kadr-loadtest: publish S streams of real 1280x720 JPEG frames (pre-encoded from a video,
//! looped) at R fps each for D seconds, read the detections back, and report what came out:
//! delivered fps, latency from capture timestamp to detection received (p50/p95/p99), drops,
//! gaps, order violations, CPU use and the nodes' memory. A table for people, JSON for machines.
//!
//! ```text
//! kadr-loadtest --streams 1 --fps 30 --seconds 60 --node-pid $(pgrep -f 'kadr node') --json run.json
//! ```

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures_util::StreamExt;
use redis::aio::PubSub;
use redis::streams::StreamRangeReply;
use redis::AsyncCommands;
use serde::Serialize;
use tokio::sync::Mutex;

use kadr::client::tally::{StreamTally, TallySummary};
use kadr::percentiles;
use kadr::protocol::{
    encode_frame, now_us, Channels, OutputChannel, OutputMessage, Transport, FLAG_KEEP,
    FRAME_FIELD, JSON_FIELD,
};

#[derive(Parser)]
#[command(name = "kadr-loadtest", about = "Load generator for kadr")]
struct Args {
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// For `rediss://`: the CA that signed Redis's certificate, and a client certificate and
    /// key where Redis asks for one (PEM).
    #[arg(long, env = "REDIS_CA")]
    redis_ca: Option<PathBuf>,
    #[arg(long, env = "REDIS_CERT")]
    redis_cert: Option<PathBuf>,
    #[arg(long, env = "REDIS_KEY")]
    redis_key: Option<PathBuf>,
    #[arg(long, default_value = "kadr")]
    prefix: String,
    /// Video to take frames from (encoded once to 1280x720 JPEG, then looped).
    #[arg(long, default_value = ".deps/video/bigbuckbunny.mp4")]
    input: String,
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Frames per second per stream.
    #[arg(long, default_value_t = 30.0)]
    fps: f64,
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Mark frames KEEP (never dropped; for saturation runs).
    #[arg(long)]
    keep: bool,
    /// How long to wait for the last results after publishing stops.
    #[arg(long, default_value_t = 15.0)]
    drain: f64,
    /// kadr node processes to measure CPU and memory of.
    #[arg(long = "node-pid", num_args = 1..)]
    node_pids: Vec<u32>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A label for the report (the configuration under test).
    #[arg(long, default_value = "")]
    label: String,
    /// Write the JPEG frames it would publish into this folder and exit (so another program,
    /// like the Python peer in loadtest/peer.py, is measured on the very same frames).
    #[arg(long)]
    write_frames: Option<PathBuf>,
    /// Create this file when publishing starts, holding the stream names one a line (a script
    /// injecting faults waits for it).
    #[arg(long)]
    started_file: Option<PathBuf>,
    /// `pubsub` (PUBLISH) or `streams` (XADD to a Redis Stream per camera).
    #[arg(long, default_value = "pubsub")]
    transport: Transport,
    /// Streams: frames each stream keeps at most (approximately).
    #[arg(long, default_value_t = kadr::client::publish::FRAMES_MAXLEN)]
    frames_maxlen: u64,
    /// Lines and zones (a `kadr track --analytics` file) for every stream of the run, stored
    /// in Redis as the admin API stores them, so the node counts events on them.
    #[arg(long)]
    analytics: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    label: String,
    streams: usize,
    fps_per_stream: f64,
    seconds: f64,
    published: u64,
    accounted: u64,
    detected: u64,
    /// Detections received per second, all streams, first to last.
    delivered_fps: f64,
    latency_ms_p50: f64,
    latency_ms_p95: f64,
    latency_ms_p99: f64,
    dropped: u64,
    gaps: BTreeMap<String, u64>,
    errors: u64,
    order_violations: u64,
    /// Sequence numbers that came back more than once.
    duplicates: u64,
    /// Every published frame came back once, in order (detected or in a gap).
    complete: bool,
    /// Longest time between two output messages of one stream, ms.
    longest_stall_ms: f64,
    /// PUBLISH attempts that failed (Redis away) and were tried again.
    publish_retries: u64,
    /// Frames Redis took but no subscriber (no source node) heard.
    unheard: u64,
    /// Share of the machine's CPU in use during the run (all cores = 100).
    machine_cpu_percent: f64,
    /// CPU of the node processes, in cores (1.0 = one core busy).
    nodes_cpu_cores: f64,
    /// Resident memory of the node processes, MiB: at the first and last sample, min and max.
    nodes_rss_mib: Option<[f64; 4]>,
    /// How evenly the streams were served, and the worst stream's latency.
    per_stream: PerStream,
    /// With `--analytics`: events the node published (its events streams' lengths).
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<u64>,
}

/// Figures over the streams of a run, each stream taken alone.
#[derive(Serialize, Default)]
struct PerStream {
    /// Fewest and most frames detected of one stream, and their ratio (1.0: an equal share).
    detected_min: u64,
    detected_max: u64,
    fair_share: f64,
    /// The highest p50 and p99 latency of any one stream.
    worst_latency_ms_p50: f64,
    worst_latency_ms_p99: f64,
    /// Detections that arrived after their stream's next frame was published (latency at
    /// least one frame interval, 1/fps).
    after_next_frame: u64,
}

impl PerStream {
    fn of(tallies: &BTreeMap<String, StreamTally>, fps: f64) -> PerStream {
        let mut p = PerStream {
            detected_min: u64::MAX,
            ..PerStream::default()
        };
        let interval_ms = 1000.0 / fps;
        for t in tallies.values() {
            let s = t.summary();
            p.detected_min = p.detected_min.min(s.detected);
            p.detected_max = p.detected_max.max(s.detected);
            p.worst_latency_ms_p50 = p.worst_latency_ms_p50.max(s.latency_ms_p50);
            p.worst_latency_ms_p99 = p.worst_latency_ms_p99.max(s.latency_ms_p99);
            p.after_next_frame += t
                .recent_latencies(usize::MAX)
                .filter(|&l| l >= interval_ms)
                .count() as u64;
        }
        if tallies.is_empty() {
            p.detected_min = 0;
        }
        p.fair_share = if p.detected_max == 0 {
            0.0
        } else {
            (p.detected_min as f64 / p.detected_max as f64 * 100.0).round() / 100.0
        };
        p
    }
}

/// What the publishers met on the way.
#[derive(Default)]
struct PublishCounts {
    retries: AtomicU64,
    unheard: AtomicU64,
}

type Tallies = Arc<Mutex<BTreeMap<String, StreamTally>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.transport == Transport::Kafka {
        anyhow::bail!("--transport kafka: nodes do not read frames from Kafka yet (issue 31)");
    }
    let frames = kadr::client::publish::video::load_frames(&args.input, Some((1280, 720)), 3, 600)
        .await
        .context("loading frames")?;
    if let Some(dir) = &args.write_frames {
        std::fs::create_dir_all(dir)?;
        for (i, f) in frames.iter().enumerate() {
            std::fs::write(dir.join(format!("{i:05}.jpg")), f)?;
        }
        eprintln!(
            "loadtest: wrote {} frames to {}",
            frames.len(),
            dir.display()
        );
        return Ok(());
    }
    eprintln!(
        "loadtest: {} frames of {} (1280x720 JPEG), {} stream(s) x {} fps for {} s{}",
        frames.len(),
        args.input,
        args.streams,
        args.fps,
        args.seconds,
        if args.keep { ", KEEP" } else { "" }
    );
    let run = now_us() % 1_000_000;
    let names: Vec<String> = (0..args.streams).map(|s| format!("lt{run}-{s}")).collect();
    let channels = Channels::new(args.prefix.clone());
    let client = kadr::RedisTls {
        ca: args.redis_ca.clone(),
        cert: args.redis_cert.clone(),
        key: args.redis_key.clone(),
    }
    .client(&args.redis_url)?;
    if let Some(path) = &args.analytics {
        set_analytics(&client, &channels, &names, path).await?;
    }
    let tallies: Tallies = Arc::new(Mutex::new(
        names
            .iter()
            .map(|n| (n.clone(), StreamTally::default()))
            .collect(),
    ));

    // Subscribe first: pub/sub keeps nothing for late subscribers.
    let patterns = [
        channels.detections(&format!("lt{run}-*")),
        channels.errors(&format!("lt{run}-*")),
    ];
    let pubsub = subscribe(&client, &patterns).await?;
    // Owned: stopped below, or aborted with its owner if the run fails on the way.
    let reader = kadr::OwnedTask::spawn(read_results(
        client.clone(),
        pubsub,
        patterns,
        channels.clone(),
        tallies.clone(),
    ));

    let cpu_start = CpuSample::take(&args.node_pids);
    let mut rss: Vec<f64> = Vec::new();
    let frames = Arc::new(frames);
    let counts = Arc::new(PublishCounts::default());
    let total_per_stream = (args.fps * args.seconds).round() as u64;
    // Joined below; a run that fails first exits the process, and them with it.
    let publishers: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let stream = PublishedStream {
                channel: channels.frames(name),
                name: name.clone(),
                offset: k,
                fps: args.fps,
                total: total_per_stream,
                keep: args.keep,
                transport: args.transport,
                frames_maxlen: args.frames_maxlen,
            };
            tokio::spawn(publish_stream(
                client.clone(),
                stream,
                frames.clone(),
                counts.clone(),
            ))
        })
        .collect();
    if let Some(path) = &args.started_file {
        // The stream names, one a line, for a script that needs to know which node reads them.
        std::fs::write(path, names.join("\n") + "\n")?;
    }

    // Progress once a second while publishing, then drain.
    let start = Instant::now();
    let published_total = total_per_stream * args.streams as u64;
    let deadline = start + Duration::from_secs_f64(args.seconds + args.drain);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(r) = rss_mib(&args.node_pids) {
            rss.push(r);
        }
        let st = tallies.lock().await;
        let total = total_of(&st);
        let recent: VecDeque<f64> = st.values().flat_map(|t| t.recent_latencies(60)).collect();
        let p99 = percentiles(&recent).map_or(0.0, |p| p.p99);
        eprint!(
            "\r[{:>5.1} s] accounted {}/{published_total}  detected {}  gaps {}  p99 (recent) {p99:.0} ms   ",
            start.elapsed().as_secs_f64(),
            total.frames,
            total.detected,
            total.gap_frames,
        );
        if total.frames >= published_total || Instant::now() >= deadline {
            break;
        }
    }
    eprintln!();
    for p in publishers {
        p.await??;
    }
    let cpu = CpuSample::take(&args.node_pids).since(&cpu_start);
    reader.stop().await;

    let st = tallies.lock().await;
    let total = total_of(&st);
    let mut latencies = VecDeque::new();
    for t in st.values() {
        latencies.extend(t.recent_latencies(usize::MAX));
    }
    let p = percentiles(&latencies);
    // Detections per second over all streams, from the first to arrive to the last.
    let first = st
        .values()
        .filter_map(|t| t.detection_span())
        .map(|s| s.0)
        .min();
    let last = st
        .values()
        .filter_map(|t| t.detection_span())
        .map(|s| s.1)
        .max();
    let delivered_fps = match (first, last) {
        (Some(a), Some(b)) if b > a => {
            total.detected.saturating_sub(1) as f64 / (b - a).as_secs_f64()
        }
        _ => 0.0,
    };
    let complete = st.values().all(|t| {
        let s = t.counts();
        s.first_seq == Some(0)
            && s.frames == total_per_stream
            && s.order_violations == 0
            && s.duplicates == 0
    });
    let report = Report {
        label: args.label.clone(),
        streams: args.streams,
        fps_per_stream: args.fps,
        seconds: args.seconds,
        published: published_total,
        accounted: total.frames,
        detected: total.detected,
        delivered_fps: round1(delivered_fps),
        latency_ms_p50: p.as_ref().map_or(0.0, |p| p.p50),
        latency_ms_p95: p.as_ref().map_or(0.0, |p| p.p95),
        latency_ms_p99: p.as_ref().map_or(0.0, |p| p.p99),
        dropped: total.gaps_by_reason.get("dropped").copied().unwrap_or(0),
        gaps: total.gaps_by_reason.clone(),
        errors: total.errors,
        order_violations: total.order_violations,
        duplicates: total.duplicates,
        complete,
        longest_stall_ms: total.longest_stall_ms,
        publish_retries: counts.retries.load(Ordering::Relaxed),
        unheard: counts.unheard.load(Ordering::Relaxed),
        machine_cpu_percent: round1(cpu.0),
        nodes_cpu_cores: (cpu.1 * 10_000.0).round() / 10_000.0,
        nodes_rss_mib: (!rss.is_empty()).then(|| {
            let min = rss.iter().copied().fold(f64::MAX, f64::min);
            let max = rss.iter().copied().fold(0.0, f64::max);
            [rss[0], rss[rss.len() - 1], min, max].map(round1)
        }),
        per_stream: PerStream::of(&st, args.fps),
        events: match &args.analytics {
            Some(_) => Some(count_events(&client, &channels, &names).await?),
            None => None,
        },
    };
    print_table(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

/// Give every stream of the run the lines and zones of a `kadr track --analytics` file, as
/// the admin API does (`{prefix}:geometry:{stream}`, JSON).
async fn set_analytics(
    client: &redis::Client,
    channels: &Channels,
    names: &[String],
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let cfg = kadr::analytics::AnalyticsConfig::from_toml(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let json = serde_json::to_string(&cfg)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    for name in names {
        let _: () = redis::cmd("SET")
            .arg(channels.geometry_key(name))
            .arg(&json)
            .query_async(&mut conn)
            .await?;
    }
    eprintln!(
        "loadtest: {} lines and {} zones on each stream",
        cfg.lines.len(),
        cfg.zones.len()
    );
    Ok(())
}

/// Events the node published on the run's streams (their events streams' lengths).
async fn count_events(
    client: &redis::Client,
    channels: &Channels,
    names: &[String],
) -> anyhow::Result<u64> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut total = 0;
    for name in names {
        let n: u64 = redis::cmd("XLEN")
            .arg(channels.events(name))
            .query_async(&mut conn)
            .await?;
        total += n;
    }
    Ok(total)
}

fn total_of(tallies: &BTreeMap<String, StreamTally>) -> TallySummary {
    let mut total = TallySummary::default();
    for t in tallies.values() {
        total.add(t.counts());
    }
    total
}

async fn subscribe(client: &redis::Client, patterns: &[String]) -> anyhow::Result<PubSub> {
    let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
    kadr::subscribe(client, &[], &patterns).await
}

/// Tally every result and error of the run's streams; when Redis goes away (a restart, in the
/// container fault suite), subscribe again as soon as it is back, then catch up from the
/// streams' results streams what was published before the subscription was back (pub/sub
/// keeps nothing for a subscriber that is away; the results stream is written in the same
/// step as the channel's message).
async fn read_results(
    client: redis::Client,
    mut pubsub: PubSub,
    patterns: [String; 2],
    channels: Channels,
    tallies: Tallies,
) {
    // Results recorded from a results stream that may still come over the new subscription:
    // each is skipped once when it does.
    let mut caught_up: HashSet<(String, u64, u64)> = HashSet::new();
    loop {
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            let received = Instant::now();
            let channel: Vec<u8> = msg.get_channel().unwrap_or_default();
            let Some((kind, stream)) = channels.output_stream_of(&channel) else {
                continue;
            };
            let stream = String::from_utf8_lossy(stream);
            let mut tallies = tallies.lock().await;
            let Some(tally) = tallies.get_mut(stream.as_ref()) else {
                continue;
            };
            match kind {
                OutputChannel::Errors => tally.record_error(),
                OutputChannel::Detections => {
                    let payload = msg.get_payload_bytes();
                    if let Ok(out) = serde_json::from_slice::<OutputMessage>(payload) {
                        record_live(tally, &mut caught_up, &stream, &out, received);
                    }
                }
            }
        }
        drop(messages);
        eprintln!("\nloadtest: lost the subscription; subscribing again");
        pubsub = loop {
            match subscribe(&client, &patterns).await {
                Ok(p) => break p,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        caught_up.clear();
        match catch_up(&client, &channels, &tallies, &mut caught_up).await {
            Ok(n) => eprintln!(
                "loadtest: subscribed again; {n} result(s) caught up from the results streams"
            ),
            Err(e) => {
                eprintln!("loadtest: subscribed again; could not read the results streams: {e:#}")
            }
        }
    }
}

/// Record a result that came over pub/sub, unless it was caught up from its results stream
/// already (then it is skipped, once).
fn record_live(
    tally: &mut StreamTally,
    caught_up: &mut HashSet<(String, u64, u64)>,
    stream: &str,
    out: &OutputMessage,
    received: Instant,
) {
    if !caught_up.remove(&(stream.to_string(), out.epoch(), out.seqs().0)) {
        tally.record(out, now_us(), received);
    }
}

/// Record, for every stream of the run, the results in its results stream that come after
/// what its tally has (the results stream holds them in publishing order); each one recorded
/// goes into `recorded`. Returns how many were recorded.
async fn catch_up(
    client: &redis::Client,
    channels: &Channels,
    tallies: &Tallies,
    recorded: &mut HashSet<(String, u64, u64)>,
) -> anyhow::Result<usize> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut tallies = tallies.lock().await;
    let before = recorded.len();
    for (stream, tally) in tallies.iter_mut() {
        let entries: StreamRangeReply = conn.xrange_all(channels.detections(stream)).await?;
        for entry in entries.ids {
            let Some(redis::Value::BulkString(json)) = entry.map.get(JSON_FIELD) else {
                continue;
            };
            let Ok(out) = serde_json::from_slice::<OutputMessage>(json) else {
                continue;
            };
            if is_after(tally.counts(), &out) {
                tally.record(&out, now_us(), Instant::now());
                recorded.insert((stream.clone(), out.epoch(), out.seqs().0));
            }
        }
    }
    Ok(recorded.len() - before)
}

/// Whether a message comes after everything a tally has counted (a later numbering, or a
/// sequence number past the next one expected).
fn is_after(counted: &TallySummary, out: &OutputMessage) -> bool {
    let Some(next) = counted.next_seq else {
        return counted.first_seq.is_none() || out.epoch() > counted.epoch;
    };
    out.epoch() > counted.epoch || (out.epoch() == counted.epoch && out.seqs().1 >= next)
}

struct PublishedStream {
    name: String,
    channel: String,
    /// Where in the frames this stream starts (streams do not all show the same picture).
    offset: usize,
    fps: f64,
    total: u64,
    keep: bool,
    transport: Transport,
    frames_maxlen: u64,
}

/// Publish `total` frames of one stream at `fps`, on a fixed schedule (a late frame does not
/// push the later ones back). A frame Redis refuses (it is away) is tried again until it is
/// taken: the run's figures count every frame as published.
async fn publish_stream(
    client: redis::Client,
    stream: PublishedStream,
    frames: Arc<Vec<Vec<u8>>>,
    counts: Arc<PublishCounts>,
) -> anyhow::Result<()> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    let start = tokio::time::Instant::now();
    let mut msg = Vec::with_capacity(256 * 1024);
    for seq in 0..stream.total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(seq as f64 / stream.fps)).await;
        let jpeg = &frames[(stream.offset * 37 + seq as usize) % frames.len()];
        msg.clear();
        encode_frame(
            &mut msg,
            &stream.name,
            seq,
            now_us(),
            if stream.keep { FLAG_KEEP } else { 0 },
            jpeg,
        );
        loop {
            let sent: redis::RedisResult<i64> = match stream.transport {
                Transport::PubSub => {
                    redis::cmd("PUBLISH")
                        .arg(&stream.channel)
                        .arg(&msg[..])
                        .query_async(&mut conn)
                        .await
                }
                Transport::Kafka => unreachable!("refused when the arguments are read"),
                // Nobody "hears" a stream entry: it waits for a node.
                Transport::Streams => redis::cmd("XADD")
                    .arg(&stream.channel)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(stream.frames_maxlen)
                    .arg("*")
                    .arg(FRAME_FIELD)
                    .arg(&msg[..])
                    .query_async::<String>(&mut conn)
                    .await
                    .map(|_| 1),
            };
            match sent {
                Ok(0) => {
                    counts.unheard.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(_) => break,
                Err(_) => {
                    counts.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Ok(c) = client.get_multiplexed_async_connection().await {
                        conn = c;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Jiffies of the whole machine (busy, total) and of the given processes.
struct CpuSample {
    busy: u64,
    total: u64,
    procs: u64,
    at: Instant,
}

impl CpuSample {
    fn take(pids: &[u32]) -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let total: u64 = fields.iter().sum();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        let procs = pids
            .iter()
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .map(|s| {
                // Fields after the command name (which may hold spaces): utime is 14th, stime 15th.
                let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
                let f: Vec<&str> = rest.split_whitespace().collect();
                let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                field(11) + field(12)
            })
            .sum();
        Self {
            busy: total - idle,
            total,
            procs,
            at: Instant::now(),
        }
    }

    /// (machine CPU %, node CPU in cores) since `earlier`.
    fn since(&self, earlier: &CpuSample) -> (f64, f64) {
        let total = (self.total - earlier.total).max(1) as f64;
        let machine = 100.0 * (self.busy - earlier.busy) as f64 / total;
        let ticks_per_s = 100.0; // USER_HZ on Linux
        let secs = (self.at - earlier.at).as_secs_f64().max(1e-3);
        let cores = (self.procs - earlier.procs) as f64 / ticks_per_s / secs;
        (machine, cores)
    }
}

fn rss_mib(pids: &[u32]) -> Option<f64> {
    let mut kb = 0u64;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        kb += status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())?;
    }
    (!pids.is_empty()).then_some(kb as f64 / 1024.0)
}

fn print_table(r: &Report) {
    println!("| label | streams x fps | published | detected | delivered fps | latency p50 / p95 / p99 ms | dropped | other gaps | order violations | duplicates | longest stall ms | errors | machine CPU | node CPU (cores) | node RSS MiB (start/end/min/max) |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let other: u64 = r
        .gaps
        .iter()
        .filter(|(k, _)| *k != "dropped")
        .map(|(_, v)| v)
        .sum();
    let rss = r
        .nodes_rss_mib
        .map_or("-".into(), |[a, b, c, d]| format!("{a}/{b}/{c}/{d}"));
    println!(
        "| {} | {} x {} | {} | {} | {} | {} / {} / {} | {} | {} | {} | {} | {} | {} | {}% | {} | {} |",
        r.label,
        r.streams,
        r.fps_per_stream,
        r.published,
        r.detected,
        r.delivered_fps,
        r.latency_ms_p50,
        r.latency_ms_p95,
        r.latency_ms_p99,
        r.dropped,
        other,
        r.order_violations,
        r.duplicates,
        r.longest_stall_ms,
        r.errors,
        r.machine_cpu_percent,
        r.nodes_cpu_cores,
        rss
    );
    let p = &r.per_stream;
    println!(
        "\nper stream: detected {}..{} (share {}), worst p50 / p99 {} / {} ms, {} detections after their stream's next frame",
        p.detected_min,
        p.detected_max,
        p.fair_share,
        p.worst_latency_ms_p50,
        p.worst_latency_ms_p99,
        p.after_next_frame
    );
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use kadr::protocol::{GapMessage, GapReason};

    fn gap(seq: u64, count: u64) -> OutputMessage {
        OutputMessage::Gap(GapMessage {
            stream: "s".into(),
            seq,
            count,
            reason: GapReason::Missing,
            detail: None,
            epoch: 0,
        })
    }

    /// A redis-server of the test's own on a free loopback port, killed on drop.
    struct OwnRedis(std::process::Child, u16);
    impl Drop for OwnRedis {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    fn own_redis() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server not found; run scripts/setup.sh");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnRedis(child, port)
    }

    #[tokio::test]
    async fn results_missed_while_away_are_caught_up_from_the_results_stream_once() {
        let redis = own_redis();
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", redis.1)).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let channels = Channels::new("lt");
        // What the node wrote: frames 0..7 in four messages, in publishing order.
        for m in [gap(0, 2), gap(2, 1), gap(3, 3), gap(6, 1)] {
            let json = serde_json::to_vec(&m).unwrap();
            let _: String = conn
                .xadd(channels.detections("s"), "*", &[(JSON_FIELD, json)])
                .await
                .unwrap();
        }
        // The subscriber heard the first two messages, then was away.
        let tallies: Tallies = Arc::new(Mutex::new(BTreeMap::from([(
            "s".to_string(),
            StreamTally::default(),
        )])));
        let now = Instant::now();
        {
            let mut t = tallies.lock().await;
            let tally = t.get_mut("s").unwrap();
            tally.record(&gap(0, 2), 0, now);
            tally.record(&gap(2, 1), 0, now);
        }
        let mut caught_up = HashSet::new();
        let n = catch_up(&client, &channels, &tallies, &mut caught_up)
            .await
            .unwrap();
        assert_eq!(n, 2);
        let mut t = tallies.lock().await;
        let tally = t.get_mut("s").unwrap();
        // The last one came over the new subscription as well: not counted twice.
        record_live(tally, &mut caught_up, "s", &gap(6, 1), now);
        record_live(tally, &mut caught_up, "s", &gap(7, 1), now);
        let s = tally.counts();
        assert_eq!((s.frames, s.order_violations, s.duplicates), (8, 0, 0));
        assert_eq!(caught_up, HashSet::from([("s".to_string(), 0, 3)]));
    }

    #[test]
    fn only_what_comes_after_the_tally_is_caught_up() {
        let mut t = StreamTally::default();
        assert!(is_after(t.counts(), &gap(5, 1)), "nothing heard yet");
        t.record(&gap(0, 4), 0, Instant::now());
        assert!(!is_after(t.counts(), &gap(0, 4)));
        assert!(!is_after(t.counts(), &gap(2, 2)));
        assert!(is_after(t.counts(), &gap(3, 2)), "partly new");
        assert!(is_after(t.counts(), &gap(4, 1)));
    }
}
