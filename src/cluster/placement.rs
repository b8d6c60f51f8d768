//! Which source node reads which stream: rendezvous hashing with bounded loads.
//!
//! Every node ranks every stream's candidates the same way (a hash of the node's name and the
//! stream's id, highest first), so a node that joins or leaves moves only the streams it wins
//! or held. Plain rendezvous hashing leaves the busiest node about 2.5 standard deviations over
//! the mean (125 streams where the mean is 100, at 10,000 streams over 100 nodes); a cap of
//! `load_factor` times the mean, filled in a fixed order of the streams, keeps the largest
//! share under that cap at the cost of a few extra moves when a node comes or goes
//! (`loadtest/placement` measures both).
//!
//! The function is pure: each node computes the same answer from the same list of streams and
//! live source nodes. When two nodes briefly disagree (one has not yet heard of a join), the
//! per-stream lease decides, so a stream is never read twice.

use std::collections::HashMap;

/// The busiest node holds at most this many times the mean share of streams (rounded up).
pub const LOAD_FACTOR: f64 = 1.2;

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

/// The node of each stream, for `nodes` (the live source nodes, in any order) and `streams`
/// (in any order). Empty when there are no nodes.
pub fn assign<'a>(
    streams: &[&'a str],
    nodes: &[&'a str],
    load_factor: f64,
) -> HashMap<&'a str, &'a str> {
    let mut owners = HashMap::with_capacity(streams.len());
    if nodes.is_empty() {
        return owners;
    }
    let mut nodes: Vec<&str> = nodes.to_vec();
    nodes.sort_unstable();
    nodes.dedup();
    let mut streams: Vec<&str> = streams.to_vec();
    streams.sort_unstable();
    streams.dedup();
    // A fixed order that does not depend on the names' spelling: the cap fills in it.
    streams.sort_by_cached_key(|s| (stable_hash(&[s.as_bytes()]), *s));
    let cap = ((streams.len() as f64 / nodes.len() as f64) * load_factor.max(1.0)).ceil() as usize;
    let cap = cap.max(1);
    let mut load: HashMap<&str, usize> = nodes.iter().map(|n| (*n, 0)).collect();
    let mut ranked: Vec<(u64, &str)> = Vec::with_capacity(nodes.len());
    for stream in streams {
        ranked.clear();
        ranked.extend(nodes.iter().map(|n| (score(n, stream), *n)));
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        // The cap times the node count is at least the stream count, so one has room.
        let owner = ranked
            .iter()
            .map(|(_, n)| *n)
            .find(|n| load[n] < cap)
            .unwrap_or(ranked[0].1);
        *load.get_mut(owner).expect("every node has a load") += 1;
        owners.insert(stream, owner);
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

    #[test]
    fn every_node_computes_the_same_assignment_whatever_the_order_it_lists_things_in() {
        let streams = names("cam", 200);
        let nodes = names("node", 7);
        let a = assign(&refs(&streams), &refs(&nodes), LOAD_FACTOR);
        let mut s2 = refs(&streams);
        s2.reverse();
        let mut n2 = refs(&nodes);
        n2.rotate_left(3);
        assert_eq!(a, assign(&s2, &n2, LOAD_FACTOR));
        assert_eq!(a.len(), 200);
    }

    #[test]
    fn twelve_streams_over_three_nodes_give_each_four_plus_or_minus_one() {
        let streams = names("camera", 12);
        let nodes = ["node-1", "node-2", "node-3"];
        let s = shares(&assign(&refs(&streams), &nodes, LOAD_FACTOR));
        for n in nodes {
            let share = s.get(n).copied().unwrap_or(0);
            assert!((3..=5).contains(&share), "{n} holds {share}: {s:?}");
        }
    }

    #[test]
    fn the_cap_bounds_the_largest_share_where_plain_rendezvous_does_not() {
        let streams = names("s", 10_000);
        let nodes = names("n", 100);
        let plain = shares(&assign(&refs(&streams), &refs(&nodes), 1e9));
        let capped = shares(&assign(&refs(&streams), &refs(&nodes), LOAD_FACTOR));
        assert!(*plain.values().max().unwrap() > 120, "{plain:?}");
        assert!(*capped.values().max().unwrap() <= 120);
    }

    #[test]
    fn a_node_leaving_moves_little_more_than_its_own_streams() {
        let streams = names("s", 10_000);
        let nodes = names("n", 100);
        let before = assign(&refs(&streams), &refs(&nodes), LOAD_FACTOR);
        let fewer: Vec<&str> = refs(&nodes).into_iter().filter(|n| *n != "n-42").collect();
        let after = assign(&refs(&streams), &fewer, LOAD_FACTOR);
        let moved = streams
            .iter()
            .filter(|s| before[s.as_str()] != after[s.as_str()])
            .count();
        assert!(moved as f64 <= 1.2 * 10_000.0 / 100.0, "moved {moved}");
        // Its own streams all moved; nothing went to the node that left.
        assert!(after.values().all(|n| *n != "n-42"));
    }

    #[test]
    fn no_nodes_no_owners_and_one_node_takes_all() {
        assert!(assign(&["a", "b"], &[], LOAD_FACTOR).is_empty());
        let one = assign(&["a", "b", "c"], &["solo"], LOAD_FACTOR);
        assert!(one.values().all(|n| *n == "solo"));
    }
}
