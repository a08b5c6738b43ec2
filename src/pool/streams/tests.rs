//! The stream runner under paused time, with a scripted source and scope.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{Read, Scope, Source, run};
use crate::error::{Error, Result};

/// A scope that ends (or moves to generation `n`) when told.
struct Fake {
    generation: u32,
    moves: watch::Receiver<Option<u32>>,
}

impl Scope for Fake {
    fn names(&self) -> (&str, &str) {
        ("fake", "test")
    }

    fn retry_after(&self) -> Duration {
        Duration::from_millis(250)
    }

    async fn ended(&self) -> Option<Self> {
        let mut moves = self.moves.clone();
        loop {
            match *moves.borrow_and_update() {
                Some(0) => return None,
                Some(n) if n != self.generation => {
                    return Some(Fake {
                        generation: n,
                        moves: self.moves.clone(),
                    });
                }
                _ => {}
            }
            if moves.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Reads what the test sends; fails to open `refusals` times after each loss.
struct Script {
    reads: mpsc::Receiver<Option<u32>>,
    refusals: u32,
    refused: Arc<AtomicU32>,
    opened_in: Arc<AtomicU32>,
}

impl Source<Fake> for Script {
    type Open = ();
    type Item = String;
    const NAME: &'static str = "script";

    async fn open(&mut self, scope: &Fake) -> Result<()> {
        if self.refused.load(Ordering::SeqCst) < self.refusals {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(Error::Closed { origin: None });
        }
        self.opened_in.store(scope.generation, Ordering::SeqCst);
        Ok(())
    }

    async fn read(&mut self, _: &Fake, (): &mut ()) -> Read<String> {
        match self.reads.recv().await {
            Some(Some(n)) => Read::One(format!("item {n}")),
            Some(None) => Read::Lost("lost".into()),
            None => std::future::pending().await,
        }
    }

    fn reopened(&mut self, down_for: Duration, error: String) -> Option<String> {
        Some(format!("gap {}ms {error}", down_for.as_millis()))
    }
}

struct Rig {
    items: mpsc::Receiver<String>,
    reads: mpsc::Sender<Option<u32>>,
    moves: watch::Sender<Option<u32>>,
    refused: Arc<AtomicU32>,
    opened_in: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

fn rig(refusals: u32) -> Rig {
    let (moves, rx) = watch::channel(None);
    let (reads, script) = mpsc::channel(8);
    let (tx, items) = mpsc::channel(8);
    let refused = Arc::new(AtomicU32::new(0));
    let opened_in = Arc::new(AtomicU32::new(u32::MAX));
    let source = Script {
        reads: script,
        refusals,
        refused: refused.clone(),
        opened_in: opened_in.clone(),
    };
    let scope = Fake {
        generation: 1,
        moves: rx,
    };
    let task = tokio::spawn(run(scope, source, Some(()), tx));
    Rig {
        items,
        reads,
        moves,
        refused,
        opened_in,
        task,
    }
}

#[tokio::test(start_paused = true)]
async fn a_lost_stream_is_opened_again_every_interval_and_the_gap_reported() {
    let mut r = rig(2);
    r.reads.send(Some(1)).await.unwrap();
    assert_eq!(r.items.recv().await.unwrap(), "item 1");
    r.reads.send(None).await.unwrap();
    // Refused twice: open again at once, then after 250 ms, then after 500 ms.
    let gap = r.items.recv().await.unwrap();
    assert_eq!(gap, "gap 500ms the manager is closed", "{gap}");
    assert_eq!(r.refused.load(Ordering::SeqCst), 2);
    r.reads.send(Some(2)).await.unwrap();
    assert_eq!(r.items.recv().await.unwrap(), "item 2");
}

#[tokio::test(start_paused = true)]
async fn a_replaced_scope_moves_the_stream_and_an_ended_one_ends_it() {
    let mut r = rig(0);
    r.moves.send(Some(2)).unwrap();
    let gap = r.items.recv().await.unwrap();
    assert!(gap.ends_with("replaced by a reload"), "{gap}");
    assert_eq!(r.opened_in.load(Ordering::SeqCst), 2);
    r.moves.send(Some(0)).unwrap();
    assert_eq!(r.items.recv().await, None, "the stream ends with its scope");
    r.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_stream_ends_when_its_reader_is_gone() {
    let r = rig(0);
    drop(r.items);
    tokio::time::timeout(Duration::from_secs(1), r.task)
        .await
        .expect("the runner ends when nobody reads")
        .unwrap();
}
