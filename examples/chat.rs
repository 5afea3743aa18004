//! A chat room in one page: the classic `tower-sse-pubsub` demo.
//!
//! ```text
//! cargo run --features axum --example chat              # serves http://127.0.0.1:3000
//! cargo run --features axum,metrics --example chat      # and Prometheus metrics at /metrics
//! PORT=8080 cargo run --features axum --example chat    # another port
//! ```
//!
//! Open the page in two browser windows, give each a name, and chat. Every message is `POST`ed
//! to `/publish` as a form (`topic=chat`, `data=` a JSON object `{name, text, time}`) and reaches
//! every window through its `EventSource` on `/events?topic=chat`. A terminal can join in:
//!
//! ```text
//! curl -d topic=chat -d data='hello from curl' http://127.0.0.1:3000/publish
//! curl -N 'http://127.0.0.1:3000/events?topic=chat'     # watch the raw stream
//! ```
//!
//! Several servers share one room through Redis (build with the `redis` feature):
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 PORT=3000 cargo run --features redis,axum --example chat
//! REDIS_URL=redis://127.0.0.1:6379 PORT=3001 cargo run --features redis,axum --example chat
//! ```
//!
//! Or through NATS JetStream (the `nats` feature; `nats-server -js`):
//!
//! ```text
//! NATS_URL=nats://127.0.0.1:4222 PORT=3000 cargo run --features nats,axum --example chat
//! NATS_URL=nats://127.0.0.1:4222 PORT=3001 cargo run --features nats,axum --example chat
//! ```
//!
//! With more than six streams in one page a browser needs HTTP/2 (on HTTP/1.1 it opens at most
//! six connections per origin, and each `EventSource` holds one), and browsers speak HTTP/2 only
//! over TLS. `TLS=1` serves HTTPS with HTTP/2 (and HTTP/1.1 for clients without it) on a
//! certificate generated at start for `localhost`, `127.0.0.1` and `::1`; the server prints
//! how to trust it. `TLS_CERT` and `TLS_KEY` give a certificate chain and key as PEM files
//! instead, such as a locally trusted pair made by `mkcert localhost 127.0.0.1 ::1`:
//!
//! ```text
//! TLS=1 cargo run --features axum --example chat       # serves https://127.0.0.1:3000
//! TLS_CERT=localhost+2.pem TLS_KEY=localhost+2-key.pem cargo run --features axum --example chat
//! ```
//!
//! Data that is not the page's JSON shows up as plain text. Stop the server with Ctrl-C: the hub
//! ends every open stream, so graceful shutdown does not wait for them. Start it again and the
//! pages reconnect on their own; the new in-memory broker does not know their last event id, so
//! each page shows a notice that messages may have been missed.

/// Serving over TLS; the tests use it too.
#[path = "chat/tls.rs"]
mod tls;

use std::env::{self, VarError};
use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use tokio::net::TcpListener;
use tower_sse_pubsub::{ConnectionDeadlines, Hub, HubBuilder};

use crate::tls::{Certificate, Protocols};

/// The chat page; it needs nothing but the hub's two endpoints.
const PAGE: &str = include_str!("chat/index.html");

