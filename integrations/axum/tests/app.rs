//! The orders app over real TCP: its own routes and middleware, the hub layered on, and how the
//! two meet (login, compression, CORS, shutdown).

mod common;

use std::time::Duration;

use common::{
    ADMIN, ALLOWED_ORIGIN, TestServer, WAIT_LIMIT, bearer, call, events, next_event, place_order,
    send, subscribe_as,
};
use futures::StreamExt;
use http::{Method, StatusCode};
use integration_axum::{AppState, NewOrder, Order, auth};

/// The body of `event` as an order.
fn order_in(event: &eventsource_stream::Event) -> Order {
    serde_json::from_str(&event.data)
        .unwrap_or_else(|e| panic!("an order expected, got {:?}: {e}", event.data))
}

// -------------------------------------------------------------------------------------------
// (1) The app's own routes, state and middleware
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn api_routes_use_shared_state_and_the_login_middleware() {
    let server = TestServer::start_default().await;

    let health = call(Method::GET, &server.url("/api/health"), &[], "").await;
    assert_eq!(
        (health.status, health.text()),
        (StatusCode::OK, "ok".into())
    );

    // The login middleware reads the bearer header and the session cookie.
    let (name, ada) = bearer("ada");
    let me = call(Method::GET, &server.url("/api/me"), &[(name, &ada)], "").await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(
        me.json::<serde_json::Value>(),
        serde_json::json!({"name": "ada", "admin": false})
    );
    let cookie = format!("theme=dark; session={ADMIN}");
    let me = call(
        Method::GET,
        &server.url("/api/me"),
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(
        me.json::<serde_json::Value>(),
        serde_json::json!({"name": ADMIN, "admin": true})
    );

    // Anonymous callers get a 401 with a challenge, from the routes as from the hub.
    let anonymous = call(Method::GET, &server.url("/api/orders"), &[], "").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Bearer realm=\"orders\"")
    );
    let malformed = call(
        Method::GET,
        &server.url("/api/orders"),
        &[("authorization", "Basic YWRhOg==")],
        "",
    )
    .await;
    assert_eq!(malformed.status, StatusCode::UNAUTHORIZED);

    // Orders are stored in the shared state.
    let placed = place_order(&server, "ada", "tea", 2).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.text());
    let order: Order = placed.json();
    assert_eq!(
        (
            order.id,
            order.item.as_str(),
            order.quantity,
            order.customer.as_str()
        ),
        (1, "tea", 2, "ada")
    );
    let listed = call(Method::GET, &server.url("/api/orders"), &[(name, &ada)], "").await;
    assert_eq!(listed.json::<Vec<Order>>(), vec![order.clone()]);
    assert_eq!(server.state.orders().all(), vec![order]);

    let invalid = place_order(&server, "ada", "tea", 0).await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Shipping needs an admin: 403 for a user, 200 for the admin, 404 for no such order.
    let ship = server.url("/api/orders/1/ship");
    let by_user = call(Method::POST, &ship, &[(name, &ada)], "").await;
    assert_eq!(by_user.status, StatusCode::FORBIDDEN);
    let (_, root) = bearer(ADMIN);
    let by_admin = call(Method::POST, &ship, &[(name, &root)], "").await;
    assert_eq!(by_admin.status, StatusCode::OK);
    assert!(by_admin.json::<Order>().shipped);
    let missing = call(
        Method::POST,
        &server.url("/api/orders/99/ship"),
        &[(name, &root)],
        "",
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let unknown = call(Method::GET, &server.url("/nope"), &[], "").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

// -------------------------------------------------------------------------------------------
// (2) Compression: JSON yes, event streams no
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn large_json_responses_are_compressed() {
    let server = TestServer::start_default().await;
    for n in 0..200 {
        let order = NewOrder {
            item: format!("item number {n}"),
            quantity: n + 1,
        };
        server.state.orders().add(order, "ada");
    }
    let (name, ada) = bearer("ada");
    let url = server.url("/api/orders");

    let gzipped = call(
        Method::GET,
        &url,
        &[(name, &ada), ("accept-encoding", "gzip")],
        "",
    )
    .await;
    assert_eq!(gzipped.status, StatusCode::OK);
    assert_eq!(gzipped.header("content-encoding"), Some("gzip"));
    assert!(
        gzipped.body.starts_with(&[0x1f, 0x8b]),
        "a gzip member starts with its magic number"
    );

    let plain = call(Method::GET, &url, &[(name, &ada)], "").await;
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.json::<Vec<Order>>().len(), 200);
    assert!(
        gzipped.body.len() < plain.body.len() / 2,
        "compressed {} bytes to {}",
        plain.body.len(),
        gzipped.body.len()
    );
}

