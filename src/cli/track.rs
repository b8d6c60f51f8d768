//! `kadr track --mot det.txt`: the node's tracker, offline, on a MOTChallenge detections file;
//! the tracked rows go to stdout, so its quality can be scored with the field's tools.

use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
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
    let mut tracker = Tracker::new(cfg);
    let mut out = BufWriter::new(std::io::stdout().lock());
    let started = Instant::now();
    let rows = mot::track(&frames, &mut tracker, &mut out)?;
    let took = started.elapsed();
    out.flush()?;
    let frame_count = frames.keys().next_back().copied().unwrap_or(0);
    eprintln!(
        "kadr track: {frame_count} frames, {} detections, {rows} tracked rows, {:.3} ms per frame",
        frames.values().map(Vec::len).sum::<usize>(),
        took.as_secs_f64() * 1000.0 / frame_count.max(1) as f64
    );
    Ok(())
}
