//! The Mercure protocol (feature `mercure`), as far as it is built.
//!
//! [Mercure](https://mercure.rocks) is an open protocol for pub/sub over Server-Sent Events
//! (draft-dunglas-mercure-07, which the reference hub v0.24 speaks). What this crate has of it so
//! far: topic [`Selector`](crate::Selector)s, the [`jwt`](crate::jwt) authorizer with Mercure's
//! tokens and claims, and [`DiscoveryLayer`], which tells clients where the hub is. The hub
//! endpoint itself (`/.well-known/mercure`) is being built on these.

mod discovery;

pub use discovery::{Discovery, DiscoveryFuture, DiscoveryLayer, InvalidHubUrl};
