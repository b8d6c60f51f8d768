//! kadr-placement: how evenly kadr spreads streams over source nodes, and how many move when
//! one node leaves or joins, simulated with the node's own placement function (no processes).
//!
//! ```text
//! kadr-placement --streams 10000 --nodes 100 --json placement.json
//! ```
//! The ideal is 1/N of the streams moving; the report gives the worst case over `--trials`
//! choices of the node that leaves (and one joining node per trial).

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Parser;
use serde::Serialize;

use kadr::placement::{assign, LOAD_FACTOR};

#[derive(Parser)]
#[command(name = "kadr-placement", about = "Simulate kadr's stream placement")]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Nodes that leave (and join), one at a time, each from the starting cluster.
    #[arg(long, default_value_t = 10)]
    trials: usize,
    #[arg(long, default_value_t = LOAD_FACTOR)]
    load_factor: f64,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    streams: usize,
    nodes: usize,
    load_factor: f64,
    mean_share: f64,
    largest_share: usize,
    /// Largest share over the mean (target: at most 1.2).
    largest_over_mean: f64,
    /// Most streams moved by one node leaving, over the ideal (streams / nodes).
    leave_moved_max: usize,
    leave_moved_over_ideal: f64,
    /// Most streams moved by one node leaving that were not its own (0: only its own move).
    leave_moved_not_its_own: usize,
    /// Most streams moved by one node joining, over the ideal (streams / (nodes + 1)).
    join_moved_max: usize,
    join_moved_over_ideal: f64,
}

fn moved(a: &HashMap<&str, &str>, b: &HashMap<&str, &str>) -> usize {
    a.iter().filter(|(s, n)| b.get(*s) != Some(*n)).count()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.nodes >= 2 && args.streams >= 1,
        "need 2 nodes and a stream at least"
    );
    let streams: Vec<String> = (0..args.streams)
        .map(|i| format!("camera-{i:05}"))
        .collect();
    let nodes: Vec<String> = (0..args.nodes + args.trials)
        .map(|i| format!("node-{i}"))
        .collect();
    let streams: Vec<&str> = streams.iter().map(String::as_str).collect();
    let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let (cluster, joiners) = nodes.split_at(args.nodes);

    let none = HashMap::new();
    let base = assign(&none, &streams, cluster, args.load_factor);
    let mut shares: HashMap<&str, usize> = HashMap::new();
    for n in base.values() {
        *shares.entry(n).or_default() += 1;
    }
    let largest_share = shares.values().copied().max().unwrap_or(0);
    let mean_share = args.streams as f64 / args.nodes as f64;

    let (mut leave_moved_max, mut join_moved_max, mut not_its_own) = (0, 0, 0);
    for t in 0..args.trials.min(args.nodes) {
        // Spread the leavers over the cluster.
        let gone = cluster[t * args.nodes / args.trials.min(args.nodes)];
        let fewer: Vec<&str> = cluster.iter().copied().filter(|n| *n != gone).collect();
        let after = assign(&base, &streams, &fewer, args.load_factor);
        let own = base.values().filter(|n| **n == gone).count();
        let moved_now = moved(&base, &after);
        leave_moved_max = leave_moved_max.max(moved_now);
        not_its_own = not_its_own.max(moved_now - own);
        let mut more = cluster.to_vec();
        more.push(joiners[t]);
        join_moved_max = join_moved_max.max(moved(
            &base,
            &assign(&base, &streams, &more, args.load_factor),
        ));
    }
    let report = Report {
        streams: args.streams,
        nodes: args.nodes,
        load_factor: args.load_factor,
        mean_share,
        largest_share,
        largest_over_mean: largest_share as f64 / mean_share,
        leave_moved_max,
        leave_moved_over_ideal: leave_moved_max as f64 / mean_share,
        leave_moved_not_its_own: not_its_own,
        join_moved_max,
        join_moved_over_ideal: join_moved_max as f64
            / (args.streams as f64 / (args.nodes + 1) as f64),
    };
    println!(
        "{} streams over {} nodes (load factor {}): largest share {} = {:.2}x the mean {:.1}; \
         one node leaving moves at most {} = {:.2}x the ideal ({} not its own); one joining, {} = {:.2}x",
        report.streams,
        report.nodes,
        report.load_factor,
        report.largest_share,
        report.largest_over_mean,
        report.mean_share,
        report.leave_moved_max,
        report.leave_moved_over_ideal,
        report.leave_moved_not_its_own,
        report.join_moved_max,
        report.join_moved_over_ideal
    );
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
