//! Turns under every order of taking, giving back and waiting.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{SPARE_CLOSED, Turns};

fn free(turns: &Turns) -> usize {
    let spare = turns.spare.load(Ordering::SeqCst) & !SPARE_CLOSED;
    turns.semaphore.available_permits() + spare as usize
}

#[test]
fn a_limit_takes_free_turns_at_once_and_held_ones_as_they_come_back() {
    let turns = Arc::new(Turns::new(4));
    let held: Vec<_> = (0..3)
        .map(|_| Turns::try_take(&turns).unwrap().unwrap())
        .collect();
    turns.allow(2);
    assert_eq!(free(&turns), 0, "the free turn is taken out");
    let mut held = held.into_iter();
    drop(held.next());
    assert_eq!(
        free(&turns),
        0,
        "a turn coming back above the limit is kept out"
    );
    drop(held.next());
    assert_eq!(
        free(&turns),
        1,
        "within the limit it goes to the next caller"
    );
    drop(held);
    assert_eq!(free(&turns), 2);
    turns.allow(3);
    assert_eq!(free(&turns), 3);
    turns.allow_all();
    assert_eq!(free(&turns), 4);
    assert_eq!(turns.allowed(), 4);
    turns.allow(0);
    assert_eq!(turns.allowed(), 1, "never fewer than one turn");
    assert_eq!(free(&turns), 1);
    turns.close();
    assert!(Turns::try_take(&turns).is_err());
}

#[tokio::test]
async fn a_turn_coming_back_after_close_says_so() {
    let turns = Arc::new(Turns::new(2));
    let held = Turns::try_take(&turns).unwrap().unwrap();
    turns.close();
    let returned = turns.returned();
    drop(held);
    tokio::time::timeout(std::time::Duration::from_secs(5), returned)
        .await
        .expect("the drain is told at once");
    turns.allow(1);
    assert!(Turns::try_take(&turns).is_err(), "closed: no turn again");
}

#[tokio::test(start_paused = true)]
async fn a_turn_given_back_goes_to_the_line_before_a_newcomer() {
    let turns = Arc::new(Turns::new(1));
    let held = Turns::try_take(&turns).unwrap().unwrap();
    let (t1, t2) = (turns.clone(), turns.clone());
    let first = tokio::spawn(async move { Turns::take(&t1).await.map(|_t| 1) });
    tokio::task::yield_now().await;
    let second = tokio::spawn(async move { Turns::take(&t2).await.map(|_t| 2) });
    tokio::task::yield_now().await;
    drop(held);
    assert!(
        Turns::try_take(&turns).unwrap().is_none(),
        "a newcomer does not take the turn from the line"
    );
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(second.await.unwrap().unwrap(), 2);
    assert_eq!(free(&turns), 1, "and it comes back when the line is done");
    assert!(Turns::try_take(&turns).unwrap().is_some());
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_wait_leaves_the_turn_for_the_next_caller() {
    let turns = Arc::new(Turns::new(1));
    let held = Turns::try_take(&turns).unwrap().unwrap();
    let wait = tokio::time::timeout(std::time::Duration::from_secs(1), Turns::take(&turns));
    assert!(wait.await.is_err(), "no turn is free");
    drop(held);
    assert!(Turns::try_take(&turns).unwrap().is_some());
}

/// The two orders of the race between a caller about to wait and a turn given back.
#[tokio::test(start_paused = true)]
async fn a_turn_given_back_as_a_caller_gets_in_line_is_not_left_spare() {
    let turns = Arc::new(Turns::new(1));
    let held = Turns::try_take(&turns).unwrap().unwrap();
    assert!(Turns::try_take(&turns).unwrap().is_none());
    // Given back after the caller found none free, before it counted itself in line:
    // the turn is spare, and the caller takes it on its way in.
    drop(held);
    let turn = tokio::time::timeout(std::time::Duration::from_secs(1), Turns::take(&turns))
        .await
        .expect("the spare turn is the waiting caller's");
    // Counted in line before the turn came back: the giver hands it to the line.
    let waiting = super::Waiter::count(&turns.waiters);
    drop(turn.unwrap());
    assert_eq!(turns.spare.load(Ordering::SeqCst), 0);
    assert_eq!(
        turns.semaphore.available_permits(),
        1,
        "in the line's hands"
    );
    drop(waiting);
    assert!(Turns::try_take(&turns).unwrap().is_some());
}

/// Many more callers than turns on two workers, each taking a turn (without waiting
/// when one is free) and giving it back: never more turns out than allowed, and
/// nobody left waiting for a turn that sits spare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_race_between_the_spare_count_and_the_line_without_loss() {
    use std::sync::atomic::AtomicUsize;
    const SIZE: u32 = 2;
    let turns = Arc::new(Turns::new(SIZE));
    let out = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (turns, out, most) = (turns.clone(), out.clone(), most.clone());
            tokio::spawn(async move {
                for n in 0..2_000u32 {
                    let turn = match Turns::try_take(&turns).unwrap() {
                        Some(t) => t,
                        None => Turns::take(&turns).await.unwrap(),
                    };
                    let now = out.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    if (n + i) % 3 == 0 {
                        tokio::task::yield_now().await;
                    }
                    out.fetch_sub(1, Ordering::SeqCst);
                    drop(turn);
                }
            })
        })
        .collect();
    let all = futures_util::future::try_join_all(tasks);
    tokio::time::timeout(std::time::Duration::from_secs(60), all)
        .await
        .expect("no caller is left waiting while a turn is free")
        .unwrap();
    assert!(most.load(Ordering::SeqCst) <= SIZE as usize);
    assert_eq!(free(&turns), SIZE as usize, "every turn is back");
}
