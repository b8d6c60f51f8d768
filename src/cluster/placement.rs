//! Which source node reads which stream: rendezvous hashing with bounded loads and memory.
//!
//! Every node ranks every stream's candidates the same way (a hash of the node's name and the
//! stream's id, highest first). Plain rendezvous hashing moves only what must move, but leaves
//! the busiest node about 2.5 standard deviations over the mean (123 streams where the mean is
//! 100, at 10,000 streams over 100 nodes). Here a stream stays with its live holder; a cap of
//! [`LOAD_FACTOR`] times the mean bounds every share; what has no holder goes to its
//! highest-ranked node under the cap; and a node well under its share (one that just joined)
//! takes its highest-ranked streams from the busiest. `kadr-placement` in `loadtest/`
//! simulates it: at 10,000 streams over 100 nodes the largest share is 1.04x the mean, a node
//! leaving moves only its own streams (1.04x the ideal 1/N at most), and one joining takes
//! its share (1.00x).
//!
//! The function is pure: each node computes the same answer from the same holders, streams and
//! live source nodes. When two nodes briefly disagree (one has not yet heard of a join), the
//! per-stream lease decides, so a stream is never read twice.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The names of the live source nodes, as this node's membership last saw them (itself
/// included), for the per-stream leases to place streams over.
pub(crate) type LiveSources = Arc<RwLock<Vec<String>>>;

/// The busiest node holds at most this many times the mean share of streams (rounded up).
pub const LOAD_FACTOR: f64 = 1.05;

/// A stable 64-bit hash (FNV-1a, then splitmix64's finaliser so that close names spread):
/// the same on every node, platform and version, unlike the standard library's hasher.
fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// How much `node` wants `stream`: the rendezvous score.
pub fn score(node: &str, stream: &str) -> u64 {
    stable_hash(&[node.as_bytes(), stream.as_bytes()])
}

