//! The app's shared state: configuration, the order store, and the hub with its publisher.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use http::HeaderValue;
use serde::{Deserialize, Serialize};
use tower_sse_pubsub::{BuildError, Hub, HubBuilder, Publisher, authorize_fn};

use crate::auth::authorize_hub_request;

/// What the app is configured with.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Origins whose pages may call the API and open event streams with credentials (cookies),
    /// e.g. `http://localhost:5173` for a front end served from a dev server.
    pub allowed_origins: Vec<HeaderValue>,
    /// Names of the users who are admins.
    pub admins: HashSet<String>,
}

impl Default for AppConfig {
    /// No cross-origin callers, and one admin called `admin`.
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            admins: HashSet::from(["admin".to_owned()]),
        }
    }
}

/// Everything the handlers and middleware share. Cheap to clone: all clones share one store and
/// one hub.
#[derive(Debug, Clone)]
pub struct AppState {
    config: Arc<AppConfig>,
    orders: Arc<OrderStore>,
    hub: Hub,
    publisher: Publisher,
}

impl AppState {
    /// The app's state, with a hub of default settings and the app's authorizer.
    ///
    /// # Errors
    ///
    /// As [`AppState::with_hub`].
    pub fn new(config: AppConfig) -> Result<Self, BuildError> {
        Self::with_hub(config, Hub::builder())
    }

    /// The app's state, with a hub built from `hub` (for its limits, paths, broker...) and the
    /// app's authorizer, which replaces any authorizer `hub` had.
    ///
    /// # Errors
    ///
    /// [`BuildError`] when `hub` holds a setting that cannot work.
    pub fn with_hub(config: AppConfig, hub: HubBuilder) -> Result<Self, BuildError> {
        let hub = hub
            .authorizer(authorize_fn(authorize_hub_request))
            .build()?;
        Ok(Self {
            config: Arc::new(config),
            orders: Arc::new(OrderStore::default()),
            publisher: hub.publisher(),
            hub,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AppConfig {
        &self.config
    }

    /// The order store.
    pub fn orders(&self) -> &OrderStore {
        &self.orders
    }

    /// The hub: its layer, its subscriber count, its shutdown.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Publishes events from app code.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }
}

/// An order as the API returns it and subscribers of `orders` receive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Given by the store, from 1 up.
    pub id: u64,
    /// What was ordered.
    pub item: String,
    /// How many.
    pub quantity: u32,
    /// Who ordered it.
    pub customer: String,
    /// Whether an admin marked it shipped.
    pub shipped: bool,
}

/// The body of `POST /api/orders`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// What to order.
    pub item: String,
    /// How many.
    pub quantity: u32,
}

/// The orders, in memory.
#[derive(Debug, Default)]
pub struct OrderStore {
    orders: Mutex<Vec<Order>>,
}

impl OrderStore {
    /// Stores a new order for `customer` and returns it with its id.
    pub fn add(&self, order: NewOrder, customer: &str) -> Order {
        let mut orders = self.lock();
        let order = Order {
            id: orders.len() as u64 + 1,
            item: order.item,
            quantity: order.quantity,
            customer: customer.to_owned(),
            shipped: false,
        };
        orders.push(order.clone());
        order
    }

    /// Every order, oldest first.
    pub fn all(&self) -> Vec<Order> {
        self.lock().clone()
    }

    /// Marks order `id` shipped and returns it, or `None` when there is no such order.
    pub fn ship(&self, id: u64) -> Option<Order> {
        let mut orders = self.lock();
        let order = orders.iter_mut().find(|order| order.id == id)?;
        order.shipped = true;
        Some(order.clone())
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Order>> {
        // Every critical section leaves the list consistent, so a panic elsewhere while the lock
        // was held does not make the data unusable.
        self.orders.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
