//! The Mercure protocol (feature `mercure`): a hub endpoint inside any tower app.
//!
//! [Mercure](https://mercure.rocks) is an open protocol for pub/sub over Server-Sent Events
//! (draft-dunglas-mercure-07, which the reference hub v0.24 and its client libraries speak).
//! [`MercureHub`], given to [`HubBuilder::mercure`](crate::HubBuilder::mercure), mounts its
//! endpoint (`/.well-known/mercure` by default) in the hub's layer, on whichever broker the hub
//! has, so Mercure's publishers and subscribers work against the app unchanged:
//!
//! * `GET` subscribes to `topic` selectors (exact topics, `*`, URI templates), resuming after
//!   `Last-Event-ID` / `lastEventID` or from `earliest`;
//! * `POST` publishes a form (`topic`s, `data`, `private`, `id`, `type`, `retry`) and answers with
//!   the update's id;
//! * tokens are JWS with the `mercure` claim, checked by a [`JwtAuthorizer`](crate::jwt::JwtAuthorizer);
//! * [`DiscoveryLayer`] tells clients where the hub is.

mod discovery;
mod hub;
mod id;
mod publish;
mod subscribe;
mod subscriptions;

pub use discovery::{Discovery, DiscoveryFuture, DiscoveryLayer, InvalidHubUrl};
pub use hub::{DEFAULT_PATH, MercureHub};

pub(crate) use hub::MercureRoute;
pub(crate) use publish::publish;
pub(crate) use subscribe::subscribe;
pub(crate) use subscriptions::api as subscriptions;
