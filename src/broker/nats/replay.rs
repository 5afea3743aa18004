//! Replays a resuming subscriber's history from the stream in pages: messages are read by
//! sequence, a page at a time, and filtered in-process by the subscriber's topics and patterns
//! (so a pattern replays as well as a topic does). The replay ends at the stream's last sequence
//! when the subscriber's reader was already placed (the cut): later events arrive live.

use std::collections::VecDeque;
use std::sync::Arc;

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use futures::StreamExt;

use super::Shared;
use super::subject::Subjects;
use super::wire::{self, Epoch};
use crate::broker::{BrokerError, ReplayBudget, ReplayPages, Resume};
use crate::{EventId, Frame, Grant, Selector, Start, Topic};

/// How many messages of a page are requested at once.
const CONCURRENT_READS: usize = 32;

/// What a replay delivers: frames on these topics, or on topics these patterns match.
#[derive(Clone)]
pub(super) struct Filter {
    pub(super) topics: Vec<Topic>,
    pub(super) patterns: Vec<Selector>,
}

impl Filter {
    fn matches(&self, frame: &Frame) -> bool {
        frame.topics().iter().any(|topic| {
            self.topics.contains(topic) || self.patterns.iter().any(|p| p.matches(topic.as_str()))
        })
    }
}

/// The replay after its first read, with how the resume point was placed.
pub(super) struct FirstPage {
    pub(super) resume: Resume,
    /// The sequence the client has seen through (0 when its id was not placed).
    pub(super) seen_through: u64,
    pages: Pages,
}

struct Pages {
    stream: Stream,
    subjects: Subjects,
    epoch: Epoch,
    filter: Filter,
    /// The next sequence to read.
    next: u64,
    /// The last sequence to read (the cut).
    end: u64,
    page: usize,
    /// Frames read ahead (a budgeted replay is read newest first, then held here).
    held: VecDeque<Frame>,
    /// When set, the replay walks these subjects' messages (merged by sequence) instead of
    /// every message of the stream.
    cursors: Option<Vec<Cursor>>,
    /// Whether each page is checked for history trimmed before it was read (a replay whose
    /// resume point was placed; one already reported expired or unknown is not).
    check: bool,
    /// The sequence through which the replay has been checked.
    checked_through: u64,
    /// The oldest sequence read message by message since the last check that was missing.
    missing: Option<u64>,
    /// Whether the replay read by subject since the last check.
    merged: bool,
}

/// A replay's position on one subject.
struct Cursor {
    subject: String,
    /// The next sequence to look from.
    from: u64,
    /// The subject's next message at or after `from`, read ahead.
    pending: Option<StreamMessage>,
    done: bool,
}

/// Cursors on the subjects of an exact-topic replay (its topics' and the multi-topic one), when
/// their messages are a small part of the range to replay: reading them one by one then beats
/// reading every message of the range. `None` for pattern replays (any subject may match).
async fn by_subject(
    shared: &Shared,
    pages: &Pages,
    after: u64,
) -> Result<Option<Vec<Cursor>>, BrokerError> {
    if !pages.filter.patterns.is_empty() || pages.next > pages.end {
        return Ok(None);
    }
    let mut subjects: Vec<String> = pages
        .filter
        .topics
        .iter()
        .map(|t| shared.subjects.topic(t))
        .collect();
    subjects.push(shared.subjects.multi());
    let mut held = 0;
    for subject in &subjects {
        held += super::trim::count(&pages.stream, subject).await?;
    }
    let range = pages.end - after;
    if (held as u64).saturating_mul(SPARSE) >= range {
        return Ok(None);
    }
    Ok(Some(
        subjects
            .into_iter()
            .map(|subject| Cursor {
                subject,
                from: after + 1,
                pending: None,
                done: false,
            })
            .collect(),
    ))
}

/// How many times more messages the range to replay must hold than the subscriber's subjects
/// for the replay to read by subject.
const SPARSE: u64 = 4;

impl FirstPage {
    pub(super) fn into_pages(self) -> ReplayPages {
        Box::pin(futures::stream::unfold(
            Some(self.pages),
            |pages| async move {
                let mut pages = pages?;
                // Whether this call reads the stream (not only pages already read and checked).
                let reads = pages.next <= pages.end || pages.cursors.is_some();
                // Frames held from subscribe were read and checked then, as the history stood:
                // a trim since cannot have taken them.
                let held = !pages.held.is_empty();
                match pages.next_page().await {
                    Ok(Some(page)) if held => Some((Ok(page), Some(pages))),
                    Ok(Some(page)) => match pages.trimmed_meanwhile().await {
                        Ok(false) => Some((Ok(page), Some(pages))),
                        // Ended, not skipped over: the client resumes from what it got, and
                        // is told its resume expired.
                        Ok(true) => Some((Err(trimmed()), None)),
                        Err(error) => Some((Err(error), None)),
                    },
                    // The rest of the range held none of the replay's events: checked as a page
                    // is, since they may have left the history before they were read.
                    Ok(None) if !reads => None,
                    Ok(None) => match pages.trimmed_meanwhile().await {
                        Ok(false) => None,
                        Ok(true) => Some((Err(trimmed()), None)),
                        Err(error) => Some((Err(error), None)),
                    },
                    Err(error) => Some((Err(error), None)),
                }
            },
        ))
    }
}

