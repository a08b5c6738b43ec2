//! A Redis subscription through a kill and restart of redis-server, with default settings:
//! it resubscribes by itself, says messages may have been lost, and misses nothing after.

mod common;

use std::time::{Duration, Instant};

use connhub::backend::redis::{SubscriptionItem, Topics};
use connhub::redis::AsyncCommands;
use connhub::testkit::RedisServer;
use connhub::{Error, Manager, State};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_survives_a_restart_and_reports_the_gap() {
    let mut redis = RedisServer::start().unwrap();
    let manager = Manager::new();
    let pool = manager.add_redis("cache", redis.config()).await.unwrap();
    let mut sub = pool
        .subscribe(Topics::new().channel("news").pattern("jobs.*"))
        .await
        .unwrap();
    assert_eq!(pool.status().streams.subscriptions, 1);

    let publish = |channel: &'static str, n: u32| {
        let pool = pool.clone();
        async move {
            let mut c = pool.get().await?;
            c.publish::<_, _, i64>(channel, n)
                .await
                .map_err(|e| Error::Backend {
                    origin: connhub::backend::Origin::new("cache", connhub::Kind::REDIS),
                    source: std::sync::Arc::new(e),
                })
        }
    };
    publish("news", 1).await.unwrap();
    publish("jobs.a", 2).await.unwrap();
    for want in [1, 2] {
        match sub.next().await.unwrap() {
            SubscriptionItem::Message(m) => assert_eq!(m.get_payload::<u32>().unwrap(), want),
            other => panic!("{other:?}"),
        }
    }

    redis.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart_async().await.unwrap();
    let restarted = Instant::now();
    // Publish probes until the subscription reports the gap.
    let gap = loop {
        let _ = publish("news", 0).await;
        match tokio::time::timeout(Duration::from_millis(50), sub.next()).await {
            Ok(Some(SubscriptionItem::Gap { down_for, error })) => break (down_for, error),
            Ok(Some(SubscriptionItem::Message(_))) => panic!("a message before the gap"),
            Ok(other) => panic!("{other:?}"),
            Err(_) => {}
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "never resubscribed"
        );
    };
    let resubscribed = restarted.elapsed();
    println!(
        "subscription: resubscribed {resubscribed:?} after the restart (down {:?}: {})",
        gap.0, gap.1
    );
    assert!(resubscribed < Duration::from_secs(1), "{resubscribed:?}");

    // Every message published after the gap arrives, in order (probes excepted).
    common::until_a_write_succeeds(&pool, Duration::from_secs(5)).await;
    for n in 1..=100 {
        publish(if n % 2 == 0 { "news" } else { "jobs.b" }, n)
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 100 {
        match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            Ok(Some(SubscriptionItem::Message(m))) => {
                let n: u32 = m.get_payload().unwrap();
                if n != 0 {
                    got.push(n);
                }
            }
            other => panic!("after {} messages: {other:?}", got.len()),
        }
    }
    assert_eq!(got, (1..=100).collect::<Vec<_>>());

    // Closing the connector ends the stream.
    manager.close().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while sub.next().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "the subscription outlived close()");
    assert_eq!(pool.state(), State::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_subscription_ends_it() {
    let redis = RedisServer::start().unwrap();
    let manager = Manager::new();
    let pool = manager.add_redis("cache", redis.config()).await.unwrap();
    let sub = pool
        .subscribe(["a", "b"].into_iter().collect())
        .await
        .unwrap();
    assert_eq!(pool.status().streams.subscriptions, 1);
    drop(sub);
    assert!(
        common::eventually(Duration::from_secs(5), || pool
            .status()
            .streams
            .subscriptions
            == 0)
        .await
    );
    // The server forgets the subscriber.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = pool.get().await.unwrap();
        let (_, n): (String, i64) = connhub::redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("a")
            .query_async(&mut *c)
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "still subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    manager.close().await.unwrap();
}
