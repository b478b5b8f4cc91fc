//! The HTTP API. (Being written: see the interface below.)

use std::sync::Arc;

use axum::Router;

use super::Agent;

/// The agent's routes.
pub fn router(_agent: Arc<Agent>) -> Router {
    todo!()
}