/// The error that ends a replay whose events left the history before they were read.
fn trimmed() -> BrokerError {
    BrokerError::unavailable(
        "events of the replay left the NATS stream's history before they were read",
        "history trimmed",
    )
}

/// Places the resume point of `start` in the stream and prepares the replay up to the stream's
/// current end. With a `budget`, a replay that would not fit starts later, at the newest point
/// from which it fits (the oldest events are left out, and the resume is reported expired).
pub(super) async fn first_page(
    shared: &Arc<Shared>,
    filter: Filter,
    start: &Start,
    grant: &Grant,
    budget: Option<ReplayBudget>,
) -> Result<FirstPage, BrokerError> {
    // Fetched with the stream: its state as of now.
    let stream = shared.stream().await?;
    let info = stream.cached_info().clone();
    let epoch = Epoch::of(&info);
    let end = info.state.last_sequence;
    let first = info.state.first_sequence.max(1);
    let (mut after, mut resume) = match start {
        Start::After(id) => match place(shared, &stream, &epoch, id, end).await? {
            // What came before the first message is gone: the replay starts at it (not at the
            // resume point, which may be millions of sequences older).
            Some(sequence) if sequence + 1 < first => (first - 1, Resume::Expired),
            Some(sequence) => (sequence, Resume::Complete),
            None => (first - 1, Resume::Unknown),
        },
        _ => (first - 1, Resume::Complete),
    };
    if resume == Resume::Complete && !matches!(start, Start::Earliest) {
        resume = super::trim::since(&stream, &shared.subjects, &filter, after).await?;
    }
    let mut pages = Pages {
        stream,
        subjects: shared.subjects.clone(),
        epoch,
        filter,
        next: after + 1,
        end,
        page: shared.replay_page,
        held: VecDeque::new(),
        cursors: None,
        check: resume == Resume::Complete,
        checked_through: after,
        missing: None,
        merged: false,
    };
    if shared.history_per_topic == 0 {
        // No history is kept: nothing is replayed, and anything published since is missed.
        if resume == Resume::Complete && end > after {
            resume = Resume::Expired;
        }
        pages.next = end + 1;
    } else if let Some(budget) = budget {
        // Read whole at subscribe: forward by subject when the subscriber's subjects are sparse
        // in the range, else newest first until the budget is spent.
        pages.cursors = by_subject(shared, &pages, after).await?;
        let start = match pages.cursors {
            Some(_) => pages.fit_forward(budget, grant).await?,
            None => pages.fit(budget, grant).await?,
        };
        if let Some(start) = start {
            after = after.max(start);
            if resume == Resume::Complete {
                resume = Resume::Expired;
            }
        }
        if pages.trimmed_meanwhile().await? {
            resume = Resume::Expired;
        }
    } else {
        pages.cursors = by_subject(shared, &pages, after).await?;
        if let Some(page) = pages.next_page().await? {
            // The first page is read now, as the subscriber's history stands when it subscribes:
            // a topic's history may move on before the stream is polled.
            if pages.trimmed_meanwhile().await? {
                resume = Resume::Expired;
            }
            pages.held = page.into();
        }
    }
    let seen_through = match resume {
        // Nothing before the end is replayed: a live frame the feed appends late is old.
        _ if shared.history_per_topic == 0 => end,
        Resume::Unknown => 0,
        _ => after,
    };
    Ok(FirstPage {
        resume,
        seen_through,
        pages,
    })
}

/// The sequence `id` names in the current stream: one of the broker's own ids of this epoch,
/// or a chosen id the stream recorded. `None` when it names none (another epoch or broker).
async fn place(
    shared: &Shared,
    stream: &Stream,
    epoch: &Epoch,
    id: &EventId,
    end: u64,
) -> Result<Option<u64>, BrokerError> {
    let sequence = match epoch.sequence_of(id) {
        Some(sequence) => Some(sequence),
        None => shared.chosen_id_sequence(stream, id).await?,
    };
    Ok(sequence.filter(|&s| s <= end))
}

