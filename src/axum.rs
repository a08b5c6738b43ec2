//! axum integration (feature `axum`): health and readiness routes, and pools in handler
//! state.
//!
//! [`router`] serves `GET /healthz` (200 when every connector is healthy, 503 otherwise;
//! the body is [`Manager::status`] as JSON) and `GET /readyz` (200 once every connector has
//! connected and the manager is open). Merge it into your app; it takes the [`Manager`]
//! from your state through `FromRef`.
//!
//! Pools are `Clone`, so a handler can take one directly: put them in your state and
//! derive `FromRef`.
//!
//! ```no_run
//! use axum::extract::{FromRef, State};
//! use axum::routing::get;
//! use connhub::redis::AsyncCommands;
//! use connhub::{Manager, RedisPool};
//!
//! #[derive(Clone, FromRef)]
//! struct App {
//!     manager: Manager,
//!     cache: RedisPool,
//! }
//!
//! async fn hits(State(cache): State<RedisPool>) -> String {
//!     match cache.multiplexed().await {
//!         Ok(mut c) => c.incr::<_, _, i64>("hits", 1).await.map_or_else(|e| e.to_string(), |n| n.to_string()),
//!         Err(e) => e.to_string(),
//!     }
//! }
//!
//! # async fn serve(manager: Manager) -> Result<(), Box<dyn std::error::Error>> {
//! let app = App { cache: manager.redis("cache")?, manager };
//! let router: axum::Router = axum::Router::new()
//!     .route("/hits", get(hits))
//!     .merge(connhub::axum::router())
//!     .with_state(app);
//! # Ok(()) }
//! ```

use axum::Json;
use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::Serialize;

use crate::manager::Manager;
use crate::status::{State as ConnectorState, Status};

/// `GET /healthz` and `GET /readyz`, for any state the [`Manager`] can be taken from.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Manager: FromRef<S>,
{
    Router::new()
        .route("/healthz", get(healthz::<S>))
        .route("/readyz", get(readyz::<S>))
}

/// The body of `/healthz`.
#[derive(Debug, Serialize)]
pub struct Health {
    /// True when every connector is healthy.
    pub healthy: bool,
    /// Every connector's status.
    pub connectors: Vec<Status>,
}

/// The body of `/readyz`.
#[derive(Debug, Serialize)]
pub struct Ready {
    /// True once every connector has connected and the manager is open.
    pub ready: bool,
    /// Connectors still connecting, or closed.
    pub waiting_for: Vec<String>,
}

async fn healthz<S>(State(state): State<S>) -> (StatusCode, Json<Health>)
where
    Manager: FromRef<S>,
{
    let manager = Manager::from_ref(&state);
    let connectors = manager.status();
    let healthy = !manager.is_closed()
        && connectors
            .iter()
            .all(|s| s.state == ConnectorState::Healthy);
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Health {
            healthy,
            connectors,
        }),
    )
}

async fn readyz<S>(State(state): State<S>) -> (StatusCode, Json<Ready>)
where
    Manager: FromRef<S>,
{
    let manager = Manager::from_ref(&state);
    let waiting_for: Vec<String> = manager
        .status()
        .into_iter()
        .filter(|s| matches!(s.state, ConnectorState::Connecting | ConnectorState::Closed))
        .map(|s| s.name)
        .collect();
    let ready = !manager.is_closed() && waiting_for.is_empty();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(Ready { ready, waiting_for }))
}
