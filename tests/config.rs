//! Loading and validating configuration: every rule, every format, errors by key path.

use std::io::Write;
use std::time::Duration;

use connhub::{ConfigErrors, Error, ManagerConfig};

fn errors(r: connhub::Result<ManagerConfig>) -> ConfigErrors {
    match r {
        Err(Error::InvalidConfig(e)) => e,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

fn yaml_errors(text: &str) -> ConfigErrors {
    errors(ManagerConfig::from_yaml_str(text))
}

fn assert_key(e: &ConfigErrors, key: &str) {
    assert!(e.has_key(key), "no error for {key}; got: {e}");
}

#[test]
fn full_yaml_loads_with_defaults_and_durations() {
    let cfg = ManagerConfig::from_yaml_str(
        r#"
defaults:
  connect_timeout: 2s
  health_check_interval: 30s
  auto_reconnect: true
  reconnect_interval: 500ms
  max_reconnect_attempts: 3
redis:
  cache:
    addr: 127.0.0.1:6379
    db: 2
    pool_size: 16
    min_idle_conns: 2
    max_idle_time: 5m
    max_lifetime: 1h
    command_timeout: 250ms
    password: s3cret
etcd:
  registry:
    endpoints: [127.0.0.1:2379, "http://127.0.0.2:2379"]
    dial_timeout: 3s
    connect_timeout: 9s
"#,
    )
    .unwrap();
    let r = &cfg.redis["cache"];
    assert_eq!(r.db, 2);
    assert_eq!(r.pool_size, 16);
    assert_eq!(r.min_idle_conns, 2);
    assert_eq!(r.max_idle_time, Some(Duration::from_secs(300)));
    assert_eq!(r.max_lifetime, Some(Duration::from_secs(3600)));
    assert_eq!(r.command_timeout, Some(Duration::from_millis(250)));
    assert_eq!(r.connector.connect_timeout, Duration::from_secs(2));
    assert_eq!(r.connector.max_reconnect_attempts, 3);
    assert_eq!(r.password.as_ref().unwrap().expose(), "s3cret");
    let e = &cfg.etcd["registry"];
    assert_eq!(e.endpoints.len(), 2);
    assert_eq!(e.connector.connect_timeout, Duration::from_secs(9));
    assert_eq!(e.connector.reconnect_interval, Duration::from_millis(500));
}

#[test]
fn toml_and_json_load_the_same() {
    let toml = ManagerConfig::from_toml_str(
        "[defaults]\nconnect_timeout = \"2s\"\n[redis.cache]\naddr = \"127.0.0.1:6379\"\npool_size = 4\n[etcd.reg]\nendpoints = [\"127.0.0.1:2379\"]\n",
    )
    .unwrap();
    let json = ManagerConfig::from_json_str(
        r#"{"defaults":{"connect_timeout":"2s"},"redis":{"cache":{"addr":"127.0.0.1:6379","pool_size":4}},"etcd":{"reg":{"endpoints":["127.0.0.1:2379"]}}}"#,
    )
    .unwrap();
    assert_eq!(toml, json);
    assert_eq!(toml.redis["cache"].pool_size, 4);
    assert_eq!(
        toml.redis["cache"].connector.connect_timeout,
        Duration::from_secs(2)
    );
}

#[test]
fn from_file_picks_the_format_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in [
        ("a.yaml", "redis:\n  c:\n    addr: h:1\n"),
        ("a.yml", "redis:\n  c:\n    addr: h:1\n"),
        ("a.toml", "[redis.c]\naddr = \"h:1\"\n"),
        ("a.json", r#"{"redis":{"c":{"addr":"h:1"}}}"#),
    ] {
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let cfg = ManagerConfig::from_file(&path).unwrap();
        assert_eq!(cfg.redis["c"].addr, "h:1", "{name}");
    }
    let bad = dir.path().join("a.ini");
    std::fs::write(&bad, "x").unwrap();
    let e = errors(ManagerConfig::from_file(&bad));
    assert!(e.to_string().contains("extension"), "{e}");
    let e = errors(ManagerConfig::from_file(dir.path().join("missing.yaml")));
    assert!(e.to_string().contains("cannot read"), "{e}");
}

#[test]
fn the_shipped_example_config_is_valid() {
    ManagerConfig::from_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/connhub.yaml"
    ))
    .unwrap();
}

