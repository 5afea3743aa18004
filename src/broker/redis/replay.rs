//! Replays a resuming subscriber's history from Redis in pages, merged across its topics in
//! sequence order: no single call reads more than a page per topic, and the subscriber gets the
//! first frames before the rest is read.
//!
//! The first page also places the resume point ([`Resume`]). Later pages go on from where each
//! topic's previous page ended; a topic's frames are released up to the lowest "last read"
//! sequence among topics that may have more, so the merged order is exact.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Shared, wire};
use crate::broker::{BrokerError, ReplayBudget, ReplayPages, Resume};
use crate::event::{EventId, Frame, Topic};

/// Where a replay starts.
pub(super) enum From<'a> {
    After(&'a EventId),
    Earliest,
}

struct TopicPages {
    topic: Topic,
    /// The sequence of the last entry read from this topic's history.
    after: u64,
    buffered: VecDeque<Frame>,
    more: bool,
}

/// The state of a replay after its first page.
pub(super) struct Pages {
    shared: Arc<Shared>,
    epoch: String,
    /// The counter when the replay began: later events arrive live, so the replay stops here
    /// (and a replay fitted to its budget stays within it).
    end: u64,
    topics: Vec<TopicPages>,
}

/// The first page read, with how the resume point was placed.
pub(super) struct FirstPage {
    pub(super) resume: Resume,
    /// The sequence the client has seen through (0 when its id was not placed).
    pub(super) seen_through: u64,
    pages: Pages,
}

impl FirstPage {
    pub(super) fn into_pages(self) -> ReplayPages {
        Box::pin(futures::stream::unfold(
            Some(self.pages),
            |pages| async move {
                let mut pages = pages?;
                match pages.next_page().await {
                    Ok(Some(page)) => Some((Ok(page), Some(pages))),
                    Ok(None) => None,
                    Err(error) => Some((Err(error), None)),
                }
            },
        ))
    }
}

/// The place `(epoch, sequence)` of the event with id `id`: read from an id the publish script
/// made, looked up for a chosen one. An id that cannot be placed (another broker's, one from
/// before a store reset, a chosen one forgotten) gets an epoch no store has ("-" is never hex),
/// so the replay script reports it unknown.
async fn place_of(shared: &Shared, id: &EventId) -> Result<(String, u64), BrokerError> {
    if let Some((epoch, sequence)) = wire::own_place(id.as_str()) {
        return Ok((epoch.to_owned(), sequence));
    }
    let mut connection = shared
        .pool
        .get()
        .await
        .map_err(|e| BrokerError::unavailable("no Redis connection to read history", e))?;
    let place: Option<String> = redis::cmd("GET")
        .arg(shared.keys.chosen(id))
        .query_async(&mut connection)
        .await
        .map_err(|e| BrokerError::unavailable("cannot look up a chosen event id in Redis", e))?;
    Ok(place
        .as_deref()
        .and_then(wire::own_place)
        .map_or_else(|| ("-".to_owned(), 0), |(e, s)| (e.to_owned(), s)))
}

