//! Serves gRPC, grpc-web and SSE on one port: `PORT` (default 50051) on 127.0.0.1, until Ctrl-C.
//!
//! ```sh
//! cargo run -p integration-tonic
//! curl -N 'http://127.0.0.1:50051/events?topic=greetings'     # a browser's view
//! grpcurl -plaintext -import-path integrations/tonic/proto -proto greeter.proto \
//!     -d '{"name":"ada"}' 127.0.0.1:50051 greeter.v1.Greeter/Hello
//! grpcurl -plaintext -import-path proto -proto pubsub/v1/pubsub.proto \
//!     -d '{"topics":["greetings"]}' 127.0.0.1:50051 pubsub.v1.PubSub/Subscribe
//! ```

#![forbid(unsafe_code)]

use std::error::Error;

use tower_sse_pubsub::Hub;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port.parse()?,
        Err(_) => 50051,
    };
    // A demo: anyone may POST /publish. A real app sets an authorizer instead.
    let hub = Hub::builder().allow_anonymous_publish().build()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "gRPC, grpc-web and SSE on http://{}",
        listener.local_addr()?
    );
    integration_tonic::serve(listener, hub, async {
        // If Ctrl-C cannot be watched, run until killed rather than stop at once.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
    .await?;
    Ok(())
}
