//! Replays a resuming subscriber's history from Redis in pages, merged across its topics in
//! sequence order: no single call reads more than a page per topic, and the subscriber gets the
//! first frames before the rest is read.
//!
//! The first page also places the resume point ([`Resume`]). Later pages go on from where each
//! topic's previous page ended; a topic's frames are released up to the lowest "last read"
//! sequence among topics that may have more, so the merged order is exact.

use std::collections::VecDeque;
use std::sync::Arc;

use super::wire::Source;
use super::{Shared, wire};
use crate::broker::{BrokerError, ReplayBudget, ReplayPages, Resume};
use crate::event::{EventId, Frame, Topic};
use crate::selector::Selector;

/// Where a replay starts.
pub(super) enum From<'a> {
    After(&'a EventId),
    Earliest,
}

/// What a subscription replays.
pub(super) enum Scope {
    /// Exact topics: each topic's own history, merged.
    Topics(Vec<Topic>),
    /// Patterns, and maybe exact topics too: the global history (every event once), keeping
    /// the events whose topics these name or match.
    Matching(Interest),
}

/// The topics and patterns a replay from the global history keeps events of.
pub(super) struct Interest {
    pub(super) topics: Vec<Topic>,
    pub(super) patterns: Vec<Selector>,
}

impl Interest {
    /// Whether one of `frame`'s topics is named or matched.
    fn wants(&self, frame: &Frame) -> bool {
        frame.topics().iter().any(|topic| {
            self.topics.contains(topic) || self.patterns.iter().any(|p| p.matches(topic.as_str()))
        })
    }
}

