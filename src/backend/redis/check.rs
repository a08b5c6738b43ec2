//! The health check of a Redis connection.

use std::time::Duration;

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{RedisResult, Value};

use super::errors::classify;
use super::{ManagerInner, RedisConnection};
use crate::error::{Result, Step};

/// The health check of a Redis connection: `PING` to a server; for a cluster, `CLUSTER
/// INFO` on one of its nodes, which must say `cluster_state:ok` (a cluster that lost a
/// shard refuses every command, as its nodes do).
pub(super) async fn check(m: &ManagerInner, conn: &mut RedisConnection) -> Result<()> {
    let limit = m.command_timeout.unwrap_or(Duration::MAX);
    let fail = |what, e| classify(&m.name, &m.topology.endpoint(), what, limit, e);
    if !m.topology.is_cluster() {
        let pong: RedisResult<Value> = redis::cmd("PING").query_async(conn).await;
        return pong.map(drop).map_err(|e| fail(Step::check("PING"), e));
    }
    let info = cluster_info(m, conn)
        .await
        .map_err(|e| fail(Step::check("CLUSTER INFO"), e))?;
    match cluster_state(&info) {
        Some("ok") => Ok(()),
        state => Err(fail(
            Step::check("CLUSTER INFO"),
            redis::RedisError::from((
                redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
                "the cluster is not serving every slot",
                format!("cluster_state:{}", state.unwrap_or("missing")),
            )),
        )),
    }
}

/// `CLUSTER INFO` from a node that answered the node monitor's last probe (one that
/// stopped answering would hold the check until `command_timeout`, and the connector
/// would be judged down for one node), or from any node before the monitor's first round.
async fn cluster_info(m: &ManagerInner, conn: &mut RedisConnection) -> RedisResult<String> {
    let cmd = redis::cmd("CLUSTER").arg("INFO").clone();
    let node = m.topology.nodes().and_then(|n| n.answering_node());
    let (Some((host, port)), Some(cluster)) = (node, conn.inner.cluster_mut()) else {
        return cmd.query_async(conn).await;
    };
    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
    let reply = cluster.route_command(cmd, route).await?;
    Ok(redis::from_redis_value(reply)?)
}

/// The `cluster_state` field of a `CLUSTER INFO` reply.
fn cluster_state(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix("cluster_state:"))
}

#[cfg(test)]
mod tests {
    use super::cluster_state;

    #[test]
    fn cluster_state_is_read_from_cluster_info() {
        let info = "cluster_enabled:1\r\ncluster_state:fail\r\ncluster_slots_assigned:16384\r\n";
        assert_eq!(cluster_state(info), Some("fail"));
        assert_eq!(cluster_state("cluster_state:ok\r\n"), Some("ok"));
        assert_eq!(cluster_state(""), None);
    }
}
