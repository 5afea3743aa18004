//! The benchmark the project is judged by: our hub against a hand-written axum `Sse` +
//! `tokio::sync::broadcast` endpoint, on identical load, in the same run, server CPU only.
//!
//! ```text
//! cargo run --release --example load -- --scenario fanout-1k
//! cargo run --release --example load -- --scenario all --json load.json --chart load.svg
//! cargo run --release --example load -- --subscribers 200 --events 1000 --rate 500 --size 256
//! cargo run --release --example load -- --idle 5000
//! cargo run --release --example load -- --subscribers 19000 --events 40 --rate 5 --repeat 1
//! cargo run --release --features redis --example load -- --redis redis://127.0.0.1:6379 \
//!     --servers 3 --subscribers 50000 --events 20 --rate 2 --repeat 1 --clients-per-process 12500
//! cargo run --release --features redis --example load -- --redis redis://127.0.0.1:6379 \
//!     --subscribers 1000 --events 4000 --rate max --publishers 8
//! ```
//!
//! The example plays three roles. The driver (the default) runs each scenario `--repeat` times
//! per implementation, alternating hub, axum, hub, axum, and for each run starts a fresh server
//! child (`--role server --impl hub|axum`) and client children (`--role clients`, at most
//! `--clients-per-process` streams each, as a process may hold 20,000 fds). Once every stream is
//! live the driver tells the server on stdin to publish; the server publishes in-process (no HTTP
//! publish in the loop), each event's data starting with its sequence number and its send time in
//! nanoseconds since the epoch. The clients check that every stream got every event exactly once
//! and in order, and measure publish-to-receipt latency. The driver reads the server's CPU time
//! and RSS from /proc, so client CPU never counts.
//!
//! `--rate max` publishes in bursts of `--burst` events (default 200) as fast as the publish call
//! returns, with a yield after each publish that returned without waiting (the memory broker's,
//! the comparator's; a publish that waited for Redis or NATS has let the streams run already);
//! the next burst starts once every client has the last.
//! A burst stays below the hub's per-subscriber queue (256 frames by default), which ends a
//! subscriber that falls further behind; `--burst 0` publishes everything in one burst, which
//! shows exactly that. The comparator's channel holds every event of the run, so it never lags.
//! Latency at rate max measures how long a burst takes to drain, so compare it only loosely.
//!
//! Reported per scenario: medians with min–max over the repeats, and the hub/axum ratio of the
//! medians, which stays meaningful on a noisy shared machine where absolute numbers do not.
//! Beside server CPU per delivery, its user part (the server's own code; the rest is the kernel
//! sending) and events per write (deliveries over the server's write system calls, `syscw` in
//! /proc/PID/io): how many frames shared a write, which is most of what CPU per delivery follows.
//! Any lost, duplicated or reordered event is printed loudly and makes the exit status non-zero.
//!
//! Scenarios: `fanout-1k` and `fanout-10k` (rate max), `steady-5k` (10 events/s), `latency-5k`
//! (50 events/s), `idle` (RSS per idle stream for the hub mounted both ways, the comparator and
//! a plain axum streaming response, `/hold`), `all`, or `custom` from `--subscribers --events
//! --rate --size` (`--idle N` for idle streams). `--stalled N` adds streams that never read to
//! hub runs.
//! Hub options: `--redis URL` (with `--features redis`), `--nats URL` (with `--features nats`),
//! `--write-delay-ms N` (the hub holds frames back up to N ms and writes them together),
//! `--mount layer|around` (`router.layer(hub.layer())`, the default, or the hub's layer around
//! the finished router).
//!
//! `--servers N` (needs `--redis`) starts N hub servers on the same Redis key prefix and gives
//! them the streams in turn (stream k goes to server k mod N, across client processes); only the
//! first publishes, so every other server's streams get their events through Redis. CPU and RSS
//! are summed over the servers, and each server's share is printed on stderr. The axum comparator
//! has no cross-process fan-out, so it is skipped, and the output says so. A server may hold as
//! many streams as the open-file limit allows (less about 100 for itself); the driver refuses a
//! load that would need more per server, rather than measure a server stalled on `accept`.
//!
//! `--arrivals poisson` makes every fixed rate (`--rate N`, `steady-5k`, `latency-5k`) the mean of
//! a Poisson process: events at random moments, with exponential gaps, as many independent
//! publishers make them, instead of evenly spaced (`--rate poisson:N` for one custom run). The
//! gaps come from a fixed seed, so the hub and the comparator get the same moments.
//!
//! `--publishers N` (default 1) has the server publish from N concurrent tasks, task P taking the
//! events numbered P mod N, each at its share of the rate. Concurrent publishers through one
//! broker have no order between them: the broker's order is the truth. So the clients count loss
//! and duplicates over all events, but check order only within each publisher's events. With
//! `--redis` each publish waits for Redis, so one publisher leaves the runtime idle between
//! round trips; several keep the broker busy.
//! Output: tables on stdout, progress on stderr, `--json PATH`, `--chart PATH.svg`.

#![forbid(unsafe_code)]

mod chart;
mod child;
mod clients;
mod driver;
mod fleet;
mod histogram;
mod options;
mod report;
mod server;
mod usage;

use std::process::ExitCode;

use options::Role;

fn main() -> ExitCode {
    let role = match options::parse() {
        Ok(role) => role,
        Err(message) => {
            eprintln!("load: {message}");
            return ExitCode::from(2);
        }
    };
    let outcome = match role {
        Role::Driver(options) => drive(&options),
        Role::Server(options) => runtime().and_then(|rt| rt.block_on(server::run(options))),
        Role::Clients(options) => runtime().and_then(|rt| rt.block_on(clients::run(options))),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("load: {error}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Box<dyn std::error::Error>> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs the scenarios, writes the JSON and the chart, and fails if any event went astray.
fn drive(options: &options::DriverOptions) -> Result<(), Box<dyn std::error::Error>> {
    let results = driver::run(options)?;
    if let Some(path) = &options.json {
        let all: Vec<_> = results
            .iter()
            .map(report::ScenarioResult::to_json)
            .collect();
        let document = serde_json::json!({
            "clock_ticks_per_second": usage::clock_ticks(),
            "repeat": options.repeat,
            "scenarios": all,
        });
        std::fs::write(path, serde_json::to_string_pretty(&document)?)?;
        eprintln!("wrote {path}");
    }
    if let Some(path) = &options.chart {
        std::fs::write(path, chart::svg(&results))?;
        eprintln!("wrote {path}");
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.errors() > 0)
        .map(|r| r.name())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "!!! events lost, duplicated or reordered in: {}",
            failed.join(", ")
        )
        .into())
    }
}