/// Reads the first page of every topic and places the resume point. With a `budget`, a replay
/// that would not fit starts later, at the newest point from which it fits (the oldest events
/// are the ones left out, and the resume is reported expired), as the engine does for the memory
/// broker.
pub(super) async fn first_page(
    shared: Arc<Shared>,
    topics: &[Topic],
    from: From<'_>,
    budget: Option<ReplayBudget>,
) -> Result<FirstPage, BrokerError> {
    let (epoch, sequence) = match from {
        From::After(id) => place_of(&shared, id).await?,
        From::Earliest => ("-".to_owned(), 0),
    };
    let starts: Vec<(Topic, u64)> = topics.iter().map(|t| (t.clone(), sequence)).collect();
    let mut replay = read(&shared, &starts, &epoch).await?;
    let placed = replay.placed;
    let mut resume = match (&from, placed) {
        (From::After(_), true) => Resume::Complete,
        (From::After(_), false) => Resume::Unknown,
        (From::Earliest, _) => Resume::Complete,
    };
    let mut after = if placed { sequence } else { 0 };
    let end = replay.counter;
    if let Some(budget) = budget
        && !fits(&replay, budget)
        && let Some(start) = budget_start(&shared, topics, after, end, budget).await?
    {
        // The oldest events do not fit: start after them, and say so.
        after = start;
        if resume == Resume::Complete {
            resume = Resume::Expired;
        }
        let starts: Vec<(Topic, u64)> = topics.iter().map(|t| (t.clone(), after)).collect();
        replay = read(&shared, &starts, &replay.epoch).await?;
        if !replay.placed {
            return Err(reset_during_replay());
        }
    }
    let mut pages = Pages {
        shared,
        epoch: replay.epoch.clone(),
        end,
        topics: Vec::with_capacity(topics.len()),
    };
    for (topic, part) in topics.iter().zip(replay.topics) {
        if resume == Resume::Complete && part.trimmed_through > after {
            resume = Resume::Expired;
        }
        pages.topics.push(TopicPages {
            topic: topic.clone(),
            after,
            buffered: VecDeque::new(),
            more: true,
        });
        let index = pages.topics.len() - 1;
        pages.take(index, part);
    }
    Ok(FirstPage {
        resume,
        seen_through: after,
        pages,
    })
}

impl Pages {
    /// Stores one topic's page.
    fn take(&mut self, index: usize, part: wire::TopicReplay) {
        let epoch = &self.epoch;
        let topic = &mut self.topics[index];
        topic.more = part.more;
        for read in part.frames {
            if read.frame.sequence() > self.end {
                // Published after the replay began: it arrives live.
                topic.more = false;
                break;
            }
            topic.after = topic.after.max(read.frame.sequence());
            // Entries from before a store reset belong to another epoch.
            if &read.epoch == epoch {
                topic.buffered.push_back(read.frame);
            }
        }
        if topic.more && topic.buffered.is_empty() {
            // A full page of entries too old or from another epoch: nothing to merge by, and
            // nothing the subscriber may have.
            topic.more = false;
        }
    }

    /// The next frames in sequence order, reading more pages as needed; `None` at the end.
    async fn next_page(&mut self) -> Result<Option<Vec<Frame>>, BrokerError> {
        loop {
            // When a topic runs dry, every topic with more to read and less than its share of
            // a page buffered is read along with it, so the page is shared and the merge goes
            // on for a whole page before the next read.
            let open = self.topics.iter().filter(|t| t.more).count();
            let share = (self.shared.replay_page / open.max(1)).max(1);
            let dry = self.topics.iter().any(|t| t.more && t.buffered.is_empty());
            let starved: Vec<usize> = (0..self.topics.len())
                .filter(|&i| dry && self.topics[i].more && self.topics[i].buffered.len() < share)
                .collect();
            if !starved.is_empty() {
                let starts: Vec<(Topic, u64)> = starved
                    .iter()
                    .map(|&i| (self.topics[i].topic.clone(), self.topics[i].after))
                    .collect();
                let replay = read(&self.shared, &starts, &self.epoch).await?;
                if !replay.placed || replay.epoch != self.epoch {
                    return Err(reset_during_replay());
                }
                for (&index, part) in starved.iter().zip(replay.topics) {
                    self.take(index, part);
                }
                continue;
            }
            // Frames up to the lowest last-read sequence among topics with more to read are
            // final: no later page can hold a smaller one.
            let bound = self
                .topics
                .iter()
                .filter(|t| t.more)
                .filter_map(|t| t.buffered.back().map(Frame::sequence))
                .min()
                .unwrap_or(u64::MAX);
            let mut page = Vec::new();
            for topic in &mut self.topics {
                while topic
                    .buffered
                    .front()
                    .is_some_and(|f| f.sequence() <= bound)
                {
                    page.extend(topic.buffered.pop_front());
                }
            }
            if page.is_empty() {
                return Ok(None);
            }
            page.sort_unstable_by_key(Frame::sequence);
            page.dedup_by_key(|frame| frame.sequence());
            return Ok(Some(page));
        }
    }
}