const DEFAULT_PORT: u16 = 3000;

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn Error>> {
    let (port, certificate) = match port_from_env().and_then(|port| Ok((port, tls_from_env()?))) {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("chat: {message}");
            return Ok(ExitCode::FAILURE);
        }
    };

    // Demo only: anyone who can reach this server may publish to any topic. That is fine on
    // 127.0.0.1; a real app gives the hub an authorizer (HubBuilder::authorizer) instead.
    let builder = match broker_from_env().await {
        Ok(builder) => builder,
        Err(message) => {
            eprintln!("chat: {message}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let hub = builder.allow_anonymous_publish().build()?;

    let app = Router::new().route("/", get(|| async { Html(PAGE) }));
    #[cfg(feature = "metrics")]
    let app = app.route("/metrics", get(metrics_page(&hub)?));
    let app = app.layer(hub.layer()); // adds GET /events and POST /publish

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("chat: cannot listen on {addr}: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let addr = listener.local_addr()?;
    // Deadlines on every connection: a request head or body must arrive within 30 s, an idle
    // keep-alive connection closes after 60 s, and a client that stops reading its stream is
    // cut after 30 s (which releases its slot).
    let deadlines = ConnectionDeadlines::new();
    let shutdown = ctrl_c_then_end_streams(hub.clone());

    let Some(certificate) = certificate else {
        println!("chat: open http://{addr}/ in two browser windows");
        println!("chat: publish from a terminal with");
        println!("  curl -d topic=chat -d data='hello from curl' http://{addr}/publish");
        println!("chat: press Ctrl-C to stop");
        // With the client's address (ConnectInfo) on every request, as the TLS mode does.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(deadlines.listener(listener), app)
            .with_graceful_shutdown(shutdown)
            .await?;
        return Ok(ExitCode::SUCCESS);
    };

    let tls = match certificate.server_config(Protocols::Http2AndHttp1) {
        Ok(tls) => tls,
        Err(message) => {
            eprintln!("chat: {message}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let spki = certificate.spki_sha256()?;
    println!("chat: HTTPS with HTTP/2 (and HTTP/1.1 for clients without it)");
    println!(
        "chat: certificate SHA-256 fingerprint {}",
        certificate.fingerprint()
    );
    println!("chat: open https://{addr}/ in two browser windows; a browser that does not trust");
    println!("  the certificate shows a warning: compare the fingerprint above and accept it, or");
    println!("  start Chromium trusting this key alone (it needs a profile of its own):");
    println!(
        "  chromium --user-data-dir=/tmp/chat-profile --ignore-certificate-errors-spki-list={spki} https://{addr}/"
    );
    println!("chat: publish from a terminal with (-k and the pinned key: trust this key alone)");
    println!(
        "  curl -k --pinnedpubkey sha256//{spki} -d topic=chat -d data='hello from curl' https://{addr}/publish"
    );
    println!("chat: press Ctrl-C to stop");
    tls::serve(listener, tls, app, deadlines, shutdown).await;
    Ok(ExitCode::SUCCESS)
}

/// Waits for Ctrl-C, then ends every open event stream; otherwise graceful shutdown would wait
/// for them.
async fn ctrl_c_then_end_streams(hub: Hub) {
    if let Err(error) = tokio::signal::ctrl_c().await {
        // Without the signal there is no clean way to stop; keep serving.
        eprintln!("chat: cannot listen for Ctrl-C ({error}); stop the process another way");
        std::future::pending::<()>().await;
    }
    println!("\nchat: shutting down");
    hub.shutdown();
}

/// The certificate to serve TLS with, or `None` for plain HTTP: from the PEM files named by
/// `TLS_CERT` and `TLS_KEY` when they are set, else generated when `TLS=1`.
fn tls_from_env() -> Result<Option<Certificate>, String> {
    let switch = text_from_env("TLS")?;
    let on = match switch.as_deref().map(str::trim) {
        None => None,
        Some("0") => Some(false),
        Some("1") => Some(true),
        Some(other) => {
            return Err(format!(
                "TLS must be 1 (HTTPS) or 0 (plain HTTP), got {other:?}"
            ));
        }
    };
    let pair_error = "TLS_CERT and TLS_KEY go together: set both (PEM files), or neither";
    match (path_from_env("TLS_CERT"), path_from_env("TLS_KEY"), on) {
        (Some(_), Some(_), Some(false)) => {
            Err("TLS=0 asks for plain HTTP, but TLS_CERT and TLS_KEY are set: unset one".to_owned())
        }
        (Some(cert), Some(key), _) => Certificate::from_pem_files(&cert, &key).map(Some),
        (Some(_), None, _) | (None, Some(_), _) => Err(pair_error.to_owned()),
        (None, None, Some(true)) => {
            println!("chat: generating a self-signed certificate for localhost, 127.0.0.1, ::1");
            Certificate::self_signed().map(Some)
        }
        (None, None, _) => Ok(None),
    }
}

/// An environment variable's value, `None` when it is unset.
fn text_from_env(name: &str) -> Result<Option<String>, String> {
    match env::var(name) {
        Err(VarError::NotPresent) => Ok(None),
        Err(VarError::NotUnicode(value)) => Err(format!("{name} is not valid text: {value:?}")),
        Ok(value) => Ok(Some(value)),
    }
}

/// An environment variable naming a file, `None` when it is unset or empty.
fn path_from_env(name: &str) -> Option<PathBuf> {
    env::var_os(name)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
}

/// With the `metrics` feature: a Prometheus recorder for the `metrics` facade, and the handler
/// of `GET /metrics`, which exports the hub's stats and renders every metric.
#[cfg(feature = "metrics")]
fn metrics_page(
    hub: &Hub,
) -> Result<impl Fn() -> std::future::Ready<String> + Clone + Send + Sync + 'static, Box<dyn Error>>
{
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let hub = hub.clone();
    Ok(move || {
        hub.export_metrics();
        std::future::ready(prometheus.render())
    })
}

/// A hub builder on Redis when `REDIS_URL` is set, or on NATS when `NATS_URL` is (so several
/// chat servers share one room), or on the in-memory default.
async fn broker_from_env() -> Result<HubBuilder, String> {
    match env::var("NATS_URL") {
        Err(VarError::NotPresent) => {}
        Err(VarError::NotUnicode(value)) => {
            return Err(format!("NATS_URL is not valid text: {value:?}"));
        }
        Ok(_) if env::var_os("REDIS_URL").is_some() => {
            return Err("set REDIS_URL or NATS_URL, not both".to_owned());
        }
        Ok(url) => return nats_broker(&url).await,
    }
    let url = match env::var("REDIS_URL") {
        Err(VarError::NotPresent) => {
            println!(
                "chat: in-memory broker (set REDIS_URL or NATS_URL to share the room between \
                 servers)"
            );
            return Ok(Hub::builder());
        }
        Err(VarError::NotUnicode(value)) => {
            return Err(format!("REDIS_URL is not valid text: {value:?}"));
        }
        Ok(url) => url,
    };
    redis_broker(&url).await
}

#[cfg(feature = "redis")]
async fn redis_broker(url: &str) -> Result<HubBuilder, String> {
    let broker = tower_sse_pubsub::RedisBroker::builder(url)
        .key_prefix("chat")
        .build()
        .await
        .map_err(|e| e.to_string())?;
    println!("chat: Redis broker at {url}");
    Ok(Hub::builder().broker(broker))
}

#[cfg(not(feature = "redis"))]
async fn redis_broker(_url: &str) -> Result<HubBuilder, String> {
    Err("REDIS_URL is set, but this build has no Redis support: \
         cargo run --features redis,axum --example chat"
        .to_owned())
}

#[cfg(feature = "nats")]
async fn nats_broker(url: &str) -> Result<HubBuilder, String> {
    let broker = tower_sse_pubsub::NatsBroker::builder([url])
        .stream_name("CHAT")
        .subject_prefix("chat")
        .build()
        .await
        .map_err(|e| e.to_string())?;
    println!("chat: NATS broker at {url}");
    Ok(Hub::builder().broker(broker))
}

#[cfg(not(feature = "nats"))]
async fn nats_broker(_url: &str) -> Result<HubBuilder, String> {
    Err("NATS_URL is set, but this build has no NATS support: \
         cargo run --features nats,axum --example chat"
        .to_owned())
}

/// The port from the `PORT` environment variable, or the default when it is unset.
fn port_from_env() -> Result<u16, String> {
    match env::var("PORT") {
        Err(VarError::NotPresent) => Ok(DEFAULT_PORT),
        Err(VarError::NotUnicode(value)) => Err(format!("PORT is not valid text: {value:?}")),
        Ok(value) => value
            .trim()
            .parse()
            .map_err(|_| format!("PORT must be a port number from 0 to 65535, got {value:?}")),
    }
}
