//! One log: a ring of the newest frames of a topic (or of the topics a pattern matches), each at
//! a position that only grows, and the signal that wakes the log's parked readers when a frame
//! arrives.

use std::collections::VecDeque;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::broker::Resume;
use crate::event::{Frame, Topic};
use crate::selector::Selector;
use crate::signal::Signal;

/// What a log holds the frames of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogKey {
    /// One topic's frames.
    Topic(Topic),
    /// The frames of every topic a pattern matches, shared by the pattern's readers.
    Pattern(Selector),
    /// One reader's replay of a pattern: the matching frames that were retained when it
    /// subscribed. Not in the engine, and never appended to.
    Replay(Selector),
}

/// A log's frames and its readers' wake list.
pub(crate) struct TopicLog {
    pub(crate) key: LogKey,
    ring: RwLock<Ring>,
    pub(crate) signal: Signal,
}

/// A notice that readers of the topic may have missed events.
#[derive(Debug, Clone)]
pub(crate) struct Mark {
    pub(crate) generation: u64,
    pub(crate) reason: Resume,
    /// The newest store reset on this topic, as (generation, position): kept when a later
    /// notice replaces the reset's mark, so a reader that saw neither still resets.
    pub(crate) reset: Option<(u64, u64)>,
}

impl Mark {
    /// The mark of a notice given when the ring's head is at `head`, keeping the newest reset
    /// of `previous` (the mark it replaces), or being one.
    pub(crate) fn new(generation: u64, reason: Resume, head: u64, previous: Option<&Mark>) -> Self {
        let reset = match reason {
            Resume::Unknown => Some((generation, head)),
            _ => previous.and_then(|m| m.reset),
        };
        Self {
            generation,
            reason,
            reset,
        }
    }
}

pub(crate) struct Ring {
    pub(crate) frames: VecDeque<Frame>,
    /// The position of `frames[0]`; a frame's position never changes.
    pub(crate) start: u64,
    pub(crate) bytes: usize,
    /// The highest sequence that left the ring.
    pub(crate) evicted_through: u64,
    pub(crate) mark: Option<Mark>,
}

impl TopicLog {
    pub(crate) fn new(key: LogKey, evicted_through: u64) -> Self {
        Self {
            key,
            ring: RwLock::new(Ring {
                frames: VecDeque::new(),
                start: 0,
                bytes: 0,
                evicted_through,
                mark: None,
            }),
            signal: Signal::default(),
        }
    }

    /// The topic, for a topic's log.
    pub(crate) fn topic(&self) -> Option<&Topic> {
        match &self.key {
            LogKey::Topic(topic) => Some(topic),
            _ => None,
        }
    }

    /// A replay log holding `frames` (in sequence order), for one reader.
    pub(crate) fn replay(pattern: Selector, frames: Vec<Frame>) -> Self {
        let log = Self::new(LogKey::Replay(pattern), 0);
        {
            let mut ring = log.write();
            ring.bytes = frames.iter().map(|f| f.bytes().len()).sum();
            ring.frames = frames.into();
        }
        log
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Ring> {
        // Ring operations leave it consistent at every step; a panic elsewhere must not stop
        // delivery for good.
        self.ring.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Ring> {
        self.ring.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl Ring {
    /// The position after the newest frame.
    pub(crate) fn head(&self) -> u64 {
        self.start + self.frames.len() as u64
    }

    /// Removes the oldest frame, returning its size in bytes.
    pub(crate) fn pop_front(&mut self) -> Option<usize> {
        let frame = self.frames.pop_front()?;
        self.start += 1;
        self.bytes -= frame.bytes().len();
        self.evicted_through = self.evicted_through.max(frame.sequence());
        Some(frame.bytes().len())
    }

    /// The index of the oldest frame a replay may include, when only the newest `history`
    /// frames count as history, and the highest sequence older than it.
    pub(crate) fn replay_window(&self, history: usize) -> (usize, u64) {
        let first = self.frames.len().saturating_sub(history);
        let before = match first {
            0 => self.evicted_through,
            i => self.frames[i - 1].sequence(),
        };
        (first, before)
    }

    /// Drops every frame (a store reset): readers past them start over at the head.
    pub(crate) fn clear(&mut self) -> usize {
        let bytes = self.bytes;
        self.start = self.head();
        self.frames.clear();
        self.bytes = 0;
        self.evicted_through = 0;
        bytes
    }
}
