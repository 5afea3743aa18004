//! Who a client is, for the per-client stream limit, and how many streams each has open.
//!
//! The address comes from the connection: axum's `ConnectInfo<SocketAddr>` (feature `axum`, with
//! `into_make_service_with_connect_info`), tonic's `TcpConnectInfo` (feature `grpc`; tonic's
//! server inserts it in every request, gRPC or not), or a `SocketAddr` or `IpAddr` request
//! extension that a hyper server inserts. Behind a reverse proxy every request comes from the
//! proxy, so the hub can be told to read a header the proxy sets instead, and only then: a header
//! from the open internet can say anything.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};

use http::HeaderName;
use http::request::Parts;

/// The client's address: from the trusted proxy header when one is configured (the last
/// address in it, which the proxy itself added), else from the connection. `None` when neither
/// says.
pub(crate) fn client_address(parts: &Parts, proxy_header: Option<&HeaderName>) -> Option<IpAddr> {
    if let Some(name) = proxy_header {
        let value = parts
            .headers
            .get_all(name)
            .iter()
            .next_back()?
            .to_str()
            .ok()?;
        let last = value.rsplit(',').next()?.trim();
        return last
            .parse::<IpAddr>()
            .ok()
            .or_else(|| last.parse::<SocketAddr>().ok().map(|a| a.ip()));
    }
    #[cfg(feature = "axum")]
    if let Some(info) = parts
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(info.0.ip());
    }
    #[cfg(feature = "grpc")]
    if let Some(addr) = parts
        .extensions
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(tonic::transport::server::TcpConnectInfo::remote_addr)
    {
        return Some(addr.ip());
    }
    parts
        .extensions
        .get::<SocketAddr>()
        .map(SocketAddr::ip)
        .or_else(|| parts.extensions.get::<IpAddr>().copied())
}

/// Open streams per client address.
#[derive(Default)]
pub(crate) struct ClientStreams {
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ClientStreams {
    /// Counts one more stream for `client`, unless it already has `max`.
    pub(crate) fn claim(&self, client: IpAddr, max: usize) -> bool {
        let mut open = self.lock();
        let count = open.entry(client).or_insert(0);
        if *count >= max {
            if *count == 0 {
                open.remove(&client);
            }
            return false;
        }
        *count += 1;
        true
    }

    /// Counts one stream of `client` fewer.
    pub(crate) fn release(&self, client: IpAddr) {
        let mut open = self.lock();
        if let Some(count) = open.get_mut(&client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&client);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(header: Option<(&str, &str)>) -> Parts {
        let mut builder = http::Request::get("/events?topic=a");
        if let Some((name, value)) = header {
            builder = builder.header(name, value);
        }
        builder.body(()).expect("valid request").into_parts().0
    }

    #[test]
    fn the_proxy_header_is_read_only_when_trusted() {
        let forwarded = Some(("x-forwarded-for", "203.0.113.9, 10.0.0.2, 198.51.100.7"));
        let header = HeaderName::from_static("x-forwarded-for");
        assert_eq!(
            client_address(&parts(forwarded), Some(&header)),
            "198.51.100.7".parse().ok(),
            "the address the trusted proxy added"
        );
        assert_eq!(client_address(&parts(forwarded), None), None);
        let mut with_peer = parts(forwarded);
        let peer: SocketAddr = "192.0.2.1:5555".parse().expect("valid address");
        with_peer.extensions.insert(peer);
        assert_eq!(client_address(&with_peer, None), Some(peer.ip()));
    }

    #[test]
    fn claims_stop_at_the_limit_and_come_back_on_release() {
        let streams = ClientStreams::default();
        let client: IpAddr = "192.0.2.1".parse().expect("valid address");
        assert!(streams.claim(client, 2));
        assert!(streams.claim(client, 2));
        assert!(!streams.claim(client, 2));
        streams.release(client);
        assert!(streams.claim(client, 2));
        streams.release(client);
        streams.release(client);
        assert!(
            streams.lock().is_empty(),
            "nothing kept for a client with no stream"
        );
    }
}
