//! bb8's error sink: a fresh connection failing is news for the health engine; a pooled
//! one failing validation, or retired, is not.

use std::sync::Arc;

use super::backend::Bb8Manager;
use super::tracked::{Fault, Parts};
use crate::health::Health;

/// bb8's error sink: a fresh connection failing is news for the health engine; a pooled
/// one failing validation, or retired, is not.
pub(super) struct Sink<M: Bb8Manager> {
    pub(super) health: Arc<Health>,
    pub(super) parts: Arc<Parts<M>>,
}

impl<M: Bb8Manager> std::fmt::Debug for Sink<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("connector", &self.health.name)
            .finish()
    }
}

impl<M: Bb8Manager> bb8::ErrorSink<Fault<M::Error>> for Sink<M> {
    fn sink(&self, fault: Fault<M::Error>) {
        let h = &self.health;
        match fault {
            Fault::Connect(e) => {
                let e = self.parts.backend.classify(&h.name, e);
                tracing::debug!(connector = %h.name, kind = %h.kind, error = %e, "connection failed");
                h.connect_failed(&e);
            }
            Fault::Invalid(e) => {
                tracing::debug!(connector = %h.name, kind = %h.kind, error = %e, "pooled connection failed validation; dropped");
            }
            Fault::Retired => {}
        }
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<Fault<M::Error>>> {
        Box::new(Sink {
            health: self.health.clone(),
            parts: self.parts.clone(),
        })
    }
}
