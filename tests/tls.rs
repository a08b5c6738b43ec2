//! TLS and mutual TLS against real redis-server and etcd, with certificates made at test
//! time; every bad input is a quick `Error::Tls` naming the connector.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use connhub::redis::AsyncCommands;
use connhub::testkit::{EtcdServer, RedisServer, ServerTls, TestCerts};
use connhub::{Error, EtcdConfig, Manager, RedisConfig, TlsConfig};

fn tls(ca: Option<PathBuf>, client: Option<(PathBuf, PathBuf)>) -> TlsConfig {
    TlsConfig {
        enabled: true,
        ca_file: ca,
        cert_file: client.as_ref().map(|c| c.0.clone()),
        key_file: client.map(|c| c.1),
        insecure_skip_verify: false,
    }
}

fn redis_config(server: &RedisServer, tls: TlsConfig) -> RedisConfig {
    let mut c = RedisConfig::new(server.tls_addr().unwrap());
    c.connector = common::quick();
    c.tls = tls;
    c
}

async fn redis_works(manager: &Manager, name: &str, config: RedisConfig) {
    let pool = manager
        .add_redis(name, config)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut conn = pool.get().await.unwrap();
    let _: () = conn.set("tls", name).await.unwrap();
    let v: String = conn.get("tls").await.unwrap();
    assert_eq!(v, name);
}

/// Registration fails quickly with `Error::Tls` whose text names the connector and
/// contains `expect`.
async fn refused<T: std::fmt::Debug>(
    name: &str,
    expect: &str,
    registration: impl std::future::Future<Output = connhub::Result<T>>,
) {
    let start = Instant::now();
    let err = registration.await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{name}: took {:?}",
        start.elapsed()
    );
    assert!(matches!(err, Error::Tls { .. }), "{name}: {err:?}");
    let text = err.to_string();
    assert!(text.contains(name), "{text}");
    assert!(
        text.contains(expect),
        "{name}: expected {expect:?} in {text}"
    );
}

async fn redis_refused(manager: &Manager, name: &str, config: RedisConfig, expect: &str) {
    refused(name, expect, manager.add_redis(name, config)).await;
}

#[tokio::test]
async fn redis_over_tls_and_rediss_urls() {
    let certs = TestCerts::generate().unwrap();
    let server = RedisServer::builder()
        .tls(ServerTls::from_certs(&certs, false))
        .start()
        .unwrap();
    let manager = Manager::new();
    redis_works(
        &manager,
        "tls",
        redis_config(&server, tls(Some(certs.ca()), None)),
    )
    .await;

    let mut url = redis_config(&server, TlsConfig::default());
    url.addr = format!("rediss://{}", server.tls_addr().unwrap());
    url.tls.ca_file = Some(certs.ca());
    redis_works(&manager, "rediss", url).await;

    let mut insecure = redis_config(&server, tls(None, None));
    insecure.tls.insecure_skip_verify = true;
    redis_works(&manager, "insecure", insecure).await;
    manager.close().await.unwrap();
}

#[tokio::test]
async fn redis_mutual_tls() {
    let certs = TestCerts::generate().unwrap();
    let server = RedisServer::builder()
        .tls(ServerTls::from_certs(&certs, true))
        .start()
        .unwrap();
    let manager = Manager::new();
    let client = Some((certs.client_cert(), certs.client_key()));
    redis_works(
        &manager,
        "mtls",
        redis_config(&server, tls(Some(certs.ca()), client)),
    )
    .await;

    redis_refused(
        &manager,
        "no-client-cert",
        redis_config(&server, tls(Some(certs.ca()), None)),
        "TLS",
    )
    .await;
    let other = Some((certs.other_client_cert(), certs.other_client_key()));
    redis_refused(
        &manager,
        "rejected-client-cert",
        redis_config(&server, tls(Some(certs.ca()), other)),
        "TLS",
    )
    .await;

    // The private key's contents appear in no output.
    let key = std::fs::read_to_string(certs.client_key()).unwrap();
    let secret_line = key.lines().nth(1).unwrap().to_owned();
    let client = Some((certs.client_cert(), certs.client_key()));
    let config = redis_config(&server, tls(Some(certs.ca()), client));
    let texts = [
        format!("{config:?}"),
        serde_json::to_string(&config).unwrap(),
        format!("{manager:?}"),
        format!("{:?}", manager.status()),
        format!(
            "{:?}",
            connhub::backend::redis::RedisConnectionManager::new("k", &config).unwrap()
        ),
    ];
    for t in texts {
        assert!(!t.contains(&secret_line), "key material leaked: {t}");
    }
    manager.close().await.unwrap();
}