impl Pages {
    /// Whether events of the replay may have left the history before the reads since the last
    /// check could read them.
    ///
    /// Read message by message, the replay knows which sequences were missing when it asked
    /// for them: with none missing, nothing was lost; a missing one was lost if the stream-wide
    /// limits dropped it (it is older than the stream's first message now) or a subject of the
    /// replay was trimmed past it. Read by subject, missing messages do not show: then any
    /// stream-wide drop past the position of the last check, or a subject trimmed past it,
    /// counts (conservative).
    async fn trimmed_meanwhile(&mut self) -> Result<bool, BrokerError> {
        let merged = std::mem::take(&mut self.merged);
        let missing = self.missing.take();
        let after = self.checked_through;
        self.checked_through = self.read_through();
        if !self.check {
            return Ok(false);
        }
        let after = match (merged, missing) {
            (false, None) => return Ok(false),
            (false, Some(missing)) => missing - 1,
            (true, missing) => missing.map_or(after, |m| after.min(m - 1)),
        };
        // The stream-wide limits (age, bytes, count) drop the oldest messages whatever their
        // subject. (The per-subject limit moves the stream's first message too, but is judged
        // per subject below.)
        let config = &self.stream.cached_info().config;
        let stream_wide =
            !config.max_age.is_zero() || config.max_bytes > 0 || config.max_messages > 0;
        if stream_wide {
            let info =
                self.stream.get_info().await.map_err(|e| {
                    BrokerError::unavailable("cannot read the NATS stream's state", e)
                })?;
            if info.state.first_sequence > after + 1 {
                return Ok(true);
            }
        }
        let resume = super::trim::since(&self.stream, &self.subjects, &self.filter, after).await?;
        Ok(resume == Resume::Expired)
    }

    /// The sequence through which every message of the replay's range has been read (or
    /// skipped by subject).
    fn read_through(&self) -> u64 {
        match &self.cursors {
            Some(cursors) => cursors
                .iter()
                .map(|c| match (&c.pending, c.done) {
                    (Some(message), _) => message.sequence - 1,
                    (None, true) => self.end,
                    (None, false) => c.from - 1,
                })
                .min()
                .unwrap_or(self.end),
            None => self.next - 1,
        }
    }

    /// Reads the replay newest first until `budget` is spent; when it is spent before the
    /// start, keeps what fits and returns the sequence the replay now starts after.
    async fn fit(
        &mut self,
        budget: ReplayBudget,
        grant: &Grant,
    ) -> Result<Option<u64>, BrokerError> {
        let (mut events, mut bytes) = (budget.events(), budget.bytes());
        let mut upper = self.end;
        let mut kept = VecDeque::new();
        while upper >= self.next {
            let lower = upper.saturating_sub(self.page as u64 - 1).max(self.next);
            let frames = self.read(lower, upper).await?;
            for frame in frames.into_iter().rev() {
                if !grant.allows(&frame) {
                    continue;
                }
                let size = frame.bytes().len();
                if events == 0 || size > bytes {
                    let start = frame.sequence();
                    self.held = kept;
                    self.next = self.end + 1;
                    return Ok(Some(start));
                }
                events -= 1;
                bytes -= size;
                kept.push_front(frame);
            }
            if lower == self.next {
                break;
            }
            upper = lower - 1;
        }
        // Everything fits, and is read already.
        self.held = kept;
        self.next = self.end + 1;
        Ok(None)
    }

    /// Reads the replay forward (by subject: the subscriber's messages are sparse in the range)
    /// and keeps the newest frames that fit `budget`; when older ones did not fit, returns the
    /// sequence the replay now starts after.
    async fn fit_forward(
        &mut self,
        budget: ReplayBudget,
        grant: &Grant,
    ) -> Result<Option<u64>, BrokerError> {
        let mut kept: VecDeque<Frame> = VecDeque::new();
        let mut bytes = 0;
        let mut start = None;
        while let Some(page) = self.next_page().await? {
            for frame in page {
                if !grant.allows(&frame) {
                    continue;
                }
                bytes += frame.bytes().len();
                kept.push_back(frame);
                while kept.len() > budget.events() || bytes > budget.bytes() {
                    let Some(dropped) = kept.pop_front() else {
                        break;
                    };
                    bytes -= dropped.bytes().len();
                    start = Some(dropped.sequence());
                }
            }
        }
        self.held = kept;
        self.next = self.end + 1;
        self.cursors = None;
        Ok(start)
    }