#[test]
fn pool_size_zero_is_refused() {
    let e = yaml_errors("redis:\n  c:\n    pool_size: 0\netcd:\n  e:\n    pool_size: 0\n");
    assert_key(&e, "redis.c.pool_size");
    assert_key(&e, "etcd.e.pool_size");
}

#[test]
fn min_idle_above_pool_size_is_refused() {
    let e = yaml_errors("redis:\n  c:\n    pool_size: 2\n    min_idle_conns: 3\n");
    assert_key(&e, "redis.c.min_idle_conns");
}

#[test]
fn empty_or_malformed_addr_is_refused() {
    for addr in [
        "\"\"",
        "localhost",
        "localhost:abc",
        "h:0",
        "h:99999",
        "\"redis://u:p@h:1\"",
    ] {
        let e = yaml_errors(&format!("redis:\n  c:\n    addr: {addr}\n"));
        assert_key(&e, "redis.c.addr");
        assert!(!e.to_string().contains("u:p@"), "credentials echoed: {e}");
    }
}

#[test]
fn zero_timeouts_and_intervals_are_refused() {
    for key in [
        "connect_timeout",
        "health_check_interval",
        "reconnect_interval",
        "command_timeout",
        "max_idle_time",
        "max_lifetime",
    ] {
        let e = yaml_errors(&format!("redis:\n  c:\n    {key}: 0s\n"));
        assert_key(&e, &format!("redis.c.{key}"));
    }
    let e = yaml_errors("etcd:\n  e:\n    dial_timeout: 0s\n");
    assert_key(&e, "etcd.e.dial_timeout");
    let e = yaml_errors("defaults:\n  connect_timeout: 0ms\n");
    assert_key(&e, "defaults.connect_timeout");
}

#[test]
fn negative_and_non_numeric_values_are_refused() {
    let e =
        yaml_errors("redis:\n  c:\n    pool_size: -1\n    db: many\n    connect_timeout: soon\n");
    assert_key(&e, "redis.c.pool_size");
    assert_key(&e, "redis.c.db");
    assert_key(&e, "redis.c.connect_timeout");
    let e = yaml_errors("defaults:\n  max_reconnect_attempts: -3\n");
    assert_key(&e, "defaults.max_reconnect_attempts");
}

#[test]
fn empty_etcd_endpoints_are_refused() {
    let e = yaml_errors("etcd:\n  e:\n    endpoints: []\n");
    assert_key(&e, "etcd.e.endpoints");
    let e = yaml_errors("etcd:\n  e:\n    endpoints: [\"nohost\"]\n");
    assert_key(&e, "etcd.e.endpoints[0]");
}

#[test]
fn missing_tls_files_are_refused() {
    let e = yaml_errors(
        "redis:\n  c:\n    tls:\n      ca_file: /no/such/ca.pem\netcd:\n  e:\n    tls:\n      cert_file: /no/such/cert.pem\n      key_file: /no/such/key.pem\n",
    );
    assert_key(&e, "redis.c.tls.ca_file");
    assert_key(&e, "etcd.e.tls.cert_file");
    assert_key(&e, "etcd.e.tls.key_file");
}

#[test]
fn names_are_unique_across_kinds() {
    let e = yaml_errors("redis:\n  shared: {}\netcd:\n  shared: {}\n");
    assert_key(&e, "etcd.shared");
    let e = yaml_errors("redis:\n  \"\": {}\n");
    assert!(e.to_string().contains("name must not be empty"), "{e}");
}

#[test]
fn unknown_keys_are_refused_at_every_level() {
    let e = yaml_errors(
        "redis:\n  c:\n    pool_sise: 16\n    tls:\n      enabeld: true\ndefaults:\n  conect_timeout: 1s\netcd:\n  e:\n    endpoint: [h:1]\nredsi: {}\n",
    );
    assert_key(&e, "redis.c.pool_sise");
    assert_key(&e, "redis.c.tls.enabeld");
    assert_key(&e, "defaults.conect_timeout");
    assert_key(&e, "etcd.e.endpoint");
    assert_key(&e, "redsi");
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = yaml_errors(
        "redis:\n  a:\n    pool_size: 0\n    addr: \"\"\n    connect_timeout: 0s\n    pool_sise: 3\n  b:\n    db: -1\netcd:\n  c:\n    endpoints: []\n",
    );
    for key in [
        "redis.a.pool_size",
        "redis.a.addr",
        "redis.a.connect_timeout",
        "redis.a.pool_sise",
        "redis.b.db",
        "etcd.c.endpoints",
    ] {
        assert_key(&e, key);
    }
    assert!(e.issues().len() >= 6);
}