fn reset_during_replay() -> BrokerError {
    BrokerError::unavailable(
        "the Redis store was reset during a replay; reconnect to resume",
        std::io::Error::from(std::io::ErrorKind::Interrupted),
    )
}

/// Whether a first page shows the whole replay within `budget`: every topic read to its end,
/// and the events (each once) within both limits.
fn fits(replay: &wire::Replay, budget: ReplayBudget) -> bool {
    if replay.topics.iter().any(|topic| topic.more) {
        return false;
    }
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0;
    for read in replay.topics.iter().flat_map(|topic| &topic.frames) {
        if seen.insert(read.frame.sequence()) {
            bytes += read.frame.bytes().len();
        }
    }
    seen.len() <= budget.events() && bytes <= budget.bytes()
}

/// Where a replay of `(after, end]` must start to fit `budget`: `None` when it fits as it is.
/// Reads the histories newest first from `end` (later events arrive live, and must not use up
/// the budget), in steps of a bounded size ([`wire::BUDGET_SCAN`]), one script call each, so
/// publishing goes on between them.
async fn budget_start(
    shared: &Shared,
    topics: &[Topic],
    after: u64,
    end: u64,
    budget: ReplayBudget,
) -> Result<Option<u64>, BrokerError> {
    let mut connection = shared
        .pool
        .get()
        .await
        .map_err(|e| BrokerError::unavailable("no Redis connection to read history", e))?;
    let batch = (SCAN_STEP / topics.len().max(1)).max(2);
    // The cursor is an exclusive upper bound: start below the entry after `end`.
    let mut cursors = vec![format!("{}-0", end.saturating_add(1)); topics.len()];
    // Redis's Lua prints numbers of 10^14 and more in exponent form: a budget that large is
    // no limit at all, so cap it below.
    let (mut events, mut bytes) = (
        budget.events().min(LUA_EXACT),
        budget.bytes().min(LUA_EXACT),
    );
    loop {
        let mut invocation = shared.budget_scan.prepare_invoke();
        for topic in topics {
            invocation.key(shared.keys.history(topic));
        }
        invocation
            .arg(after)
            .arg(events)
            .arg(bytes)
            .arg(shared.retention.max_age_ms)
            .arg(batch);
        for cursor in &cursors {
            invocation.arg(cursor);
        }
        let reply: Vec<String> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|e| BrokerError::unavailable("cannot read history from Redis", e))?;
        let malformed = || {
            BrokerError::unavailable(
                "Redis returned a budget scan in an unexpected shape",
                std::io::Error::from(std::io::ErrorKind::InvalidData),
            )
        };
        let mut reply = reply.into_iter();
        let state = reply.next().ok_or_else(malformed)?;
        let start: u64 = reply
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(malformed)?;
        events = reply
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(malformed)?;
        bytes = reply
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(malformed)?;
        cursors = reply.collect();
        if cursors.len() != topics.len() {
            return Err(malformed());
        }
        match state.as_str() {
            "fits" => return Ok(None),
            "cut" => return Ok(Some(start)),
            "more" => {}
            _ => return Err(malformed()),
        }
    }
}

/// About how many entries one step of a budget scan reads, over all topics.
const SCAN_STEP: usize = 64;

/// The largest count Redis's Lua reads and prints back as a plain integer.
const LUA_EXACT: usize = 10_000_000_000_000;

/// Reads one page for each `(topic, after)` in one atomic script call.
async fn read(
    shared: &Shared,
    starts: &[(Topic, u64)],
    epoch: &str,
) -> Result<wire::Replay, BrokerError> {
    let mut connection = shared
        .pool
        .get()
        .await
        .map_err(|e| BrokerError::unavailable("no Redis connection to read history", e))?;
    let read = wire::PageRead {
        keys: &shared.keys,
        script: &shared.replay,
        starts,
        epoch,
        retention: shared.retention,
        page: shared.replay_page,
        page_bytes: wire::PAGE_BYTES,
    };
    wire::read_pages(read, &mut connection, "cannot read history from Redis").await
}
