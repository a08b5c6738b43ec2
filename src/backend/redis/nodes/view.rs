//! What the node monitor knows of a Redis Cluster: which master serves which slots, and
//! which nodes answer. Pure: the monitor feeds it each round's probes and slot map, and
//! acts on the [`Change`] it gets back.

use std::collections::BTreeSet;

/// A run of slots, the master serving it and its replicas, as `CLUSTER SLOTS` gives them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Shard {
    pub(super) start: u16,
    pub(super) end: u16,
    /// `host:port`.
    pub(super) master: String,
    /// `host:port` each, in the server's order.
    pub(super) replicas: Vec<String>,
}

/// How a node answered its probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Probe {
    Answered,
    /// Refused or reset: the crate's own connection fails at once too, and it retries
    /// and follows the failover itself.
    Refused,
    /// No answer in time (a frozen process, a machine gone from the network): the
    /// crate's connection waits for it until `command_timeout`.
    Silent,
}

/// The monitor's view of the cluster.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct View {
    /// The masters by slot run, sorted; empty until a node first answered `CLUSTER SLOTS`.
    pub(super) shards: Vec<Shard>,
    /// The nodes that did not answer their last probe, by `host:port`.
    pub(super) down: BTreeSet<String>,
    /// Those of them that did not answer at all: [`Probe::Silent`].
    pub(super) silent: BTreeSet<String>,
    /// Those silent nodes that served reads, as replicas in a map read while they were
    /// silent: a client's own map may keep sending reads to one after the cluster left
    /// it out of its map, so it stays here (and probed) until it answers.
    silent_readers: BTreeSet<String>,
}

/// What a round changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Change {
    /// Slots now have another master than in the last map read (a failover, or a
    /// resharding): a cluster connection made before reads the old map.
    pub(super) moved: bool,
    /// Nodes that stopped answering this round.
    pub(super) went_down: Vec<String>,
    /// Nodes that answer again.
    pub(super) came_back: Vec<String>,
}

impl View {
    /// The view after a round: `probes` says which nodes answered, `shards` is the slot
    /// map a node gave (`None` when none did: the last one stands).
    pub(super) fn next(
        &self,
        probes: &[(String, Probe)],
        shards: Option<Vec<Shard>>,
    ) -> (View, Change) {
        let (mut down, mut silent) = (self.down.clone(), self.silent.clone());
        let mut change = Change::default();
        for (node, probe) in probes {
            if *probe == Probe::Answered {
                silent.remove(node);
                if down.remove(node) {
                    change.came_back.push(node.clone());
                }
                continue;
            }
            if *probe == Probe::Silent {
                silent.insert(node.clone());
            } else {
                silent.remove(node);
            }
            if down.insert(node.clone()) {
                change.went_down.push(node.clone());
            }
        }
        let shards = match shards {
            Some(mut shards) => {
                shards.sort();
                // Slots moved when a run has another master; a replica joining or
                // leaving moves none.
                change.moved =
                    !self.shards.is_empty() && masters_of(&shards) != masters_of(&self.shards);
                shards
            }
            None => self.shards.clone(),
        };
        let is_replica = |n: &String| {
            [&self.shards, &shards]
                .iter()
                .any(|map| map.iter().any(|s| s.replicas.contains(n)))
        };
        let silent_readers = silent
            .iter()
            .filter(|n| self.silent_readers.contains(*n) || is_replica(n))
            .cloned()
            .collect();
        (
            View {
                shards,
                down,
                silent,
                silent_readers,
            },
            change,
        )
    }

    /// The masters serving slots that do not answer at all, `host:port`.
    pub(super) fn silent_masters(&self) -> Vec<&str> {
        self.masters()
            .filter(|m| self.silent.contains(*m))
            .collect()
    }

