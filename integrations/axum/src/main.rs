//! Serves the orders app on `127.0.0.1:$PORT` (default 3000) until Ctrl-C.
//!
//! `ALLOWED_ORIGINS` (comma-separated) lists the origins whose pages may call it with
//! credentials; `ADMINS` (comma-separated, default `admin`) the admins. `RUST_LOG` sets the log
//! level (default `info`, `tower_http=debug` logs every request).
//!
//! ```sh
//! cargo run -p integration-axum
//! curl -N -b session=ada 'http://127.0.0.1:3000/events?topic=orders'
//! curl -H 'authorization: Bearer ada' -H 'content-type: application/json' \
//!      -d '{"item":"tea","quantity":2}' http://127.0.0.1:3000/api/orders
//! ```

use std::collections::HashSet;
use std::env;
use std::error::Error;

use integration_axum::{AppConfig, AppState, serve};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let port: u16 = match env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|e| format!("PORT must be a port number, got {port:?}: {e}"))?,
        Err(_) => 3000,
    };
    let mut config = AppConfig::default();
    if let Ok(origins) = env::var("ALLOWED_ORIGINS") {
        config.allowed_origins = list(&origins)
            .map(|origin| {
                origin
                    .parse()
                    .map_err(|e| format!("ALLOWED_ORIGINS: invalid origin {origin:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
    }
    if let Ok(admins) = env::var("ADMINS") {
        config.admins = list(&admins).map(str::to_owned).collect::<HashSet<_>>();
    }

    let state = AppState::new(config)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    serve(listener, state, async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            // Without a signal handler, the server runs until it is killed.
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    })
    .await?;
    Ok(())
}

/// The non-empty items of a comma-separated list.
fn list(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}
