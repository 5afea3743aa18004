//! The orders API: the app's own routes, which store orders in the shared state and announce
//! them to subscribers of the `orders` topic.
//!
//! Two ways for a handler to reach the [`Publisher`]: from the app state (`POST /api/orders`),
//! or from a request extension (`POST /api/orders/{id}/ship`), which suits routers whose state
//! type has no room for it, such as a nested router with a state of its own.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use tower_sse_pubsub::{Event, Publisher};

use crate::auth::{Admin, ORDERS_TOPIC, User};
use crate::state::{AppState, NewOrder, Order};

/// The `event:` type of the event sent when an order is placed.
pub const ORDER_CREATED: &str = "created";
/// The `event:` type of the event sent when an order ships.
pub const ORDER_SHIPPED: &str = "shipped";

/// Longest item name accepted.
const MAX_ITEM_LEN: usize = 200;

/// `GET /api/health`: no login needed.
pub async fn health() -> &'static str {
    "ok"
}

/// `GET /api/me`: who the login middleware says the caller is.
pub async fn me(user: User) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "name": user.name, "admin": user.admin }))
}

/// `GET /api/orders`: every order, for any logged-in user.
pub async fn list(State(state): State<AppState>, _user: User) -> Json<Vec<Order>> {
    Json(state.orders().all())
}

/// `POST /api/orders`: stores the order and announces it on `orders` through the publisher in
/// the app state.
pub async fn create(
    State(state): State<AppState>,
    user: User,
    Json(order): Json<NewOrder>,
) -> Response {
    if order.item.trim().is_empty() || order.item.len() > MAX_ITEM_LEN {
        let reason = format!(
            "item must be 1..={MAX_ITEM_LEN} bytes, got {}",
            order.item.len()
        );
        return (StatusCode::UNPROCESSABLE_ENTITY, reason).into_response();
    }
    if order.quantity == 0 {
        let reason = "quantity must be at least 1, got 0";
        return (StatusCode::UNPROCESSABLE_ENTITY, reason).into_response();
    }
    let order = state.orders().add(order, &user.name);
    announce(state.publisher(), ORDER_CREATED, &order).await;
    (StatusCode::CREATED, Json(order)).into_response()
}

/// `POST /api/orders/{id}/ship`: admins mark an order shipped; announced on `orders` through the
/// publisher in a request extension.
pub async fn ship(
    State(state): State<AppState>,
    Extension(publisher): Extension<Publisher>,
    Admin(_admin): Admin,
    Path(id): Path<u64>,
) -> Response {
    match state.orders().ship(id) {
        Some(order) => {
            announce(&publisher, ORDER_SHIPPED, &order).await;
            Json(order).into_response()
        }
        None => (StatusCode::NOT_FOUND, format!("no order {id}")).into_response(),
    }
}

/// Publishes `order` on `orders` as an event of type `event_type`.
///
/// The order is stored already: a failed announcement is logged, not turned into an error,
/// since subscribers that miss it see it when they next list the orders (and the hub tells a
/// reconnecting subscriber, with a `resync` event, when it cannot replay what it missed).
async fn announce(publisher: &Publisher, event_type: &'static str, order: &Order) {
    let event = Event::json(order).and_then(|event| event.with_event_type(event_type));
    let result = match event {
        Ok(event) => publisher.publish(ORDERS_TOPIC, event).await.map(drop),
        Err(error) => Err(error.into()),
    };
    if let Err(error) = result {
        tracing::warn!(order = order.id, %error, "could not announce the order");
    }
}