#[tokio::test]
async fn event_streams_are_not_compressed_and_deliver_each_event_at_once() {
    let server = TestServer::start_default().await;
    let response = send(
        Method::GET,
        &server.url("/events?topic=orders"),
        &[("cookie", "session=ada"), ("accept-encoding", "gzip")],
        "",
    )
    .await;
    assert_eq!(
        response.headers().get("content-encoding"),
        None,
        "CompressionLayer leaves text/event-stream alone"
    );
    let mut orders = events(response);

    // One at a time: each event must arrive before the next is published. A compressor holding
    // events back would make this time out.
    for n in 1..=5 {
        let placed = place_order(&server, "ada", &format!("item {n}"), n).await;
        assert_eq!(placed.status, StatusCode::CREATED);
        let event = next_event(&mut orders).await;
        assert_eq!(event.event, "created");
        assert_eq!(order_in(&event).id, u64::from(n));
    }
}

// -------------------------------------------------------------------------------------------
// (3) The hub's authorizer sees the user the login middleware set
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn subscribing_to_orders_needs_a_login() {
    let server = TestServer::start_default().await;
    let url = server.url("/events?topic=orders");

    let anonymous = call(Method::GET, &url, &[], "").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Bearer realm=\"orders\"")
    );

    // By cookie (what EventSource sends) and by bearer header (what scripts send).
    let mut by_cookie = subscribe_as(&server, "ada", "orders").await;
    let (name, bob) = bearer("bob");
    let mut by_header = events(send(Method::GET, &url, &[(name, &bob)], "").await);
    place_order(&server, "ada", "tea", 1).await;
    assert_eq!(next_event(&mut by_cookie).await.event, "created");
    assert_eq!(next_event(&mut by_header).await.event, "created");
    assert_eq!(server.state.hub().subscriber_count(), 2);
}

#[tokio::test]
async fn admin_topics_need_an_admin_and_unknown_topics_are_refused() {
    let server = TestServer::start_default().await;
    let audit = server.url("/events?topic=admin/audit");

    let anonymous = call(Method::GET, &audit, &[], "").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let by_user = call(Method::GET, &audit, &[("cookie", "session=ada")], "").await;
    assert_eq!(by_user.status, StatusCode::FORBIDDEN, "{}", by_user.text());
    // One forbidden topic refuses the whole request.
    let mixed = call(
        Method::GET,
        &server.url("/events?topic=orders&topic=admin/audit"),
        &[("cookie", "session=ada")],
        "",
    )
    .await;
    assert_eq!(mixed.status, StatusCode::FORBIDDEN);
    let unknown = call(
        Method::GET,
        &server.url("/events?topic=secrets"),
        &[("cookie", &format!("session={ADMIN}"))],
        "",
    )
    .await;
    assert_eq!(unknown.status, StatusCode::FORBIDDEN);

    let mut by_admin = subscribe_as(&server, ADMIN, "admin/audit").await;
    server
        .state
        .publisher()
        .publish_text("admin/audit", "checked")
        .await
        .expect("publish");
    assert_eq!(next_event(&mut by_admin).await.data, "checked");
}

#[tokio::test]
async fn publishing_over_http_needs_an_admin() {
    let server = TestServer::start_default().await;
    let mut audit = subscribe_as(&server, ADMIN, "admin/audit").await;
    let url = server.url("/publish");
    let form = ("content-type", "application/x-www-form-urlencoded");
    let body = "topic=admin/audit&data=from+http";

    let anonymous = call(Method::POST, &url, &[form], body).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Bearer realm=\"orders\"")
    );
    let (name, ada) = bearer("ada");
    let by_user = call(Method::POST, &url, &[form, (name, &ada)], body).await;
    assert_eq!(by_user.status, StatusCode::FORBIDDEN);

    let (_, root) = bearer(ADMIN);
    let by_admin = call(Method::POST, &url, &[form, (name, &root)], body).await;
    assert_eq!(by_admin.status, StatusCode::OK, "{}", by_admin.text());
    let event = next_event(&mut audit).await;
    assert_eq!(
        (event.data.as_str(), event.id.as_str()),
        ("from http", by_admin.text().as_str()),
        "only the admin's event arrived, with the id the publish returned"
    );
}

