//! Reads on replicas that answer: the read routing a cluster connection gets when
//! `read_from_replicas` is on. The redis crate sends each read to a random replica of
//! its shard; a replica that freezes (a stopped process, a machine swapping) keeps its
//! connections open and answers nothing, so every caller whose read lands there waits
//! `command_timeout`, and with callers looping over keys soon every caller does.
//! Measured against a testkit cluster with one replica frozen under 16 readers: no read
//! at all succeeded for 4 s, and 16 failed after 5 s.
//!
//! So while the node monitor finds replicas silent, reads go round robin to the other
//! replicas of the shard, or to its master when none answers. The crate's slot map
//! keeps a frozen replica after the cluster itself has marked it failed (it reads the
//! map again only on a redirect or a lost connection), so reads keep away from a node
//! for as long as it is silent, whatever the cluster's map says meanwhile. With no node
//! silent this is the crate's own random choice after one atomic load.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use redis::cluster::NodeAddress;
use redis::cluster_read_routing::{
    ReadCandidates, ReadRoutingStrategy, ReadRoutingStrategyFactory, Replicas,
};

use super::probe::split;
use crate::sync::lock;

/// The replicas reads keep away from, shared by the node monitor (which sets them) and
/// every cluster connection's read routing (which reads them).
#[derive(Debug, Default)]
struct Avoided {
    /// True while `nodes` is not empty.
    any: AtomicBool,
    /// `(host, port)` each.
    nodes: Mutex<Vec<(String, u16)>>,
    /// Turns the round robin among the replicas that answer.
    turn: AtomicUsize,
}

/// The read routing of a connector's cluster connections: hands each connection a
/// [`Reader`] over the same replicas to avoid.
#[derive(Debug, Clone, Default)]
pub(in crate::backend::redis) struct ReadTargets(Arc<Avoided>);

impl ReadTargets {
    /// From now on reads keep away from `silent` (`host:port` each). True when a node
    /// was not kept away from before.
    pub(super) fn avoid(&self, silent: &[&str]) -> bool {
        let nodes: Vec<(String, u16)> = silent.iter().filter_map(|n| split(n)).collect();
        let mut avoided = lock(&self.0.nodes);
        let more = nodes.iter().any(|n| !avoided.contains(n));
        self.0.any.store(!nodes.is_empty(), Ordering::Release);
        *avoided = nodes;
        more
    }
}

impl ReadRoutingStrategyFactory for ReadTargets {
    fn create_strategy(&self) -> Box<dyn ReadRoutingStrategy> {
        Box::new(Reader(self.0.clone()))
    }
}

/// One cluster connection's read routing.
struct Reader(Arc<Avoided>);

impl ReadRoutingStrategy for Reader {
    fn route_read<'a>(&self, candidates: &ReadCandidates<'a>) -> &'a NodeAddress {
        let (replicas, master) = match candidates {
            ReadCandidates::AnyNode(c) => (c.replicas(), Some(c.primary())),
            ReadCandidates::ReplicasOnly(c) => (c.replicas(), None),
        };
        if !self.0.any.load(Ordering::Acquire) {
            return replicas.choose_random();
        }
        let avoided = lock(&self.0.nodes);
        let turn = self.0.turn.fetch_add(1, Ordering::Relaxed);
        pick(replicas, master, &avoided, turn)
    }
}

/// The `turn`-th of `replicas` not `avoided`; when every one is, the master (`None`: a
/// read that must go to a replica goes to any of them).
fn pick<'a>(
    replicas: &Replicas<'a>,
    master: Option<&'a NodeAddress>,
    avoided: &[(String, u16)],
    turn: usize,
) -> &'a NodeAddress {
    let answers = |r: &&NodeAddress| {
        !avoided
            .iter()
            .any(|(host, port)| r.host() == host && r.port() == *port)
    };
    let answering = replicas.iter().filter(answers).count();
    if answering > 0
        && let Some(r) = replicas.iter().filter(answers).nth(turn % answering)
    {
        return r;
    }
    master.unwrap_or_else(|| replicas.choose_random())
}

#[cfg(test)]
mod tests {
    use redis::cluster::NodeAddress;
    use redis::cluster_read_routing::Replicas;

    use super::{ReadTargets, pick};

    fn avoided(nodes: &[(&str, u16)]) -> Vec<(String, u16)> {
        nodes.iter().map(|(h, p)| ((*h).to_owned(), *p)).collect()
    }

    /// Reads go round robin to the replicas that answer; to the master when none does,
    /// or to any replica when the read must go to one.
    #[test]
    fn reads_go_to_replicas_that_answer_then_to_the_master() {
        let master = NodeAddress::new("10.0.0.1", 7000);
        let nodes = [
            NodeAddress::new("10.0.0.2", 7000),
            NodeAddress::new("10.0.0.3", 7000),
            NodeAddress::new("10.0.0.4", 7000),
        ];
        let replicas = Replicas::new(&nodes).expect("replicas");
        let one_silent = avoided(&[("10.0.0.3", 7000)]);
        let picked: Vec<&NodeAddress> = (0..4)
            .map(|turn| pick(&replicas, Some(&master), &one_silent, turn))
            .collect();
        assert_eq!(picked, [&nodes[0], &nodes[2], &nodes[0], &nodes[2]]);
        let all_silent = avoided(&[("10.0.0.2", 7000), ("10.0.0.3", 7000), ("10.0.0.4", 7000)]);
        assert_eq!(pick(&replicas, Some(&master), &all_silent, 0), &master);
        let some = pick(&replicas, None, &all_silent, 0);
        assert!(nodes.contains(some), "{some:?}");
        // Another port on the same host is another node.
        let other_port = avoided(&[("10.0.0.2", 7001)]);
        assert_eq!(pick(&replicas, Some(&master), &other_port, 0), &nodes[0]);
    }

    /// What the monitor sets is what every connection's routing sees, and clearing it
    /// ends the avoiding.
    #[test]
    fn avoided_replicas_are_shared_and_cleared() {
        let targets = ReadTargets::default();
        assert!(targets.avoid(&["10.0.0.3:7000", "[::1]:7001"]));
        assert!(targets.0.any.load(std::sync::atomic::Ordering::Acquire));
        assert_eq!(
            *targets.0.nodes.lock().expect("lock"),
            avoided(&[("10.0.0.3", 7000), ("::1", 7001)])
        );
        assert!(!targets.avoid(&["10.0.0.3:7000"]), "no node more");
        assert!(!targets.avoid(&[]));
        assert!(!targets.0.any.load(std::sync::atomic::Ordering::Acquire));
    }
}
