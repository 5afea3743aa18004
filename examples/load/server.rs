//! `--role server`: serves the hub or the hand-written comparator, and publishes on command.
//!
//! It prints `listening ADDR` on stdout, then reads commands on stdin until stdin closes:
//! - `publish N RATE SIZE FIRST PUBLISHERS` publishes events FIRST..FIRST+N of SIZE bytes at RATE
//!   per second in all (or `max`) from PUBLISHERS concurrent tasks, task P publishing the events
//!   whose number is P mod PUBLISHERS, in order, and answers `published N NANOS SUBSCRIBERS`;
//! - `subscribers` answers `subscribers N`, the streams this process has open.

use std::error::Error;
use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::response::IntoResponse;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio::time::{Instant, MissedTickBehavior};
use tower_sse_pubsub::{Hub, MemoryBroker, Publisher};

use test_support::comparator::hand_written;

use crate::child::say;
use crate::options::{HubSettings, Implementation, Mount, Rate, ServerOptions};

/// The topic every load stream subscribes to on the hub.
pub const LOAD_TOPIC: &str = "load";

/// Far above any load this tool makes, so the hub's limit never refuses a stream.
const MAX_STREAMS: usize = 200_000;

/// Where published events go.
#[derive(Clone)]
enum Source {
    Hub(Hub, Publisher),
    Axum(broadcast::Sender<String>),
}

impl Source {
    async fn send(&self, data: String) -> Result<(), Box<dyn Error>> {
        match self {
            Self::Hub(_, publisher) => {
                publisher.publish_text(LOAD_TOPIC, data).await?;
            }
            // With no receivers `send` fails, which is no error for a benchmark.
            Self::Axum(sender) => drop(sender.send(data)),
        }
        Ok(())
    }

    fn subscribers(&self) -> usize {
        match self {
            Self::Hub(hub, _) => hub.subscriber_count(),
            Self::Axum(sender) => sender.receiver_count(),
        }
    }
}