/// The pitfall the layer order avoids: with the login middleware inside the hub (added before
/// it), the authorizer runs before anybody is logged in and refuses everyone.
#[tokio::test]
async fn with_the_login_middleware_inside_the_hub_the_authorizer_sees_nobody() {
    let state = AppState::new(common::test_config()).expect("valid app state");
    let misordered = axum::Router::new()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(state.hub().layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let url = format!(
        "http://{}/events?topic=orders",
        listener.local_addr().expect("local addr")
    );
    let server = tokio::spawn(axum::serve(listener, misordered).into_future());

    let refused = call(Method::GET, &url, &[("cookie", "session=ada")], "").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    server.abort();
}

// -------------------------------------------------------------------------------------------
// (4) Handlers publish through the publisher in the state and in an extension
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn handlers_publish_from_the_state_and_from_an_extension() {
    let server = TestServer::start_default().await;
    let mut ada = subscribe_as(&server, "ada", "orders").await;
    let mut bob = subscribe_as(&server, "bob", "orders").await;

    // POST /api/orders publishes through State<AppState>.
    let placed: Order = place_order(&server, "ada", "coffee", 3).await.json();
    // POST /api/orders/{id}/ship publishes through Extension<Publisher>.
    let (name, root) = bearer(ADMIN);
    let shipped = call(
        Method::POST,
        &server.url(&format!("/api/orders/{}/ship", placed.id)),
        &[(name, &root)],
        "",
    )
    .await;
    assert_eq!(shipped.status, StatusCode::OK);

    for subscriber in [&mut ada, &mut bob] {
        let created = next_event(subscriber).await;
        assert_eq!(created.event, "created");
        assert_eq!(order_in(&created), placed);
        let shipped = next_event(subscriber).await;
        assert_eq!(shipped.event, "shipped");
        assert!(order_in(&shipped).shipped);
        assert_ne!(created.id, shipped.id, "every event has its own id");
    }
}

// -------------------------------------------------------------------------------------------
// (5) Graceful shutdown
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn graceful_shutdown_ends_open_streams_promptly() {
    let mut server = TestServer::start_default().await;
    let mut streams = Vec::new();
    for user in ["ada", "bob", "cy"] {
        streams.push(subscribe_as(&server, user, "orders").await);
    }
    streams.push(subscribe_as(&server, ADMIN, "admin/audit").await);
    streams.push(subscribe_as(&server, ADMIN, "orders").await);
    assert_eq!(server.state.hub().subscriber_count(), 5);

    server.stop();
    // Well within serve's own deadline: the hub ends the streams, nothing waits it out.
    let served = tokio::time::timeout(Duration::from_secs(5), &mut server.task)
        .await
        .expect("graceful shutdown completes promptly");
    served.expect("server task").expect("server ran cleanly");
    assert!(server.state.hub().is_shut_down());
    for mut stream in streams {
        let end = tokio::time::timeout(WAIT_LIMIT, stream.next()).await;
        assert!(
            end.expect("the stream ends").is_none(),
            "no more events after shutdown"
        );
    }
    assert_eq!(server.state.hub().subscriber_count(), 0);
}

// -------------------------------------------------------------------------------------------
// (6) CORS with credentials, around the hub's endpoints too
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_allowed_origin_may_open_an_event_stream_with_credentials() {
    let server = TestServer::start_default().await;
    let response = send(
        Method::GET,
        &server.url("/events?topic=orders"),
        &[
            ("origin", ALLOWED_ORIGIN),
            ("cookie", "session=ada"),
            ("accept", "text/event-stream"),
        ],
        "",
    )
    .await;
    let headers = response.headers().clone();
    assert_eq!(headers["access-control-allow-origin"], ALLOWED_ORIGIN);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    let mut orders = events(response);
    place_order(&server, "ada", "tea", 1).await;
    assert_eq!(next_event(&mut orders).await.event, "created");

    // A refusal carries the CORS headers too, so the page can read why.
    let refused = call(
        Method::GET,
        &server.url("/events?topic=orders"),
        &[("origin", ALLOWED_ORIGIN)],
        "",
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
}

#[tokio::test]
async fn the_cors_layer_answers_preflights_for_the_publish_endpoint() {
    let server = TestServer::start_default().await;
    let preflight = call(
        Method::OPTIONS,
        &server.url("/publish"),
        &[
            ("origin", ALLOWED_ORIGIN),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type,authorization",
            ),
        ],
        "",
    )
    .await;
    assert_eq!(
        preflight.status,
        StatusCode::OK,
        "answered by the CorsLayer, not the hub's 405"
    );
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    assert_eq!(
        preflight.header("access-control-allow-credentials"),
        Some("true")
    );
    let methods = preflight
        .header("access-control-allow-methods")
        .expect("allowed methods");
    assert!(methods.contains("POST"), "{methods}");
    let allowed_headers = preflight
        .header("access-control-allow-headers")
        .expect("allowed headers");
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
}

#[tokio::test]
async fn an_unknown_origin_gets_no_cors_headers() {
    let server = TestServer::start_default().await;
    let origin = ("origin", "http://evil.example");
    let response = send(
        Method::GET,
        &server.url("/events?topic=orders"),
        &[origin, ("cookie", "session=ada")],
        "",
    )
    .await;
    // The server still answers (CORS is enforced by browsers), but grants nothing: without
    // Access-Control-Allow-Origin the browser withholds the response. (tower-http sends
    // Access-Control-Allow-Credentials to every origin; alone, it grants nothing.)
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers().get("access-control-allow-origin"), None);
    drop(response);

    let preflight = call(
        Method::OPTIONS,
        &server.url("/publish"),
        &[origin, ("access-control-request-method", "POST")],
        "",
    )
    .await;
    assert_eq!(preflight.header("access-control-allow-origin"), None);
}