struct TopicPages {
    source: Source,
    /// The sequence of the last entry read from this history.
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
    /// For a replay from the global history: which of its events the subscriber wants.
    filter: Option<Interest>,
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

/// Reads the first page of every history and places the resume point. With a `budget`, a
/// replay that would not fit starts later, at the newest point from which it fits (the oldest
/// events are the ones left out, and the resume is reported expired), as the engine does for
/// the memory broker.
///
/// A [`Scope::Matching`] replay reads the global history; when that is off
/// ([`pattern_history`](super::RedisBrokerBuilder::pattern_history) 0) nothing is replayed, and
/// a resume is reported expired unless nothing was published since its start.
pub(super) async fn first_page(
    shared: Arc<Shared>,
    scope: Scope,
    from: From<'_>,
    budget: Option<ReplayBudget>,
) -> Result<FirstPage, BrokerError> {
    let (sources, filter) = match scope {
        Scope::Topics(topics) => (topics.into_iter().map(Source::Topic).collect(), None),
        Scope::Matching(_) if shared.pattern_history == 0 => (Vec::new(), None),
        Scope::Matching(interest) => (vec![Source::Global], Some(interest)),
    };
    let no_history = sources.is_empty();
    let (epoch, sequence) = match from {
        From::After(id) => place_of(&shared, id).await?,
        From::Earliest => ("-".to_owned(), 0),
    };
    let starts: Vec<(Source, u64)> = sources.iter().map(|s| (s.clone(), sequence)).collect();
    let mut replay = read(&shared, &starts, &epoch).await?;
    let placed = replay.placed;
    let mut resume = match (&from, placed) {
        (From::After(_), true) => Resume::Complete,
        (From::After(_), false) => Resume::Unknown,
        (From::Earliest, _) => Resume::Complete,
    };
    let mut after = if placed { sequence } else { 0 };
    let end = replay.counter;
    if no_history && resume == Resume::Complete && end > after {
        // Events were published since the start, and none of them can be replayed.
        resume = Resume::Expired;
    }
    if let Some(budget) = budget
        && !fits(&replay, filter.as_ref(), budget)
        && let Some(start) = match &filter {
            None => budget_start(&shared, &sources, after, end, budget).await?,
            Some(interest) => {
                budget_start_matching(&shared, interest, &replay.epoch, after, end, budget).await?
            }
        }
    {
        // The oldest events do not fit: start after them, and say so.
        after = start;
        if resume == Resume::Complete {
            resume = Resume::Expired;
        }
        let starts: Vec<(Source, u64)> = sources.iter().map(|s| (s.clone(), after)).collect();
        replay = read(&shared, &starts, &replay.epoch).await?;
        if !replay.placed {
            return Err(reset_during_replay());
        }
    }
    let mut pages = Pages {
        shared,
        epoch: replay.epoch.clone(),
        end,
        topics: Vec::with_capacity(sources.len()),
        filter,
    };
    for (source, part) in sources.into_iter().zip(replay.topics) {
        if resume == Resume::Complete && part.trimmed_through > after {
            resume = Resume::Expired;
        }
        pages.topics.push(TopicPages {
            source,
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
        let filter = self.filter.as_ref();
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
            if &read.epoch == epoch && filter.is_none_or(|f| f.wants(&read.frame)) {
                topic.buffered.push_back(read.frame);
            }
        }
        // A filtered page may keep nothing and still be followed by entries the subscriber
        // wants: the next read goes on after it (`after` moved past every entry read).
        if topic.more && topic.buffered.is_empty() && filter.is_none() {
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
                let starts: Vec<(Source, u64)> = starved
                    .iter()
                    .map(|&i| (self.topics[i].source.clone(), self.topics[i].after))
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

/// Whether a first page shows the whole replay within `budget`: every history read to its end,
/// and the events (each once, only those `filter` wants) within both limits.
fn fits(replay: &wire::Replay, filter: Option<&Interest>, budget: ReplayBudget) -> bool {
    if replay.topics.iter().any(|topic| topic.more) {
        return false;
    }
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0;
    for read in replay.topics.iter().flat_map(|topic| &topic.frames) {
        if filter.is_none_or(|f| f.wants(&read.frame)) && seen.insert(read.frame.sequence()) {
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
    topics: &[Source],
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
        for source in topics {
            invocation.key(shared.keys.source(source));
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

/// As [`budget_start`] for a replay from the global history: reads it newest first from `end`,
/// a step of entries per call (so publishing goes on between them), and spends the budget on the
/// events `interest` wants, which only this process can tell.
async fn budget_start_matching(
    shared: &Shared,
    interest: &Interest,
    epoch: &str,
    after: u64,
    end: u64,
    budget: ReplayBudget,
) -> Result<Option<u64>, BrokerError> {
    let mut connection = shared
        .pool
        .get()
        .await
        .map_err(|e| BrokerError::unavailable("no Redis connection to read history", e))?;
    let unavailable = |e| BrokerError::unavailable("cannot read history from Redis", e);
    // Entries older than the age limit are not replayed: the scan stops at the first one.
    let cutoff = if shared.retention.max_age_ms > 0 {
        let (seconds, micros): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        (seconds * 1000 + micros / 1000).saturating_sub(shared.retention.max_age_ms)
    } else {
        0
    };
    let (mut events, mut bytes) = (budget.events(), budget.bytes());
    let mut upper = format!("{end}-0");
    let lower = format!("({after}-0");
    loop {
        let reply: redis::Value = redis::cmd("XREVRANGE")
            .arg(&shared.keys.global)
            .arg(&upper)
            .arg(&lower)
            .arg("COUNT")
            .arg(SCAN_STEP)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let entries = wire::read_entries(reply, &Source::Global).ok_or_else(|| {
            BrokerError::unavailable(
                "Redis returned history in an unexpected shape",
                std::io::Error::from(std::io::ErrorKind::InvalidData),
            )
        })?;
        let full = entries.len() == SCAN_STEP;
        for (read, time) in &entries {
            if time < &cutoff {
                // Older entries are too old as well, and not replayed anyway.
                return Ok(None);
            }
            if read.epoch != epoch || !interest.wants(&read.frame) {
                continue;
            }
            let size = read.frame.bytes().len();
            if events == 0 || size > bytes {
                return Ok(Some(read.frame.sequence()));
            }
            events -= 1;
            bytes -= size;
        }
        match entries.last() {
            Some((read, _)) if full => upper = format!("({}-0", read.frame.sequence()),
            _ => return Ok(None),
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
    starts: &[(Source, u64)],
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
