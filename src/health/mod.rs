//! Health: the one place that decides whether a connector is up.
//!
//! - [`machine`]: the state machine as a pure function, tested without servers.
//! - [`engine`]: the shared [`Health`] of a connector, which feeds the machine and carries
//!   out its actions (events, retiring connections, waking refused callers).
//! - [`life`]: what each connection is checked against locally (epoch, closed), and the
//!   pool's turns.
//! - [`task`]: the background task that ticks the machine and runs its trials.
//! - [`turns`]: how many callers may hold a connection at once, lowered to a server's
//!   connection cap.
//! - [`signal`]: how a backend reports a connection its server closed.

mod engine;
mod life;
pub(crate) mod machine;
mod signal;
mod task;
mod turns;

pub(crate) use engine::{Health, Served};
pub(crate) use life::{Life, Live, Opening, RETIRED};
pub(crate) use machine::{Input, Probe};
pub use signal::LossSignal;
pub(crate) use task::{Trial, TrialFailure, TrialFuture, run_trial, spawn};
pub(crate) use turns::{Turn, Turns};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_mass_loss;