    /// The next frames in sequence order; `None` at the end.
    async fn next_page(&mut self) -> Result<Option<Vec<Frame>>, BrokerError> {
        if !self.held.is_empty() {
            return Ok(Some(std::mem::take(&mut self.held).into()));
        }
        if self.cursors.is_some() {
            let page = self.merge_page().await?;
            // Without cursors now, the rest is read message by message.
            if page.is_some() || self.cursors.is_some() {
                return Ok(page);
            }
        }
        while self.next <= self.end {
            let upper = self.end.min(self.next.saturating_add(self.page as u64 - 1));
            let frames = self.read(self.next, upper).await?;
            self.next = upper + 1;
            if !frames.is_empty() {
                return Ok(Some(frames));
            }
        }
        Ok(None)
    }

    /// The next page of an exact-topic replay, from its subjects' messages merged by sequence;
    /// `None` at the end.
    async fn merge_page(&mut self) -> Result<Option<Vec<Frame>>, BrokerError> {
        self.merged = true;
        let Self {
            stream,
            subjects,
            epoch,
            filter,
            next,
            end,
            page,
            cursors: cursors_slot,
            ..
        } = self;
        let Some(cursors) = cursors_slot.as_mut() else {
            return Ok(None);
        };
        let mut frames = Vec::new();
        while frames.len() < *page {
            for cursor in cursors.iter_mut() {
                if cursor.pending.is_some() || cursor.done {
                    continue;
                }
                match stream
                    .get_first_raw_message_by_subject(&cursor.subject, cursor.from)
                    .await
                {
                    Ok(message) if message.sequence <= *end => cursor.pending = Some(message),
                    Ok(_) => cursor.done = true,
                    Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                        cursor.done = true;
                    }
                    Err(e) if super::is_unparsable(&e) => {
                        // A message on this subject the client cannot parse, at a sequence it
                        // cannot learn: read the rest message by message (which skips it), from
                        // the first message no cursor has handed out yet.
                        *next = cursors
                            .iter()
                            .filter(|c| !c.done || c.pending.is_some())
                            .map(|c| c.pending.as_ref().map_or(c.from, |m| m.sequence))
                            .min()
                            .unwrap_or(*end + 1);
                        *cursors_slot = None;
                        return Ok((!frames.is_empty()).then_some(frames));
                    }
                    Err(e) => {
                        return Err(BrokerError::unavailable(
                            "cannot read history from the NATS stream",
                            e,
                        ));
                    }
                }
            }
            let Some(cursor) = cursors
                .iter_mut()
                .filter(|c| c.pending.is_some())
                .min_by_key(|c| c.pending.as_ref().map_or(u64::MAX, |m| m.sequence))
            else {
                break;
            };
            let Some(message) = cursor.pending.take() else {
                break;
            };
            cursor.from = message.sequence + 1;
            if subjects.is_event(&message.subject)
                && let Some(frame) = wire::decode_frame(
                    epoch,
                    message.sequence,
                    Some(&message.headers),
                    &message.payload,
                )
                && filter.matches(&frame)
            {
                frames.push(frame);
            }
        }
        Ok((!frames.is_empty()).then_some(frames))
    }

    /// The frames this replay delivers among the messages `lower..=upper`, in order; the
    /// sequences missing among them are noted for the next trim check.
    async fn read(&mut self, lower: u64, upper: u64) -> Result<Vec<Frame>, BrokerError> {
        let (frames, missing) = self.read_range(lower, upper).await?;
        if let Some(missing) = missing {
            self.missing = Some(self.missing.map_or(missing, |m| m.min(missing)));
        }
        Ok(frames)
    }

    /// The frames among the messages `lower..=upper`, and the first sequence that was missing.
    async fn read_range(
        &self,
        lower: u64,
        upper: u64,
    ) -> Result<(Vec<Frame>, Option<u64>), BrokerError> {
        let stream = &self.stream;
        let mut reads = futures::stream::iter(lower..=upper)
            .map(|sequence| async move { (sequence, stream.get_raw_message(sequence).await) })
            .buffered(CONCURRENT_READS);
        let mut frames = Vec::new();
        let mut missing = None;
        while let Some((sequence, read)) = reads.next().await {
            let message = match read {
                Ok(message) => message,
                // Deleted, or trimmed (maybe since the replay began).
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                    missing.get_or_insert(sequence);
                    continue;
                }
                Err(e) if super::is_unparsable(&e) => {
                    tracing::warn!(sequence, "skipping an unparsable NATS stream message");
                    continue;
                }
                Err(e) => {
                    return Err(BrokerError::unavailable(
                        "cannot read history from the NATS stream",
                        e,
                    ));
                }
            };
            if !self.subjects.is_event(&message.subject) {
                continue;
            }
            if let Some(frame) = wire::decode_frame(
                &self.epoch,
                sequence,
                Some(&message.headers),
                &message.payload,
            ) && self.filter.matches(&frame)
            {
                frames.push(frame);
            }
        }
        Ok((frames, missing))
    }
}