#[test]
fn malformed_documents_are_clear_errors() {
    let e = yaml_errors("redis: [unclosed\n");
    assert!(e.to_string().contains("cannot parse"), "{e}");
    let e = yaml_errors("- a list\n");
    assert!(e.to_string().contains("map"), "{e}");
    let e = yaml_errors("redis: 5\n");
    assert_key(&e, "redis");
}

#[test]
fn secrets_do_not_print() {
    let cfg = ManagerConfig::from_yaml_str(
        "redis:\n  c:\n    password: very-secret-1\netcd:\n  e:\n    username: u\n    password: very-secret-2\n",
    )
    .unwrap();
    let debug = format!("{cfg:?} {:?} {:?}", cfg.redis["c"], cfg.etcd["e"]);
    let json = serde_json::to_string(&cfg).unwrap();
    for text in [debug, json] {
        assert!(!text.contains("very-secret"), "{text}");
        assert!(text.contains("***"));
    }
}

#[test]
fn programmatic_configs_are_validated_too() {
    let mut cfg = ManagerConfig::default();
    let r = connhub::RedisConfig {
        pool_size: 0,
        ..Default::default()
    };
    cfg.redis.insert("c".into(), r);
    let e = match cfg.validate() {
        Err(Error::InvalidConfig(e)) => e,
        other => panic!("{other:?}"),
    };
    assert_key(&e, "redis.c.pool_size");
}

#[test]
fn sentinel_and_cluster_blocks_load() {
    let cfg = ManagerConfig::from_yaml_str(
        r#"
redis:
  cache:
    sentinel:
      master_name: mymaster
      addrs: [10.0.0.1:26379, "redis://10.0.0.2:26379"]
      password: sentinel-secret
    password: data-secret
    db: 2
  sessions:
    cluster:
      nodes: [10.0.0.1:7000, 10.0.0.2:7000]
      read_from_replicas: true
"#,
    )
    .unwrap();
    let s = cfg.redis["cache"].sentinel.as_ref().unwrap();
    assert_eq!(s.master_name, "mymaster");
    assert_eq!(s.addrs.len(), 2);
    let c = cfg.redis["sessions"].cluster.as_ref().unwrap();
    assert!(c.read_from_replicas);
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("secret"), "{shown}");
}

#[test]
fn exactly_one_topology_is_accepted() {
    // addr next to a topology, even the default address written out.
    let e = yaml_errors(
        "redis:\n  x:\n    addr: 10.0.0.1:6379\n    sentinel: {master_name: m, addrs: [h:1]}\n",
    );
    assert_key(&e, "redis.x.addr");
    let e = yaml_errors("redis:\n  x:\n    addr: 127.0.0.1:6379\n    cluster: {nodes: [h:1]}\n");
    assert_key(&e, "redis.x.addr");
    // Both topologies.
    let e = yaml_errors(
        "redis:\n  x:\n    sentinel: {master_name: m, addrs: [h:1]}\n    cluster: {nodes: [h:1]}\n",
    );
    assert_key(&e, "redis.x.cluster");
}

#[test]
fn invalid_topology_blocks_are_refused_by_key() {
    let e = yaml_errors("redis:\n  x:\n    sentinel: {addrs: []}\n");
    assert_key(&e, "redis.x.sentinel.master_name");
    assert_key(&e, "redis.x.sentinel.addrs");
    let e = yaml_errors("redis:\n  x:\n    sentinel: {master_name: m, addrs: [nope, 'h:1/2']}\n");
    assert_key(&e, "redis.x.sentinel.addrs[0]");
    assert_key(&e, "redis.x.sentinel.addrs[1]");
    let e = yaml_errors("redis:\n  x:\n    db: 3\n    cluster: {nodes: [h:1]}\n");
    assert_key(&e, "redis.x.db");
    let e = yaml_errors("redis:\n  x:\n    cluster: {nodes: []}\n");
    assert_key(&e, "redis.x.cluster.nodes");
    let e = yaml_errors("redis:\n  x:\n    cluster: {nodes: ['h:1', 'rediss://h:2']}\n");
    assert_key(&e, "redis.x.cluster.nodes[1]");
    // A typo inside a block is named, not ignored.
    let e = yaml_errors("redis:\n  x:\n    sentinel: {master_name: m, addrs: [h:1], pasword: p}\n");
    assert!(e.to_string().contains("pasword"), "{e}");
    assert!(
        e.issues()
            .iter()
            .any(|i| i.key.starts_with("redis.x.sentinel")),
        "{e}"
    );
}

