//! One lease round as a pure function: what this replica holds, who is
//! alive, who owns what, and so what to take and what to let go.

use std::collections::{BTreeMap, BTreeSet};

/// What the bucket says at the start of a round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Upstream name -> the node holding its lease.
    pub owners: BTreeMap<String, String>,
    /// Nodes whose `nodes.<node>` key is alive (this one included once it
    /// has renewed).
    pub nodes: BTreeSet<String>,
    /// Upstream name -> the link state its owner wrote (`state.<name>`).
    pub states: BTreeMap<String, String>,
}

/// What one replica does in a round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Free upstreams to try to take, in the order to try them.
    pub take: Vec<String>,
    /// Held upstreams above the fair share, to let go (delete).
    pub release: Vec<String>,
}

/// `ceil(upstreams / live replicas)`: the most one replica takes while the
/// others are alive (all of them when it is alone).
pub fn fair_share(upstreams: usize, live: usize) -> usize {
    upstreams.div_ceil(live.max(1))
}

/// The round of node `me` over `upstreams` (config order) given `view`.
/// Free upstreams are tried starting at an offset derived from the node
/// name, so replicas starting together do not all race for the same ones.
pub fn plan(me: &str, upstreams: &[String], view: &View) -> Plan {
    let live = view.nodes.len() + usize::from(!view.nodes.contains(me));
    let share = fair_share(upstreams.len(), live);
    let mine: Vec<&String> = upstreams.iter().filter(|u| view.owners.get(*u).map(String::as_str) == Some(me)).collect();
    if mine.len() > share {
        return Plan { take: Vec::new(), release: mine[share..].iter().map(|u| u.to_string()).collect() };
    }
    let free: Vec<&String> = upstreams.iter().filter(|u| !view.owners.contains_key(*u)).collect();
    let room = share - mine.len();
    if free.is_empty() || room == 0 {
        return Plan::default();
    }
    let start = offset(me) % free.len();
    let take = free.iter().cycle().skip(start).take(free.len().min(room)).map(|u| u.to_string()).collect();
    Plan { take, release: Vec::new() }
}

/// A stable number from a node name (FNV-1a), the same in every replica.
fn offset(node: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("u{i}")).collect()
    }

    fn view(owners: &[(&str, &str)], nodes: &[&str]) -> View {
        View {
            owners: owners.iter().map(|(u, n)| (u.to_string(), n.to_string())).collect(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            states: BTreeMap::new(),
        }
    }

    /// ceil(upstreams / live), and all of them when alone.
    #[test]
    fn fair_shares() {
        for (ups, live, want) in [(6, 3, 2), (7, 3, 3), (6, 1, 6), (6, 0, 6), (0, 3, 0), (2, 5, 1)] {
            assert_eq!(fair_share(ups, live), want, "{ups} / {live}");
        }
    }

    /// Alone, a node takes everything free; with others alive, its share.
    #[test]
    fn takes_its_share_of_free_upstreams() {
        let ups = names(6);
        let p = plan("a", &ups, &view(&[], &[]));
        assert_eq!(p.take.len(), 6);
        assert!(p.release.is_empty());
        let p = plan("a", &ups, &view(&[("u1", "b"), ("u2", "b")], &["a", "b", "c"]));
        assert_eq!(p.take.len(), 2);
        assert!(p.take.iter().all(|u| u != "u1" && u != "u2"), "{p:?}");
    }

    /// A node above its share lets the excess go once others are alive.
    #[test]
    fn releases_the_excess() {
        let ups = names(6);
        let all_a: Vec<(&str, &str)> = ["u1", "u2", "u3", "u4", "u5", "u6"].iter().map(|u| (*u, "a")).collect();
        let p = plan("a", &ups, &view(&all_a, &["a", "b"]));
        assert_eq!(p.release, ["u4", "u5", "u6"]);
        assert!(p.take.is_empty());
        let p = plan("a", &ups, &view(&all_a, &["a"]));
        assert_eq!(p, Plan::default(), "alone it keeps all");
    }

    /// Nothing to do at the share, or when nothing is free.
    #[test]
    fn steady_state() {
        let ups = names(4);
        let v = view(&[("u1", "a"), ("u2", "a"), ("u3", "b"), ("u4", "b")], &["a", "b"]);
        assert_eq!(plan("a", &ups, &v), Plan::default());
        assert_eq!(plan("c", &ups, &v), Plan::default(), "a newcomer waits for releases");
    }
}
