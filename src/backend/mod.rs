//! The backends that ship with connhub ([`redis`], [`etcd`]), and what you need to write
//! one of your own.
//!
//! # Writing your own backend
//!
//! Any bb8 manager plugs in as it is through [`Manager::add_pool`](crate::Manager::add_pool):
//! its connections are checked with its own `is_valid`, and its errors become
//! [`Error::Backend`](crate::Error::Backend). To tell connhub more, implement [`Backend`]
//! for it and register it with [`Manager::add_backend`](crate::Manager::add_backend), the
//! one path every backend takes, Redis and etcd included:
//!
//! - [`Backend::is_broken`] and [`Backend::checks_locally`]: look at a connection without
//!   a round trip, so a checkout never waits on the server;
//! - [`Backend::probe`]: the health check;
//! - [`Backend::classify`]: turn the client's error into an [`Error`](crate::Error) that
//!   says `Auth`, `Tls`, `Connect` or `Timeout`, naming its connector ([`Origin`]) and
//!   keeping the client's error as its [`Cause`];
//! - [`Backend::retire`]: drop shared handles after an outage;
//! - [`Backend::loss_signal`]: say at once when a server closed a connection
//!   ([`LossSignal`]).
//!
//! The other names here are what those signatures speak: [`Bb8Manager`] (a bb8 manager
//! with a standard error), [`ConnectionOf`] and [`ErrorOf`], [`BoxFuture`], and
//! [`HookError`] for [`OnConnect`](crate::OnConnect) hooks.

pub use crate::connector::BoxFuture;
pub use crate::error::{Cause, Origin};
pub use crate::health::LossSignal;
pub use crate::pool::{Backend, Bb8Manager, ConnectionOf, ErrorOf, HookError};

mod classify;
pub mod etcd;
pub mod redis;
