//! The health check of a Redis connection.

use std::time::Duration;

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
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(conn)
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
