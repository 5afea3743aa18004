//! One topic's log: a ring of the newest frames, each at a position that only grows, and the
//! signal that wakes the topic's parked readers when a frame arrives.

use std::collections::VecDeque;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::broker::Resume;
use crate::event::{Frame, Topic};
use crate::signal::Signal;

/// A topic's frames and its readers' wake list.
pub(crate) struct TopicLog {
    pub(crate) topic: Topic,
    ring: RwLock<Ring>,
    pub(crate) signal: Signal,
}

/// A notice that readers of the topic may have missed events, placed at a position.
#[derive(Debug, Clone)]
pub(crate) struct Mark {
    pub(crate) generation: u64,
    pub(crate) reason: Resume,
    pub(crate) position: u64,
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
    pub(crate) fn new(topic: Topic, evicted_through: u64) -> Self {
        Self {
            topic,
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