#[test]
fn programmatic_topologies_are_validated_too() {
    let c = connhub::RedisConfig {
        addr: "10.0.0.1:6379".into(),
        cluster: Some(connhub::config::ClusterConfig {
            nodes: vec!["h:1".into()],
            read_from_replicas: false,
        }),
        db: 1,
        ..connhub::RedisConfig::default()
    };
    let mut cfg = ManagerConfig::default();
    cfg.redis.insert("x".into(), c);
    let e = errors(cfg.validate().map(|()| ManagerConfig::default()));
    assert_key(&e, "redis.x.addr");
    assert_key(&e, "redis.x.db");
}

#[test]
fn client_name_and_leak_detection_load_and_are_checked() {
    let cfg = ManagerConfig::from_yaml_str(
        "defaults:\n  leak_detection_threshold: 30s\nredis:\n  cache:\n    client_name: checkout-api\n",
    )
    .unwrap();
    let cache = &cfg.redis["cache"];
    assert_eq!(cache.client_name.as_deref(), Some("checkout-api"));
    assert_eq!(
        cache.connector.leak_detection_threshold,
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        ManagerConfig::from_yaml_str("redis:\n  cache: {}\n")
            .unwrap()
            .redis["cache"]
            .connector
            .leak_detection_threshold,
        None,
        "off by default"
    );

    let e = yaml_errors(
        "redis:\n  spaced:\n    client_name: my api\n  empty:\n    client_name: \"\"\n  timed:\n    leak_detection_threshold: 0s\n  clustered:\n    client_name: api\n    cluster:\n      nodes: [127.0.0.1:7000]\n",
    );
    assert_key(&e, "redis.spaced.client_name");
    assert_key(&e, "redis.empty.client_name");
    assert_key(&e, "redis.timed.leak_detection_threshold");
    assert_key(&e, "redis.clustered.client_name");
    assert_eq!(e.issues().len(), 4, "{e}");
}

/// The configuration files in the repository, outside `target/`.
fn config_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" {
                config_files(&path, out);
            }
        } else if ["yaml", "yml", "json"]
            .iter()
            .any(|ext| name.ends_with(&format!(".{ext}")))
            || (name.ends_with(".toml") && name != "Cargo.toml" && name != "rustfmt.toml")
        {
            out.push(path);
        }
    }
}

/// Every configuration file in the repository is loaded here, so none can go stale: the
/// examples must load, and each `bad-*` file must be refused.
#[test]
fn every_config_file_in_the_repository_loads_or_is_refused_as_meant() {
    let mut files = Vec::new();
    config_files(std::path::Path::new(env!("CARGO_MANIFEST_DIR")), &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("examples/connhub.yaml")),
        "{files:?}"
    );
    for file in &files {
        let bad = file
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("bad-"));
        match (ManagerConfig::from_file(file), bad) {
            (Ok(_), false) | (Err(Error::InvalidConfig(_)), true) => {}
            (result, _) => panic!("{}: {result:?}", file.display()),
        }
    }
}

/// A refused config reads as prose: one problem a line, each with its key, a suggestion
/// for a typo, and what a duration looks like; no `Debug` form.
#[test]
fn a_refused_config_reads_as_prose() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let err = ManagerConfig::from_file(dir.join("bad-config.yaml")).unwrap_err();
    let expected = std::fs::read_to_string(dir.join("bad-config.expected")).unwrap();
    // What the demo prints: `error: ` and the error.
    assert_eq!(format!("error: {err}\n"), expected);
    // One problem stays on one line.
    let one = yaml_errors("redis:\n  a:\n    addr: h:1\n    pool_sise: 3\n");
    assert_eq!(
        one.to_string(),
        "redis.a.pool_sise: unknown key (did you mean pool_size?)"
    );
    // A key far from every known one gets no guess.
    let far = yaml_errors("redis:\n  a:\n    addr: h:1\n    colour: blue\n");
    assert_eq!(far.to_string(), "redis.a.colour: unknown key");
}
