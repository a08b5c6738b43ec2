//! Environment overrides. A binary of its own: it sets process-wide variables.

use connhub::ManagerConfig;

#[test]
fn environment_overrides_the_document() {
    // SAFETY: this test binary has this one test; nothing else reads the environment
    // concurrently.
    unsafe {
        std::env::set_var("CONNHUB__REDIS__CACHE__ADDR", "10.1.2.3:6380");
        std::env::set_var("CONNHUB__REDIS__CACHE__POOL_SIZE", "32");
        std::env::set_var("CONNHUB__ETCD__REG__DIAL_TIMEOUT", "7s");
        std::env::set_var("CONNHUB__DEFAULTS__FAIL_FAST", "false");
    }
    let cfg = ManagerConfig::from_yaml_str(
        "redis:\n  cache:\n    addr: 127.0.0.1:6379\n    pool_size: 4\netcd:\n  reg:\n    endpoints: [127.0.0.1:2379]\n",
    )
    .unwrap();
    assert_eq!(cfg.redis["cache"].addr, "10.1.2.3:6380");
    assert_eq!(cfg.redis["cache"].pool_size, 32);
    assert_eq!(
        cfg.etcd["reg"].dial_timeout,
        std::time::Duration::from_secs(7)
    );
    assert!(!cfg.redis["cache"].connector.fail_fast);
    assert!(!cfg.etcd["reg"].connector.fail_fast);

    // A bad value from the environment names its key like any other.
    unsafe {
        std::env::set_var("CONNHUB__REDIS__CACHE__POOL_SIZE", "lots");
    }
    let err = ManagerConfig::from_yaml_str("redis:\n  cache: {}\n").unwrap_err();
    assert!(err.to_string().contains("redis.cache.pool_size"), "{err}");
    unsafe {
        std::env::remove_var("CONNHUB__REDIS__CACHE__POOL_SIZE");
    }
}