/// Serves until stdin closes.
pub async fn run(options: ServerOptions) -> Result<(), Box<dyn Error>> {
    let source = match options.implementation {
        Implementation::Hub => {
            let hub = build_hub(&options.hub).await?;
            let publisher = hub.publisher();
            Source::Hub(hub, publisher)
        }
        Implementation::Axum => Source::Axum(broadcast::channel(options.capacity.max(16)).0),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    say(&format!("listening {}", listener.local_addr()?))?;
    match (&source, options.hub.mount) {
        (Source::Hub(hub, _), Mount::Layer) => {
            let app = routes().layer(hub.layer());
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        (Source::Hub(hub, _), Mount::Around) => {
            let app = tower::ServiceBuilder::new()
                .map_response(IntoResponse::into_response)
                .layer(hub.layer())
                .service(routes());
            let app = axum::ServiceExt::<axum::extract::Request>::into_make_service(app);
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        (Source::Axum(sender), _) => {
            // The hand-written alternative the hub competes with.
            let app = routes().route("/broadcast", hand_written(sender.clone()));
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
    }

    let mut commands = stdin_lines();
    while let Some(line) = commands.recv().await {
        if line.trim() == "subscribers" {
            say(&format!("subscribers {}", source.subscribers()))?;
            continue;
        }
        let command = parse_publish(&line)?;
        let events = command.events;
        let started = Instant::now();
        publish_concurrently(&source, command).await?;
        let nanos = started.elapsed().as_nanos();
        say(&format!(
            "published {events} {nanos} {}",
            source.subscribers()
        ))?;
    }
    Ok(())
}

/// Builds the hub the way an app would, with room for every load stream.
async fn build_hub(settings: &HubSettings) -> Result<Hub, Box<dyn Error>> {
    let builder = Hub::builder()
        .allow_anonymous_publish()
        .max_subscribers(MAX_STREAMS)
        .write_delay(Duration::from_millis(settings.write_delay_ms));
    let builder = match (&settings.redis, &settings.nats) {
        (Some(_), Some(_)) => return Err("give --redis or --nats, not both".into()),
        (Some(url), None) => builder.broker(redis_broker(url).await?),
        (None, Some(url)) => builder.broker(nats_broker(url).await?),
        (None, None) => builder.broker(MemoryBroker::builder().build()),
    };
    Ok(builder.build()?)
}

#[cfg(feature = "redis")]
async fn redis_broker(url: &str) -> Result<tower_sse_pubsub::RedisBroker, Box<dyn Error>> {
    Ok(tower_sse_pubsub::RedisBroker::builder(url)
        .key_prefix("load")
        .build()
        .await?)
}

#[cfg(not(feature = "redis"))]
async fn redis_broker(_url: &str) -> Result<MemoryBroker, Box<dyn Error>> {
    Err(
        "--redis needs the redis feature: cargo run --release --features redis --example load"
            .into(),
    )
}

#[cfg(feature = "nats")]
async fn nats_broker(url: &str) -> Result<tower_sse_pubsub::NatsBroker, Box<dyn Error>> {
    Ok(tower_sse_pubsub::NatsBroker::builder([url])
        .stream_name("LOAD_SSE")
        .subject_prefix("load.sse")
        .build()
        .await?)
}

#[cfg(not(feature = "nats"))]
async fn nats_broker(_url: &str) -> Result<MemoryBroker, Box<dyn Error>> {
    Err("--nats needs the nats feature: cargo run --release --features nats --example load".into())
}

/// `/hold` answers like an event stream that never sends an event, without the hub: the baseline
/// of what hyper and axum hold for an idle streaming response.
fn routes() -> axum::Router {
    let hold = axum::routing::get(|| async {
        let opening = futures::stream::once(async {
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b": ok\n\n"))
        });
        axum::body::Body::from_stream(opening.chain(futures::stream::pending()))
    });
    axum::Router::new().route("/hold", hold)
}

/// One `publish` command.
#[derive(Debug, Clone, Copy)]
struct PublishCommand {
    events: u64,
    rate: Rate,
    size: usize,
    first: u64,
    publishers: u64,
}

/// Runs the command's publishers as concurrent tasks and waits for all of them.
async fn publish_concurrently(
    source: &Source,
    command: PublishCommand,
) -> Result<(), Box<dyn Error>> {
    let source = Arc::new(source.clone());
    let tasks: Vec<_> = (0..command.publishers)
        .map(|publisher| {
            let source = source.clone();
            tokio::spawn(async move {
                publish(&source, command, publisher)
                    .await
                    .map_err(|error| error.to_string())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Publishes this publisher's share of the events, those whose number is `publisher` mod the
/// publisher count, at its share of the rate; each one's data is `SEQ SENT_NANOS ` padded with
/// `x` to `size`.
async fn publish(
    source: &Source,
    command: PublishCommand,
    publisher: u64,
) -> Result<(), Box<dyn Error>> {
    let PublishCommand {
        events,
        rate,
        size,
        first,
        publishers,
    } = command;
    let mut pace = match rate {
        Rate::Max => Pace::Max,
        Rate::PerSecond(rate) => {
            let period = Duration::from_secs_f64(publishers as f64 / rate);
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
            Pace::Even(ticker)
        }
        Rate::Poisson(rate) => Pace::Poisson {
            mean_gap_secs: publishers as f64 / rate,
            next: Instant::now(),
            random: SplitMix64(first ^ (publisher << 32) ^ 0x5EED),
        },
    };
    let mine = (first..first + events).filter(|seq| seq % publishers == publisher);
    // Whether the last publish returned at once, without waiting.
    let mut at_once = true;
    for seq in mine {
        match &mut pace {
            Pace::Even(ticker) => {
                ticker.tick().await;
            }
            Pace::Poisson {
                mean_gap_secs,
                next,
                random,
            } => {
                // Deadlines, not sleeps, so the time spent publishing does not slow the rate.
                tokio::time::sleep_until(*next).await;
                *next += Duration::from_secs_f64(random.exponential(*mean_gap_secs));
            }
            // The memory broker's publish never waits, so without a yield the publisher would
            // run the whole burst before any stream task writes a byte. A publish that waited (a
            // round trip to Redis or NATS) has let them run already: a yield on top would send
            // the publisher to the back of the run queue a second time per event, which no app
            // publishing in a loop does, and the streams would find fewer events per wake.
            Pace::Max if at_once => tokio::task::yield_now().await,
            Pace::Max => {}
        }
        let sent = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let mut data = format!("{seq} {sent} ");
        let pad = size.saturating_sub(data.len());
        data.extend(std::iter::repeat_n('x', pad));
        let (published, ready) = ready_at_once(source.send(data)).await;
        published?;
        at_once = ready;
    }
    Ok(())
}

/// When a publisher publishes its next event.
enum Pace {
    Max,
    Even(tokio::time::Interval),
    Poisson {
        mean_gap_secs: f64,
        next: Instant,
        random: SplitMix64,
    },
}

/// A small seeded random number generator (SplitMix64), enough to space events; the seed makes
/// every run's arrival pattern the same for the hub and the comparator.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// An exponentially distributed gap with the given mean.
    fn exponential(&mut self, mean: f64) -> f64 {
        // Uniform in (0, 1]: 53 random bits, never zero, so the logarithm is finite.
        let uniform = ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
        -uniform.ln() * mean
    }
}

/// Awaits `future`, and tells whether it was ready at its first poll.
async fn ready_at_once<T>(future: impl Future<Output = T>) -> (T, bool) {
    let mut future = std::pin::pin!(future);
    let mut first = None;
    let output = std::future::poll_fn(|cx| {
        let polled = future.as_mut().poll(cx);
        first.get_or_insert(polled.is_ready());
        polled
    })
    .await;
    (output, first.unwrap_or(true))
}

fn parse_publish(line: &str) -> Result<PublishCommand, Box<dyn Error>> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["publish", events, rate, size, first, publishers] => Ok(PublishCommand {
            events: events.parse()?,
            rate: rate.parse()?,
            size: size.parse()?,
            first: first.parse()?,
            publishers: publishers.parse::<u64>()?.max(1),
        }),
        _ => Err(format!(
            "unknown command {line:?}; expected: publish N RATE SIZE FIRST PUBLISHERS, or \
             subscribers"
        )
        .into()),
    }
}

/// Lines from stdin; the channel closes when stdin does.
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (sender, receiver) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}
