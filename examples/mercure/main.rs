//! A Mercure hub inside an axum app, with a demo page.
//!
//! ```text
//! cargo run --features mercure,axum --example mercure
//! PORT=8080 cargo run --features mercure,axum --example mercure
//! MERCURE_PUBLISHER_JWT_KEY=… MERCURE_SUBSCRIBER_JWT_KEY=… cargo run --features mercure,axum --example mercure
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --features mercure,axum,redis --example mercure
//! ```
//!
//! It listens on 127.0.0.1 and `PORT` (default 3000), serves the hub at `/.well-known/mercure`
//! (anonymous subscribers allowed, active subscriptions on) and a page at `/` that subscribes to
//! `https://example.com/books/{id}` and publishes through the hub. Tokens are HS256, checked with
//! the reference hub's variables `MERCURE_PUBLISHER_JWT_KEY` and `MERCURE_SUBSCRIBER_JWT_KEY`
//! (at least 32 bytes; without them a demo key is used and said so). At start it prints a
//! publisher token and a curl line that publishes with it.

use std::env;
use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use jsonwebtoken::{EncodingKey, Header, encode};
use tokio::net::TcpListener;
use tower_sse_pubsub::jwt::{JwtAuthorizer, JwtKey};
use tower_sse_pubsub::mercure::{DiscoveryLayer, MercureHub};
use tower_sse_pubsub::{Hub, HubBuilder};

const PAGE: &str = include_str!("index.html");
const DEFAULT_PORT: u16 = 3000;
/// The reference hub's documented demo key; never use it outside a demo.
const DEMO_KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn Error>> {
    let port = match env::var("PORT") {
        Err(_) => DEFAULT_PORT,
        Ok(port) => match port.parse() {
            Ok(port) => port,
            Err(_) => {
                eprintln!("mercure: PORT must be a port number, got {port:?}");
                return Ok(ExitCode::FAILURE);
            }
        },
    };
    let publisher_secret = secret("MERCURE_PUBLISHER_JWT_KEY");
    let subscriber_secret = secret("MERCURE_SUBSCRIBER_JWT_KEY");
    let keys = JwtKey::hs256(&publisher_secret)
        .and_then(|publisher| Ok((publisher, JwtKey::hs256(&subscriber_secret)?)));
    let (publisher_key, subscriber_key) = match keys {
        Ok(keys) => keys,
        Err(error) => {
            eprintln!("mercure: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let tokens = JwtAuthorizer::builder(publisher_key)
        .subscriber_key(subscriber_key)
        .allow_anonymous_subscribe()
        .build();
    let builder = match broker_from_env().await {
        Ok(builder) => builder,
        Err(message) => {
            eprintln!("mercure: {message}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let hub = builder
        .mercure(MercureHub::new(tokens).with_subscriptions())
        .build()?;

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("mercure: cannot listen on {addr}: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let addr = listener.local_addr()?;
    let hub_url = format!("http://{addr}/.well-known/mercure");
    // The page announces the hub as publishers should: a Link header with rel="mercure".
    let page = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .layer(DiscoveryLayer::new(&hub_url)?);
    let app = page.layer(hub.layer());

    // A token that may publish to every topic, signed with the publisher key.
    let token = encode(
        &Header::default(),
        &serde_json::json!({"mercure": {"publish": ["*"]}}),
        &EncodingKey::from_secret(publisher_secret.as_bytes()),
    )?;
    println!("mercure: hub at {hub_url}; demo page at http://{addr}/");
    println!("mercure: a publisher token (mercure.publish = [\"*\"]):");
    println!("  {token}");
    println!("mercure: publish from a terminal with");
    println!(
        "  curl -H 'Authorization: Bearer {token}' -d topic=https://example.com/books/1 -d 'data={{\"title\":\"Dune\"}}' {hub_url}"
    );
    println!("mercure: press Ctrl-C to stop");
    let shutdown = {
        let hub = hub.clone();
        async move {
            let _ = tokio::signal::ctrl_c().await;
            hub.shutdown();
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// The secret in `variable`, or the demo key (said so).
fn secret(variable: &str) -> String {
    match env::var(variable) {
        Ok(secret) => secret,
        Err(_) => {
            println!("mercure: {variable} not set: using the demo key {DEMO_KEY:?}");
            DEMO_KEY.to_owned()
        }
    }
}

/// A hub builder on Redis when `REDIS_URL` is set (several hubs then share updates), or on the
/// in-memory broker.
async fn broker_from_env() -> Result<HubBuilder, String> {
    match env::var("REDIS_URL") {
        Err(env::VarError::NotPresent) => {
            println!("mercure: in-memory broker (set REDIS_URL to share updates between hubs)");
            Ok(Hub::builder())
        }
        Err(env::VarError::NotUnicode(value)) => {
            Err(format!("REDIS_URL is not valid text: {value:?}"))
        }
        Ok(url) => redis_broker(&url).await,
    }
}

#[cfg(feature = "redis")]
async fn redis_broker(url: &str) -> Result<HubBuilder, String> {
    let broker = tower_sse_pubsub::RedisBroker::builder(url)
        .key_prefix("mercure")
        .build()
        .await
        .map_err(|error| error.to_string())?;
    println!("mercure: Redis broker at {url}");
    Ok(Hub::builder().broker(broker))
}

#[cfg(not(feature = "redis"))]
async fn redis_broker(_url: &str) -> Result<HubBuilder, String> {
    Err("REDIS_URL is set, but this build has no Redis support: \
         run with --features mercure,axum,redis"
        .to_owned())
}
