//! [`lock`]: a `std` mutex's data, poisoned or not.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`. A poisoned lock only means another thread panicked while holding it; the
/// data connhub keeps under its locks (bookkeeping changed by whole assignments) is
/// still usable, and a panic elsewhere must not take every later caller down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