/// The node of each stream, given where the streams are `held` now (streams held by a node
/// not in `nodes`, or by none, are placed afresh), the live source nodes `nodes` and every
/// known stream `streams` (all in any order). Empty when there are no nodes.
///
/// 1. A node over the cap (`load_factor` times the mean share, rounded up) passes on the
///    streams it ranks lowest.
/// 2. Every stream without a live holder goes, in a fixed order of the streams, to its
///    highest-ranked node well under the mean share (see 3) if there is one, else to its
///    highest-ranked node under the cap.
/// 3. A node well under the mean share (by more than the cap is over it, or one stream; a
///    node that just joined) takes the streams it ranks highest from nodes above the mean, up
///    to the mean.
///
/// Streams that keep a live holder with room stay where they are, so a node leaving moves only
/// its own streams, and one joining takes about its share; the result placed again is the
/// same (no stream moves twice for one change).
pub fn assign<'a>(
    held: &HashMap<&'a str, &'a str>,
    streams: &[&'a str],
    nodes: &[&'a str],
    load_factor: f64,
) -> HashMap<&'a str, &'a str> {
    let mut owners: HashMap<&'a str, &'a str> = HashMap::with_capacity(streams.len());
    if nodes.is_empty() {
        return owners;
    }
    let mut nodes: Vec<&'a str> = nodes.to_vec();
    nodes.sort_unstable();
    nodes.dedup();
    let mut streams: Vec<&'a str> = streams.to_vec();
    streams.sort_unstable();
    streams.dedup();
    // A fixed order that does not depend on the names' spelling.
    streams.sort_by_cached_key(|s| (stable_hash(&[s.as_bytes()]), *s));
    let mean = streams.len() as f64 / nodes.len() as f64;
    let load_factor = load_factor.max(1.0);
    let cap = ((mean * load_factor).ceil() as usize).max(1);
    // A node well under its share (one that just joined) fills up to its share; nearer it,
    // it is left alone, so a small change in the mean moves nothing.
    let needy = (mean - (mean * (load_factor - 1.0)).max(1.0))
        .floor()
        .max(0.0) as usize;
    let share = mean.round() as usize;
    let mut load: HashMap<&'a str, usize> = nodes.iter().map(|n| (*n, 0)).collect();

    // Keep what live nodes hold.
    for s in &streams {
        if let Some(n) = held.get(s).filter(|n| load.contains_key(*n)) {
            owners.insert(*s, *n);
            *load.get_mut(n).expect("a live node") += 1;
        }
    }
    // 1. Over the cap: pass on the lowest-ranked.
    for n in &nodes {
        if load[n] <= cap {
            continue;
        }
        let mut mine: Vec<&'a str> = streams
            .iter()
            .copied()
            .filter(|s| owners.get(s) == Some(n))
            .collect();
        mine.sort_by_key(|s| (score(n, s), *s));
        for s in mine.into_iter().take(load[n] - cap) {
            owners.remove(s);
        }
        *load.get_mut(n).expect("a live node") = cap;
    }
    // 2. Place what has no holder.
    let mut ranked: Vec<(u64, &'a str)> = Vec::with_capacity(nodes.len());
    for s in &streams {
        if owners.contains_key(s) {
            continue;
        }
        ranked.clear();
        ranked.extend(nodes.iter().map(|n| (score(n, s), *n)));
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        // A node well under its share first (so that step 3 need not move streams that have
        // a holder), then any under the cap; the cap times the node count is at least the
        // stream count, so one has room.
        let owner = ranked
            .iter()
            .map(|(_, n)| *n)
            .find(|n| load[n] < needy)
            .or_else(|| ranked.iter().map(|(_, n)| *n).find(|n| load[n] < cap))
            .unwrap_or(ranked[0].1);
        *load.get_mut(owner).expect("a live node") += 1;
        owners.insert(*s, owner);
    }
    // 3. Under half its share: take the streams it ranks highest from nodes above the share.
    for n in &nodes {
        if load[n] >= needy {
            continue;
        }
        let mut wanted: Vec<&'a str> = streams
            .iter()
            .copied()
            .filter(|s| owners[s] != *n)
            .collect();
        wanted.sort_by_key(|s| (std::cmp::Reverse(score(n, s)), *s));
        for s in wanted {
            if load[n] >= share {
                break;
            }
            let from = owners[s];
            if load[from] > share {
                *load.get_mut(from).expect("a live node") -= 1;
                *load.get_mut(n).expect("a live node") += 1;
                owners.insert(s, *n);
            }
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}-{i}")).collect()
    }

    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    fn shares<'a>(owners: &HashMap<&'a str, &'a str>) -> HashMap<&'a str, usize> {
        let mut s = HashMap::new();
        for n in owners.values() {
            *s.entry(*n).or_insert(0) += 1;
        }
        s
    }

    fn moved(a: &HashMap<&str, &str>, b: &HashMap<&str, &str>) -> usize {
        a.iter().filter(|(s, n)| b.get(*s) != Some(*n)).count()
    }

    fn fresh<'a>(streams: &[&'a str], nodes: &[&'a str]) -> HashMap<&'a str, &'a str> {
        assign(&HashMap::new(), streams, nodes, LOAD_FACTOR)
    }

    #[test]
    fn every_node_computes_the_same_placement_whatever_the_order_it_lists_things_in() {
        let streams = names("cam", 200);
        let nodes = names("node", 7);
        let a = fresh(&refs(&streams), &refs(&nodes));
        let mut s2 = refs(&streams);
        s2.reverse();
        let mut n2 = refs(&nodes);
        n2.rotate_left(3);
        assert_eq!(a, fresh(&s2, &n2));
        assert_eq!(a.len(), 200);
        // Placed again, nothing moves.
        assert_eq!(a, assign(&a, &s2, &n2, LOAD_FACTOR));
    }

    #[test]
    fn twelve_streams_over_three_nodes_give_each_four_plus_or_minus_one() {
        let streams = names("camera", 12);
        let nodes = ["node-1", "node-2", "node-3"];
        let s = shares(&fresh(&refs(&streams), &nodes));
        for n in nodes {
            let share = s.get(n).copied().unwrap_or(0);
            assert!((3..=5).contains(&share), "{n} holds {share}: {s:?}");
        }
    }

    #[test]
    fn the_cap_bounds_the_largest_share_where_plain_rendezvous_does_not() {
        let streams = names("s", 10_000);
        let nodes = names("n", 100);
        let plain = shares(&fresh_with(&refs(&streams), &refs(&nodes), 1e9));
        let capped = shares(&fresh(&refs(&streams), &refs(&nodes)));
        assert!(*plain.values().max().unwrap() > 115, "{plain:?}");
        let cap = (100.0 * LOAD_FACTOR).ceil() as usize;
        assert!(*capped.values().max().unwrap() <= cap);
    }

    fn fresh_with<'a>(
        streams: &[&'a str],
        nodes: &[&'a str],
        lf: f64,
    ) -> HashMap<&'a str, &'a str> {
        assign(&HashMap::new(), streams, nodes, lf)
    }

    #[test]
    fn a_node_leaving_moves_only_its_own_streams() {
        let streams = names("s", 10_000);
        let nodes = names("n", 100);
        let before = fresh(&refs(&streams), &refs(&nodes));
        let fewer: Vec<&str> = refs(&nodes).into_iter().filter(|n| *n != "n-42").collect();
        let after = assign(&before, &refs(&streams), &fewer, LOAD_FACTOR);
        let own = before.values().filter(|n| **n == "n-42").count();
        assert_eq!(moved(&before, &after), own);
        assert!(after.values().all(|n| *n != "n-42"));
    }

    #[test]
    fn a_node_joining_takes_about_its_share_and_no_more_moves() {
        let streams = names("s", 10_000);
        let nodes = names("n", 101);
        let before = fresh(&refs(&streams), &refs(&nodes[..100]));
        let after = assign(&before, &refs(&streams), &refs(&nodes), LOAD_FACTOR);
        let gained = after.values().filter(|n| **n == "n-100").count();
        let m = moved(&before, &after);
        assert!(gained >= 99, "{gained}");
        assert!(m as f64 <= 1.2 * 10_000.0 / 101.0, "moved {m}");
    }

    #[test]
    fn streams_of_a_node_that_is_gone_are_placed_and_new_streams_too() {
        let held: HashMap<&str, &str> = [("a", "gone"), ("b", "x")].into_iter().collect();
        let owners = assign(&held, &["a", "b", "c"], &["x", "y"], LOAD_FACTOR);
        assert_eq!(owners.len(), 3);
        assert_eq!(owners["b"], "x");
        assert!(owners.values().all(|n| ["x", "y"].contains(n)));
    }

    #[test]
    fn no_nodes_no_owners_and_one_node_takes_all() {
        assert!(fresh(&["a", "b"], &[]).is_empty());
        let one = fresh(&["a", "b", "c"], &["solo"]);
        assert!(one.values().all(|n| *n == "solo"));
    }
}
