//! The hub on plain hyper 1, with no framework: the layer wraps a `service_fn`, hyper serves
//! each connection, and graceful shutdown ends the event streams first.
//!
//! Every connection has deadlines, as a server on the open internet needs: the request head
//! must arrive within 10 s (`header_read_timeout`); `ConnectionDeadlines` closes a connection
//! whose request goes unanswered for 30 s (a trickled body), one idle for 60 s, and one whose
//! client stops reading its event stream for 30 s, which releases its slot.
//!
//! ```text
//! cargo run --example hyper                 # http://127.0.0.1:3000, PORT overrides
//! curl -N 'http://127.0.0.1:3000/events?topic=news'
//! curl -d topic=news -d data=hello http://127.0.0.1:3000/publish
//! ```

use std::convert::Infallible;
use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::{ServiceBuilder, service_fn};
use tower_sse_pubsub::{ConnectionDeadlines, Hub};

/// The app's own handler: everything the hub does not answer lands here.
async fn app(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match request.uri().path() {
        "/" => (StatusCode::OK, "plain hyper, with SSE at /events\n"),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| format!("PORT must be a port number, got {port:?}"))?,
        Err(_) => 3000,
    };
    // Demo only: anyone may publish. A real app sets an authorizer.
    let hub = Hub::builder().allow_anonymous_publish().build()?;
    let service = ServiceBuilder::new()
        .layer(hub.layer())
        .service(service_fn(app));

    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    println!("hyper: http://{}/ (Ctrl-C to stop)", listener.local_addr()?);
    let connections = GracefulShutdown::new();
    let deadlines = ConnectionDeadlines::new();
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let io = TokioIo::new(deadlines.wrap(stream));
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(io, TowerToHyperService::new(service.clone()));
                let connection = connections.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        eprintln!("hyper: connection error: {error}");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    // End the event streams first, or the connections carrying them would never finish.
    hub.shutdown();
    if tokio::time::timeout(Duration::from_secs(10), connections.shutdown())
        .await
        .is_err()
    {
        eprintln!("hyper: some connections did not finish within 10 s");
    }
    Ok(())
}
