//! The chat demo's TLS mode: HTTP/2 and HTTP/1.1 over TLS, one or the other per connection as
//! the client's ALPN offer decides.
//!
//! Why: on HTTP/1.1 a browser opens at most six connections per origin, and an `EventSource`
//! holds one for as long as it is open, so a page with more than six streams stalls. HTTP/2
//! carries every stream of a page on one connection, and browsers speak it only over TLS.
//!
//! Shared by the example (`examples/chat.rs`) and its tests (through `tests/common/chat.rs`),
//! so the tests serve exactly what the demo serves.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::ParsedCertificate;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tower_sse_pubsub::ConnectionDeadlines;

/// The names a generated certificate is valid for: the loopback host in every spelling.
const SELF_SIGNED_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A certificate chain and its private key, to serve TLS with.
pub struct Certificate {
    /// The server's certificate first, then any intermediates.
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// What the server offers in ALPN, and so which protocols clients may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/2, or HTTP/1.1 for clients without it: the demo's TLS mode.
    Http2AndHttp1,
    /// HTTP/1.1 only, as a server without HTTP/2 would be: browsers then hold to six
    /// connections per origin.
    #[allow(dead_code, reason = "the tests serve it, as the control for HTTP/2")]
    Http1Only,
}

impl Certificate {
    /// A fresh self-signed certificate for `localhost`, `127.0.0.1` and `::1`, with a new
    /// ECDSA P-256 key. No browser trusts it until told to (see [`Certificate::spki_sha256`]).
    pub fn self_signed() -> Result<Self, String> {
        let names = SELF_SIGNED_NAMES.map(str::to_owned).to_vec();
        let generated = rcgen::generate_simple_self_signed(names)
            .map_err(|error| format!("cannot generate a self-signed certificate: {error}"))?;
        let key = PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
        Ok(Self {
            chain: vec![generated.cert.der().clone()],
            key: key.into(),
        })
    }

    /// The chain and key from PEM files: `cert` holds the server's certificate first, then any
    /// intermediates; `key` holds its private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, String> {
        let cert_error =
            |error| format!("cannot read certificates from {}: {error}", cert.display());
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(cert_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(cert_error)?;
        if chain.is_empty() {
            return Err(format!(
                "{} holds no certificate; give a PEM file with a \
                 -----BEGIN CERTIFICATE----- section",
                cert.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|error| {
            format!(
                "cannot read a private key from {}: {error}; give a PEM file with a \
                 PRIVATE KEY section",
                key.display()
            )
        })?;
        Ok(Self { chain, key })
    }

    /// The SHA-256 fingerprint of the server's certificate, as certificate viewers show it
    /// (hex byte pairs joined by colons), for comparing by eye before accepting it.
    pub fn fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.chain[0]);
        digest
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The base64 SHA-256 hash of the server certificate's public key (its
    /// SubjectPublicKeyInfo): what Chromium's `--ignore-certificate-errors-spki-list` and
    /// curl's `--pinnedpubkey sha256//` take to trust this one key.
    pub fn spki_sha256(&self) -> Result<String, String> {
        let parsed = ParsedCertificate::try_from(&self.chain[0])
            .map_err(|error| format!("the server certificate cannot be parsed: {error}"))?;
        let spki = parsed.subject_public_key_info();
        let digest = ring::digest::digest(&ring::digest::SHA256, spki.as_ref());
        Ok(BASE64.encode(digest))
    }

    /// A rustls server configuration serving this certificate (TLS 1.3, ring as the crypto
    /// provider) and offering `protocols` in ALPN.
    pub fn server_config(&self, protocols: Protocols) -> Result<Arc<ServerConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| {
                builder
                    .with_no_client_auth()
                    .with_single_cert(self.chain.clone(), self.key.clone_key())
            })
            .map_err(|error| format!("the certificate and key cannot serve TLS: {error}"))?;
        config.alpn_protocols = match protocols {
            Protocols::Http2AndHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Protocols::Http1Only => vec![b"http/1.1".to_vec()],
        };
        Ok(Arc::new(config))
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` completes, then waits for the open
/// connections to finish (`shutdown` should end the hub's streams, or they never do).
///
/// Each connection gets `deadlines` under its TLS layer (so a handshake that never finishes is
/// cut too) and speaks HTTP/2 or HTTP/1.1, as the client chose in ALPN. Every request carries
/// the client's address as axum's `ConnectInfo<SocketAddr>`, as with
/// `into_make_service_with_connect_info` in the plain mode.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    deadlines: ConnectionDeadlines,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1().timer(TokioTimer::new());
    // hyper's HTTP/2 default of 200 concurrent streams per connection bounds what one client
    // can hold open; the hub's keep-alive keeps each stream's connection busy for `deadlines`.
    http.http2().timer(TokioTimer::new());
    let http = Arc::new(http);
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: give the open ones time to close.
                    eprintln!("chat: cannot accept a connection: {error}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let http = http.clone();
        let app = app.clone();
        // Taken now, so a connection still in its handshake holds up the shutdown too.
        let watcher = connections.watcher();
        let io = deadlines.wrap(stream);
        tokio::spawn(async move {
            let tls = match acceptor.accept(io).await {
                Ok(tls) => tls,
                Err(error) => {
                    eprintln!(
                        "chat: TLS handshake with {peer} failed: {error} \
                         (does the client trust the certificate?)"
                    );
                    return;
                }
            };
            let service =
                hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    app.clone().oneshot(request)
                });
            // An error here is a client that went away or a deadline that cut it: routine.
            let _ = watcher
                .watch(http.serve_connection(TokioIo::new(tls), service))
                .await;
        });
    }
    drop(listener);
    connections.shutdown().await;
}
