//! The backends that ship with connhub. Any other bb8 manager plugs in through
//! [`Manager::add_pool`](crate::Manager::add_pool).

pub mod etcd;
mod etcd_members;
pub mod redis;
mod redis_direct;
pub(crate) mod redis_multiplexed;
