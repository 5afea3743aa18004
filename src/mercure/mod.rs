//! The Mercure protocol (feature `mercure`): the parts built so far.
//!
//! [Mercure](https://mercure.rocks) is an open protocol for pub/sub over Server-Sent Events
//! (draft-dunglas-mercure-07, as the reference hub v0.24 speaks it). This module will mount a
//! Mercure hub into any tower app; today it has the protocol's topic [`Selector`]s, which decide
//! which topics a subscription or an authorization claim covers.

mod selector;

pub use selector::{MAX_SELECTOR_LEN, Selector, SelectorError};