    /// The masters serving slots, each once.
    fn masters(&self) -> impl Iterator<Item = &str> {
        self.shards
            .iter()
            .map(|s| s.master.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
    }

    /// The master serving `slot` when it does not answer at all and, for a `read` (reads
    /// go to replicas), no replica of the slot answers either: a call for the slot
    /// would wait on it.
    pub(super) fn unanswered(&self, slot: u16, read: bool) -> Option<&str> {
        let shard = self.shard_of(slot)?;
        let served = read && shard.replicas.iter().any(|r| !self.silent.contains(r));
        (self.silent.contains(&shard.master) && !served).then_some(shard.master.as_str())
    }

    /// The nodes a read may be waiting on that do not answer at all, `host:port`: the
    /// [silent readers](View::silent_readers) and the silent masters serving slots.
    pub(super) fn silent_for_reads(&self) -> Vec<&str> {
        let mut nodes: BTreeSet<&str> = self.silent_readers.iter().map(String::as_str).collect();
        nodes.extend(self.silent_masters());
        nodes.into_iter().collect()
    }

    fn shard_of(&self, slot: u16) -> Option<&Shard> {
        // Sorted by start; runs do not overlap.
        let i = self.shards.partition_point(|s| s.start <= slot);
        let shard = self.shards.get(i.checked_sub(1)?)?;
        (slot <= shard.end).then_some(shard)
    }

    /// The nodes to probe: `seeds` (the configured nodes), every master serving slots,
    /// and with `replicas` (reads go to them) every replica and silent reader too.
    pub(super) fn to_probe(&self, seeds: &[String], replicas: bool) -> Vec<String> {
        let mut nodes: Vec<String> = seeds.to_vec();
        let readers = self
            .shards
            .iter()
            .flat_map(|s| &s.replicas)
            .chain(&self.silent_readers)
            .map(String::as_str)
            .filter(|_| replicas);
        let extra = self.masters().chain(readers);
        for n in extra {
            if !nodes.iter().any(|known| known == n) {
                nodes.push(n.to_owned());
            }
        }
        nodes
    }

    /// The indices of `seeds` not known down; every one when all are (a fresh
    /// connection then tries them all, as without a monitor).
    pub(super) fn answering(&self, seeds: &[String]) -> Vec<usize> {
        let up: Vec<usize> = (0..seeds.len())
            .filter(|&i| !self.down.contains(&seeds[i]))
            .collect();
        if up.is_empty() {
            (0..seeds.len()).collect()
        } else {
            up
        }
    }
}

/// Each run of slots with its master: what a failover or a resharding changes.
fn masters_of(shards: &[Shard]) -> Vec<(u16, u16, &str)> {
    shards
        .iter()
        .map(|s| (s.start, s.end, s.master.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{Change, Probe, Shard, View};

    fn shard(start: u16, end: u16, master: &str) -> Shard {
        Shard {
            start,
            end,
            master: master.to_owned(),
            replicas: Vec::new(),
        }
    }

    fn with_replicas() -> Vec<Shard> {
        let mut shards = three();
        for s in &mut shards {
            let (host, _) = s.master.split_once(':').expect("host:port");
            s.replicas = vec![format!("{host}:2")];
        }
        shards
    }

    fn probes(list: &[(&str, Probe)]) -> Vec<(String, Probe)> {
        list.iter().map(|(n, p)| ((*n).to_owned(), *p)).collect()
    }

    use Probe::{Answered, Refused, Silent};

    fn three() -> Vec<Shard> {
        vec![
            shard(0, 5460, "a:1"),
            shard(5461, 10922, "b:1"),
            shard(10923, 16383, "c:1"),
        ]
    }

    /// A master frozen, then failed over to its replica: down and silent at once, slots
    /// moved once the map says so, and no longer counted once it serves nothing.
    #[test]
    fn a_master_that_stops_answering_is_silent_until_its_slots_move() {
        let (v, c) = View::default().next(&probes(&[("a:1", Answered)]), Some(three()));
        assert_eq!(c, Change::default(), "the first map is no move");
        let (v, c) = v.next(
            &probes(&[("a:1", Silent), ("b:1", Answered)]),
            Some(three()),
        );
        assert_eq!(c.went_down, vec!["a:1".to_owned()]);
        assert!(!c.moved);
        assert_eq!(v.silent_masters(), ["a:1"]);
        // No node answered `CLUSTER SLOTS` this round: the map stands.
        let (v, c) = v.next(&probes(&[("a:1", Silent)]), None);
        assert_eq!(c, Change::default());
        assert_eq!(v.silent_masters(), ["a:1"]);
        let mut failed_over = three();
        failed_over[0].master = "a:2".to_owned();
        let (v, c) = v.next(
            &probes(&[("a:1", Silent), ("a:2", Answered)]),
            Some(failed_over),
        );
        assert!(c.moved);
        assert!(
            v.silent_masters().is_empty(),
            "the old master serves no slot"
        );
        let (v, c) = v.next(&probes(&[("a:1", Answered)]), None);
        assert_eq!(c.came_back, vec!["a:1".to_owned()]);
        assert!(v.down.is_empty() && v.silent.is_empty());
    }

    /// A master that refuses connections is down (fresh connections start elsewhere) but
    /// not silent: the crate's connection fails over from it by itself.
    #[test]
    fn a_refusing_master_is_down_but_not_silent() {
        let (v, _) = View::default().next(&probes(&[("a:1", Silent)]), Some(three()));
        let (v, c) = v.next(&probes(&[("a:1", Refused)]), None);
        assert!(c.went_down.is_empty(), "down already");
        assert!(v.down.contains("a:1"));
        assert!(v.silent_masters().is_empty());
    }

    /// The nodes probed are the seeds and every master, each once; a fresh connection
    /// starts from the seeds that answer, or from all of them when none does.
    #[test]
    fn probes_cover_seeds_and_masters_and_connections_start_from_answering_seeds() {
        let (v, _) = View::default().next(&probes(&[("a:1", Refused)]), Some(three()));
        let seeds = vec!["a:1".to_owned(), "x:1".to_owned()];
        assert_eq!(v.to_probe(&seeds, false), ["a:1", "x:1", "b:1", "c:1"]);
        assert_eq!(v.answering(&seeds), [1]);
        let (v, _) = v.next(&probes(&[("x:1", Silent)]), None);
        assert_eq!(v.answering(&seeds), [0, 1], "none answers: all of them");
    }

    /// Each slot's master is found by its run; a slot outside every run has none.
    #[test]
    fn a_slot_s_master_is_found_by_its_run() {
        let (v, _) = View::default().next(
            &probes(&[("a:1", Silent), ("c:1", Silent)]),
            Some(vec![shard(0, 99, "a:1"), shard(200, 16383, "c:1")]),
        );
        assert_eq!(v.unanswered(0, false), Some("a:1"));
        assert_eq!(v.unanswered(99, false), Some("a:1"));
        assert_eq!(v.unanswered(100, false), None);
        assert_eq!(v.unanswered(16383, false), Some("c:1"));
        assert_eq!(View::default().unanswered(5, false), None);
    }

    /// With reads on replicas, a read for a silent master's slots waits on nothing while
    /// a replica of the slot answers; a write still does.
    #[test]
    fn a_read_is_refused_only_when_no_replica_of_its_slot_answers() {
        let (v, _) = View::default().next(&probes(&[("a:1", Silent)]), Some(with_replicas()));
        assert_eq!(v.unanswered(0, false), Some("a:1"));
        assert_eq!(v.unanswered(0, true), None);
        let (v, _) = v.next(&probes(&[("a:2", Silent)]), None);
        assert_eq!(v.unanswered(0, true), Some("a:1"));
        let (v, _) = v.next(&[], Some(three()));
        assert_eq!(v.unanswered(0, true), Some("a:1"), "no replica at all");
    }

    /// A map read in another order is the same map.
    #[test]
    fn the_same_map_in_another_order_is_no_move() {
        let (v, _) = View::default().next(&[], Some(three()));
        let mut reversed = three();
        reversed.reverse();
        let (_, c) = v.next(&[], Some(reversed));
        assert!(!c.moved);
    }

    /// With reads on replicas, replicas are probed too; one that stops answering stays
    /// silent after the cluster left it out of the map, and a replica joining or
    /// leaving moves no slot.
    #[test]
    fn silent_replicas_stay_silent_and_replica_changes_move_no_slot() {
        let (v, _) = View::default().next(&[], Some(with_replicas()));
        let seeds = vec!["a:1".to_owned()];
        assert_eq!(v.to_probe(&seeds, false), ["a:1", "b:1", "c:1"]);
        assert_eq!(
            v.to_probe(&seeds, true),
            ["a:1", "b:1", "c:1", "a:2", "b:2", "c:2"]
        );
        let (v, c) = v.next(
            &probes(&[("b:2", Silent), ("a:2", Answered)]),
            Some(with_replicas()),
        );
        assert_eq!(c.went_down, vec!["b:2".to_owned()]);
        assert!(!c.moved);
        assert!(v.silent_masters().is_empty());
        assert!(v.silent.contains("b:2"));
        assert_eq!(v.silent_for_reads(), ["b:2"]);
        // The cluster marked it failed and left it out of the map: no slot moved, and
        // it is still a silent reader (a client's own map may still send reads to it),
        // still probed.
        let mut without = with_replicas();
        without[1].replicas.clear();
        let (v, c) = v.next(&probes(&[("b:2", Silent)]), Some(without));
        assert!(!c.moved);
        assert_eq!(v.silent_for_reads(), ["b:2"]);
        assert!(v.to_probe(&seeds, true).contains(&"b:2".to_owned()));
        let (v, c) = v.next(&probes(&[("b:2", Answered)]), None);
        assert_eq!(c.came_back, vec!["b:2".to_owned()]);
        assert!(v.silent.is_empty() && v.silent_for_reads().is_empty());
        assert!(!v.to_probe(&seeds, true).contains(&"b:2".to_owned()));
    }

    /// A configured node that is no replica (a seed whose host went dark) is silent, but
    /// no read waits on it; a silent master is one a read may wait on.
    #[test]
    fn only_replicas_and_masters_are_silent_for_reads() {
        let (v, _) = View::default().next(&[], Some(with_replicas()));
        let (v, _) = v.next(&probes(&[("x:9", Silent)]), None);
        assert!(v.silent.contains("x:9"));
        assert!(v.silent_for_reads().is_empty());
        let (v, _) = v.next(&probes(&[("a:1", Silent)]), None);
        assert_eq!(v.silent_for_reads(), ["a:1"]);
    }
}
