//! axum integration (feature `axum`): Kubernetes-style probe routes, and pools in handler
//! state.
//!
//! [`router`] serves three routes that mean what Kubernetes means by them:
//!
//! - `GET /livez`, for a `livenessProbe`: 200 while the manager is open, 503 once it is
//!   closed. Never 503 because a backend is down: restarting the pod would not bring Redis
//!   back, and would turn an outage into a crash loop.
//! - `GET /readyz`, for a `readinessProbe`: 503 while any connector marked `required` (the
//!   default) is not healthy, so the Service stops sending the pod traffic it cannot
//!   serve; optional connectors (`required: false`) are listed but do not fail it.
//! - `GET /healthz`: every connector's [`Status`] as JSON, 200 when all are healthy, 503
//!   otherwise. For dashboards and people; do not use it for liveness.
//!
//! The answers are current: a server that dies is seen at once (the connection it closed
//! tells the health engine, which checks right away), and a probe that asks while a
//! connector is down counts as a caller, so the answer turns back to 200 within
//! `reconnect_interval` of the server's return even when nothing else calls.
//!
//! Merge it into your app; it takes the [`Manager`] from your state through `FromRef`.
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

/// `GET /livez`, `GET /readyz` and `GET /healthz`, for any state the [`Manager`] can be
/// taken from.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Manager: FromRef<S>,
{
    Router::new()
        .route("/livez", get(livez::<S>))
        .route("/readyz", get(readyz::<S>))
        .route("/healthz", get(healthz::<S>))
}

/// The body of `/livez`.
#[derive(Debug, Serialize)]
pub struct Live {
    /// True while the manager is open.
    pub live: bool,
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
    /// True while the manager is open and every required connector is healthy.
    pub ready: bool,
    /// Required connectors that are not healthy (connecting, reconnecting, failed, closed).
    pub waiting_for: Vec<String>,
    /// Optional connectors that are not healthy: reported, not failing readiness.
    pub degraded: Vec<String>,
}

fn code(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn livez<S>(State(state): State<S>) -> (StatusCode, Json<Live>)
where
    Manager: FromRef<S>,
{
    let live = !Manager::from_ref(&state).is_closed();
    (code(live), Json(Live { live }))
}

async fn healthz<S>(State(state): State<S>) -> (StatusCode, Json<Health>)
where
    Manager: FromRef<S>,
{
    let manager = Manager::from_ref(&state);
    let connectors = manager.probe_status();
    let healthy = !manager.is_closed()
        && connectors
            .iter()
            .all(|s| s.state == ConnectorState::Healthy);
    (
        code(healthy),
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
    let (mut waiting_for, mut degraded) = (Vec::new(), Vec::new());
    for s in manager.probe_status() {
        if s.state != ConnectorState::Healthy {
            if s.required {
                waiting_for.push(s.name);
            } else {
                degraded.push(s.name);
            }
        }
    }
    let ready = !manager.is_closed() && waiting_for.is_empty();
    (
        code(ready),
        Json(Ready {
            ready,
            waiting_for,
            degraded,
        }),
    )
}
