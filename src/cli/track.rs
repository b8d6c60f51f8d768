//! `kadr track --mot det.txt`: the node's tracker, offline, on a MOTChallenge detections file;
//! the tracked rows go to stdout, so its quality can be scored with the field's tools. With
//! `--analytics FILE.toml --events OUT.jsonl`, the line crossings and zone visits of the tracks
//! go to OUT as JSON lines, the counts last.

use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use kadr::analytics::{Analytics, AnalyticsConfig};
use kadr::tracker::{mot, Tracker};
use kadr::TrackerConfig;

#[derive(Args)]
pub struct TrackArgs {
    /// Detections, one row per box: `frame,id,left,top,width,height,score[,class]` (`-` for
    /// stdin).
    #[arg(long)]
    pub mot: PathBuf,
    /// A cluster.toml whose `[tracker]` settings to use (default: the defaults).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override one `[tracker]` setting, as `key=value` (repeatable), e.g. `lost_frames=60`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Lines and zones to count on the tracks: `[[lines]]` and `[[zones]]` tables, as a
    /// stream's `analytics` section (docs/configuration.md).
    #[arg(long, requires = "events")]
    pub analytics: Option<PathBuf>,
    /// Where the events go, one JSON object a line, the counts last (`-` for stderr).
    #[arg(long, requires = "analytics")]
    pub events: Option<PathBuf>,
    /// Frames per second of the sequence: frame N was captured at (N - 1) / fps seconds (for
    /// `dwell_s`).
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
}

pub fn run(args: TrackArgs) -> anyhow::Result<()> {
    let cfg = TrackerConfig::load(args.config.as_deref(), &args.set)?;
    let frames = if args.mot.as_os_str() == "-" {
        mot::read(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(&args.mot)
            .with_context(|| format!("cannot open {}", args.mot.display()))?;
        mot::read(BufReader::new(file))
    }
    .with_context(|| format!("{}", args.mot.display()))?;
    if !(args.fps.is_finite() && args.fps > 0.0 && args.fps <= 1000.0) {
        anyhow::bail!("--fps {} is not in (0, 1000]", args.fps);
    }
    let mut analytics = match &args.analytics {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let cfg =
                AnalyticsConfig::from_toml(&text).with_context(|| format!("{}", path.display()))?;
            Some(Analytics::new(cfg))
        }
        None => None,
    };
    let mut events_out: Option<Box<dyn Write>> = match &args.events {
        Some(p) if p.as_os_str() == "-" => Some(Box::new(std::io::stderr())),
        Some(p) => Some(Box::new(BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot write {}", p.display()))?,
        ))),
        None => None,
    };
    let mut tracker = Tracker::new(cfg);
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut events = Vec::new();
    let mut analytics_took = std::time::Duration::ZERO;
    let started = Instant::now();
    let rows = mot::track_each(&frames, &mut tracker, &mut out, |frame, tracked| {
        let (Some(a), Some(w)) = (analytics.as_mut(), events_out.as_mut()) else {
            return Ok(());
        };
        let capture_ts_us = ((frame - 1) as f64 / args.fps * 1e6).round() as u64;
        let t = Instant::now();
        events.clear();
        a.update(frame, capture_ts_us, tracked, &mut events);
        analytics_took += t.elapsed();
        for e in &events {
            serde_json::to_writer(&mut *w, e)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })?;
    let took = started.elapsed();
    out.flush()?;
    if let (Some(a), Some(mut w)) = (analytics, events_out) {
        let counts = serde_json::json!({
            "type": "counts",
            "lines": a.counts().lines,
            "zones": a.counts().zones,
        });
        serde_json::to_writer(&mut w, &counts)?;
        w.write_all(b"\n")?;
        w.flush()?;
    }
    let frame_count = frames.keys().next_back().copied().unwrap_or(0);
    eprintln!(
        "kadr track: {frame_count} frames, {} detections, {rows} tracked rows, {:.3} ms per frame",
        frames.values().map(Vec::len).sum::<usize>(),
        took.as_secs_f64() * 1000.0 / frame_count.max(1) as f64
    );
    if args.analytics.is_some() {
        eprintln!(
            "kadr track: analytics {:.4} ms per frame",
            analytics_took.as_secs_f64() * 1000.0 / frame_count.max(1) as f64
        );
    }
    Ok(())
}
