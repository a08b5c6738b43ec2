//! Parsing of `host:port` addresses and `scheme://host:port` URLs.

/// A parsed address: host and port, never credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostPort {
    pub host: String,
    pub port: u16,
    pub db: Option<u32>,
    /// The address asked for TLS by its scheme (`rediss://`, `https://`).
    pub tls: bool,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `host:port`, `[v6]:port`, `redis://host:port[/db]` or `rediss://host:port[/db]`.
pub(crate) fn parse_redis(addr: &str) -> Result<HostPort, String> {
    let tls = addr.starts_with("rediss://");
    let rest = strip_scheme(
        addr,
        &["redis://", "rediss://"],
        &["unix://", "redis+unix://"],
    )?;
    let (hostport, db) = match rest.split_once('/') {
        Some((hp, "")) => (hp, None),
        Some((hp, db)) => {
            let db = db
                .parse::<u32>()
                .map_err(|_| format!("{addr:?}: database {db:?} after '/' is not a number"))?;
            (hp, Some(db))
        }
        None => (rest, None),
    };
    let mut hp = parse_host_port(addr, hostport)?;
    hp.db = db;
    hp.tls = tls;
    Ok(hp)
}

/// `host:port`, `http://host:port` or `https://host:port`.
pub(crate) fn parse_etcd(endpoint: &str) -> Result<HostPort, String> {
    let tls = endpoint.starts_with("https://");
    let rest = strip_scheme(endpoint, &["http://", "https://"], &[])?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut hp = parse_host_port(endpoint, rest)?;
    hp.tls = tls;
    Ok(hp)
}

fn strip_scheme<'a>(
    addr: &'a str,
    accepted: &[&str],
    unsupported: &[&str],
) -> Result<&'a str, String> {
    if addr.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if addr.trim() != addr {
        return Err(format!("{addr:?} has leading or trailing spaces"));
    }
    for s in unsupported {
        if addr.starts_with(s) {
            return Err(format!("scheme {s} is not supported; use host:port"));
        }
    }
    for s in accepted {
        if let Some(rest) = addr.strip_prefix(s) {
            return Ok(rest);
        }
    }
    if let Some((scheme, _)) = addr.split_once("://") {
        return Err(format!("unknown scheme {scheme:?}; expected host:port"));
    }
    Ok(addr)
}

fn parse_host_port(original: &str, s: &str) -> Result<HostPort, String> {
    if s.contains('@') {
        return Err(
            "credentials in the address are not accepted; use username and password".into(),
        );
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{original:?}: missing ']' after IPv6 address"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("{original:?}: expected host:port"))?;
        (host, port)
    } else {
        s.rsplit_once(':')
            .ok_or_else(|| format!("{original:?}: expected host:port"))?
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(format!("{original:?}: host is missing or malformed"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{original:?}: port {port:?} is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err(format!("{original:?}: port must not be 0"));
    }
    Ok(HostPort {
        host: host.to_owned(),
        port,
        db: None,
        tls: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_addresses() {
        let hp = parse_redis("127.0.0.1:6379").unwrap();
        assert_eq!(
            (hp.host.as_str(), hp.port, hp.db),
            ("127.0.0.1", 6379, None)
        );
        let hp = parse_redis("redis://cache.local:7000/3").unwrap();
        assert_eq!(
            (hp.host.as_str(), hp.port, hp.db),
            ("cache.local", 7000, Some(3))
        );
        let hp = parse_redis("[::1]:6379").unwrap();
        assert_eq!(hp.to_string(), "[::1]:6379");
        for bad in [
            "",
            " ",
            "localhost",
            "localhost:",
            "localhost:abc",
            "localhost:0",
            ":6379",
            "localhost:70000",
            "redis://u:p@h:1",
            "ftp://h:1",
            "h:1/x",
            "[::1",
            " h:1",
        ] {
            assert!(parse_redis(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn etcd_endpoints() {
        assert_eq!(parse_etcd("http://127.0.0.1:2379").unwrap().port, 2379);
        assert_eq!(parse_etcd("10.0.0.1:2379").unwrap().host, "10.0.0.1");
        assert!(parse_etcd("https://h:1").unwrap().tls);
        assert!(parse_redis("rediss://h:1").unwrap().tls);
        assert!(parse_etcd("ftp://h:1").is_err());
        assert!(parse_etcd("h").is_err());
    }
}
