//! The node monitor's probes: `PING` to one node, and the slot map as one node sees it.

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, Value};

use super::ClusterNodes;
use super::keys::KeySpecs;
use super::view::{Probe, Shard};
use crate::sync::lock;

impl ClusterNodes {
    /// How `node` answers `PING` within the probe timeout (an error reply is an answer
    /// too).
    pub(super) async fn probe(&self, node: &str) -> Probe {
        let kept = lock(&self.probes).get(node).cloned();
        let mut conn = match kept {
            Some(c) => c,
            None => match self.connect(node).await {
                Ok(c) => c,
                Err(p) => return p,
            },
        };
        let ping = redis::cmd("PING");
        let answer =
            tokio::time::timeout(self.probe_timeout, ping.query_async::<Value>(&mut conn)).await;
        let probe = match answer {
            Ok(Ok(_)) => Probe::Answered,
            Ok(Err(e)) if e.code().is_some() => Probe::Answered,
            Ok(Err(e)) if e.is_timeout() => Probe::Silent,
            Ok(Err(_)) => Probe::Refused,
            Err(_elapsed) => Probe::Silent,
        };
        let mut probes = lock(&self.probes);
        if probe == Probe::Answered {
            probes.insert(node.to_owned(), conn);
        } else {
            probes.remove(node);
        }
        probe
    }

    /// A probe connection to `node`, or how it failed.
    async fn connect(&self, node: &str) -> Result<MultiplexedConnection, Probe> {
        let info = self.info(node).ok_or(Probe::Refused)?;
        let client = (self.make_probe)(info).map_err(|_| Probe::Refused)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.probe_timeout))
            .set_response_timeout(Some(self.probe_timeout));
        let connect = client.get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(self.probe_timeout, connect).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) if e.is_timeout() => Err(Probe::Silent),
            Ok(Err(_)) => Err(Probe::Refused),
            Err(_elapsed) => Err(Probe::Silent),
        }
    }

    /// How to reach `node`: a configured node as configured, another like the first one
    /// (credentials, TLS) at its own address.
    fn info(&self, node: &str) -> Option<ConnectionInfo> {
        if let Some(i) = self.seeds.iter().position(|s| s == node) {
            return Some(self.infos[i].clone());
        }
        let (host, port) = split(node)?;
        let first = self.infos.first()?;
        let addr = match first.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        Some(first.clone().set_addr(addr))
    }

    /// Where each command's key is, as `node` says (`COMMAND`), if it answers in time.
    pub(super) async fn key_specs(&self, node: &str) -> Option<KeySpecs> {
        let mut conn = lock(&self.probes).get(node).cloned()?;
        let cmd = redis::cmd("COMMAND");
        // Some two hundred entries: more time than a probe.
        let reply =
            tokio::time::timeout(self.probe_timeout * 4, cmd.query_async::<Value>(&mut conn))
                .await
                .ok()?
                .ok()?;
        KeySpecs::parse(&reply)
    }

    /// The slot map as `node` sees it, if it answers in time.
    pub(super) async fn slots(&self, node: &str) -> Option<Vec<Shard>> {
        let mut conn = lock(&self.probes).get(node).cloned()?;
        let cmd = redis::cmd("CLUSTER").arg("SLOTS").clone();
        let reply = tokio::time::timeout(self.probe_timeout, cmd.query_async::<Value>(&mut conn))
            .await
            .ok()?
            .ok()?;
        let (host, _) = split(node)?;
        parse_slots(&reply, &host)
    }
}

/// The masters and replicas of a `CLUSTER SLOTS` reply; `asked` is the host of the node
/// that gave it, for entries that leave their host out.
fn parse_slots(reply: &Value, asked: &str) -> Option<Vec<Shard>> {
    let Value::Array(entries) = reply else {
        return None;
    };
    let mut shards = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(fields) = entry else {
            return None;
        };
        let [Value::Int(start), Value::Int(end), master, replicas @ ..] = fields.as_slice() else {
            return None;
        };
        shards.push(Shard {
            start: u16::try_from(*start).ok()?,
            end: u16::try_from(*end).ok()?,
            master: node(master, asked)?,
            replicas: replicas.iter().filter_map(|r| node(r, asked)).collect(),
        });
    }
    Some(shards)
}

/// One node of a `CLUSTER SLOTS` entry, `host:port`: `asked` for an empty or unknown
/// (`?`) host, `None` for an entry of another shape.
fn node(entry: &Value, asked: &str) -> Option<String> {
    let Value::Array(fields) = entry else {
        return None;
    };
    let [host, Value::Int(port), ..] = fields.as_slice() else {
        return None;
    };
    let host = match host {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Nil => String::new(),
        _ => return None,
    };
    let host = if host.is_empty() || host == "?" {
        asked.to_owned()
    } else {
        host
    };
    Some(host_port(&host, *port))
}

/// `host:port`, as configured nodes are shown (`[v6]:port`).
fn host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The host and port of `host:port` (`[v6]:port` too).
pub(super) fn split(node: &str) -> Option<(String, u16)> {
    let (host, port) = node.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::parse_slots;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn slots_are_read_with_the_asked_host_for_entries_without_one() {
        let entry = |start, end, nodes: Vec<Value>| {
            let mut fields = vec![Value::Int(start), Value::Int(end)];
            fields.extend(nodes);
            Value::Array(fields)
        };
        let reply = Value::Array(vec![
            entry(
                0,
                5460,
                vec![node("10.0.0.1", 7000), node("10.0.0.2", 7000)],
            ),
            entry(
                5461,
                16383,
                vec![node("", 7001), node("?", 7002), node("10.0.0.3", 7003)],
            ),
        ]);
        let shards = parse_slots(&reply, "10.0.0.9").expect("a map");
        let masters: Vec<&str> = shards.iter().map(|s| s.master.as_str()).collect();
        assert_eq!(masters, ["10.0.0.1:7000", "10.0.0.9:7001"]);
        assert_eq!(shards[0].replicas, ["10.0.0.2:7000"]);
        assert_eq!(shards[1].replicas, ["10.0.0.9:7002", "10.0.0.3:7003"]);
        assert_eq!(parse_slots(&Value::Nil, "h"), None);
        let no_master = Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(1)])]);
        assert_eq!(parse_slots(&no_master, "h"), None);
    }
}