#[tokio::test]
async fn redis_tls_bad_inputs_are_tls_errors() {
    let certs = TestCerts::generate().unwrap();
    let server = RedisServer::builder()
        .tls(ServerTls::from_certs(&certs, false))
        .start()
        .unwrap();
    let manager = Manager::new();
    redis_refused(
        &manager,
        "untrusted",
        redis_config(&server, tls(Some(certs.other_ca()), None)),
        "not signed by a trusted CA",
    )
    .await;
    redis_refused(
        &manager,
        "not-pem",
        redis_config(&server, tls(Some(certs.not_pem()), None)),
        "not-pem.pem",
    )
    .await;
    redis_refused(
        &manager,
        "key-not-pem",
        redis_config(
            &server,
            tls(
                Some(certs.ca()),
                Some((certs.client_cert(), certs.not_pem())),
            ),
        ),
        "key_file",
    )
    .await;

    let wrong_host = ServerTls {
        cert: certs.wrong_host_cert(),
        key: certs.wrong_host_key(),
        ..ServerTls::from_certs(&certs, false)
    };
    let other = RedisServer::builder().tls(wrong_host).start().unwrap();
    redis_refused(
        &manager,
        "mismatch",
        redis_config(&other, tls(Some(certs.ca()), None)),
        "not valid for this host name",
    )
    .await;

    // TLS to a plain port: the server does not speak TLS.
    let mut plain = redis_config(&server, tls(Some(certs.ca()), None));
    plain.addr = server.addr();
    let start = Instant::now();
    let err = manager.add_redis("plain-port", plain).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(err, Error::Tls { .. } | Error::Timeout { .. }),
        "{err:?}"
    );

    // A missing file is refused with the configuration, before any connection.
    let err = manager
        .add_redis(
            "missing",
            redis_config(&server, tls(Some("/no/such/ca.pem".into()), None)),
        )
        .await
        .unwrap_err();
    match err {
        Error::InvalidConfig(e) => assert!(e.has_key("redis.missing.tls.ca_file"), "{e}"),
        other => panic!("{other:?}"),
    }
    manager.close().await.unwrap();
}

fn etcd_config(server: &EtcdServer, tls: TlsConfig) -> EtcdConfig {
    let mut c = server.config();
    c.connector = common::quick();
    c.dial_timeout = Duration::from_secs(2);
    c.tls = tls;
    c
}

async fn etcd_works(manager: &Manager, name: &str, config: EtcdConfig) {
    let pool = manager
        .add_etcd(name, config)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut client = pool.get().await.unwrap();
    client.put("tls", name, None).await.unwrap();
    let got = client.get("tls", None).await.unwrap();
    assert_eq!(got.kvs()[0].value_str().unwrap(), name);
}

async fn etcd_refused(manager: &Manager, name: &str, config: EtcdConfig, expect: &str) {
    refused(name, expect, manager.add_etcd(name, config)).await;
}

#[tokio::test]
async fn etcd_over_tls_and_mutual_tls() {
    let certs = TestCerts::generate().unwrap();
    let manager = Manager::new();

    let server = EtcdServer::start_tls(ServerTls::from_certs(&certs, false)).unwrap();
    etcd_works(
        &manager,
        "tls",
        etcd_config(&server, tls(Some(certs.ca()), None)),
    )
    .await;
    etcd_refused(
        &manager,
        "untrusted",
        etcd_config(&server, tls(Some(certs.other_ca()), None)),
        "not signed by a trusted CA",
    )
    .await;
    etcd_refused(
        &manager,
        "not-pem",
        etcd_config(&server, tls(Some(certs.not_pem()), None)),
        "not-pem.pem",
    )
    .await;

    let mtls = EtcdServer::start_tls(ServerTls::from_certs(&certs, true)).unwrap();
    let client = Some((certs.client_cert(), certs.client_key()));
    etcd_works(
        &manager,
        "mtls",
        etcd_config(&mtls, tls(Some(certs.ca()), client)),
    )
    .await;
    etcd_refused(
        &manager,
        "no-client-cert",
        etcd_config(&mtls, tls(Some(certs.ca()), None)),
        "TLS",
    )
    .await;

    // etcd's client cannot skip verification: refused with the configuration.
    let mut insecure = etcd_config(&server, tls(None, None));
    insecure.tls.insecure_skip_verify = true;
    match manager.add_etcd("insecure", insecure).await.unwrap_err() {
        Error::InvalidConfig(e) => {
            assert!(e.has_key("etcd.insecure.tls.insecure_skip_verify"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    manager.close().await.unwrap();
}
