//! The backends that ship with connhub, each a [`Backend`](crate::Backend) over its
//! crate's own client. Any other bb8 manager plugs in through
//! [`Manager::add_pool`](crate::Manager::add_pool) or, with a [`Backend`](crate::Backend)
//! of its own, [`Manager::add_backend`](crate::Manager::add_backend).

pub use crate::health::LossSignal;

mod classify;
pub mod etcd;
pub mod redis;
