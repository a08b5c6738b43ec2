//! Health: the one place that decides whether a connector is up.
//!
//! - [`machine`]: the state machine as a pure function, tested without servers.
//! - [`engine`]: the shared [`Health`] of a connector, which feeds the machine and carries
//!   out its actions (events, retiring connections, waking refused callers).
//! - [`task`]: the background task that ticks the machine and runs its trials.

mod engine;
pub(crate) mod machine;
mod task;

pub(crate) use engine::{Health, Life};
pub(crate) use machine::Input;
pub(crate) use task::{Trial, run_trial, spawn};

#[cfg(test)]
mod tests;
