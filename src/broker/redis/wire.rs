//! What travels through Redis: key and channel names, the Lua scripts, and reading frames and
//! script replies back.
//!
//! Keys, under a configurable prefix `P` so several apps can share one Redis:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:seq` | string | the last sequence issued (one counter for all topics) |
//! | `P:epoch` | string | made anew when the counter is created or the server restarted; in every id, so ids from before a reset or restart are recognised |
//! | `P:run` | string | the server `run_id` the epoch was made under |
//! | `P:h:<topic>` | stream | the topic's history: entry id `<sequence>-0`, field `f` = the encoded frame, `t` = the server's time in ms; trimmed to the retention |
//! | `P:c:<topic>` | channel | the encoded frame of every event published to the topic |

use bytes::Bytes;
use redis::Value;

use crate::event::{EventId, Frame, Topic};

/// Publishes one event atomically: takes the next sequence (creating the counter and a new
/// epoch if the store lost them), builds the frame by putting the `id:` line in front of the
/// event's encoded fields (the rule of `Frame::new`), appends it to every topic's history (with
/// the server's time, for age limits), trims the history by age and count while recording the
/// newest entry trimmed away, and publishes the frame on every topic's channel. Returns the id.
///
/// A new epoch starts whenever the counter is missing or the server's `run_id` changed since the
/// epoch was made: after a restart, even one that restored data, ids issued before may have
/// been lost and issued again, so they must not be compared with new ones.
///
/// KEYS: `P:seq`, `P:epoch`, `P:run`, then one history key per topic.
/// ARGV: the encoded fields, the history length, a random nonce (hex, used only when a new
/// epoch is made), the history's maximum age in milliseconds (0: none), then one channel per
/// topic (in KEYS order).
pub(super) const PUBLISH: &str = r"
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''
local epoch = redis.call('GET', KEYS[2])
if (not epoch) or redis.call('EXISTS', KEYS[1]) == 0 or redis.call('GET', KEYS[3]) ~= run_id then
  epoch = string.format('%x', tonumber(now[1])) .. ARGV[3]
  redis.call('SET', KEYS[2], epoch)
  redis.call('SET', KEYS[3], run_id)
  if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], 0) end
end
local sequence = redis.call('INCR', KEYS[1])
local id = epoch .. '-' .. sequence
local frame = 'id: ' .. id .. '\n' .. ARGV[1]
local entry = sequence .. '-0'
local max = tonumber(ARGV[2])
local max_age = tonumber(ARGV[4])
local function seq_of(entry_id) return tonumber(string.match(entry_id, '^(%d+)')) end
for t = 0, #KEYS - 4 do
  local key = KEYS[4 + t]
  -- Trimming does not record what it removed, so note the newest entry that goes, for
  -- resuming clients to learn they missed it (XINFO's max-deleted-entry-id).
  local trimmed = nil
  if max_age > 0 then
    local cutoff = now_ms - max_age
    local start = '-'
    local expired = nil
    repeat
      local batch = redis.call('XRANGE', key, start, '+', 'COUNT', 32)
      local young = false
      for _, e in ipairs(batch) do
        if (tonumber(e[2][4]) or 0) < cutoff then expired = e[1] else young = true break end
      end
      if expired then start = '(' .. expired end
    until young or #batch < 32
    if expired then
      redis.call('XTRIM', key, 'MINID', seq_of(expired) .. '-1')
      trimmed = expired
    end
  end
  local length = redis.call('XLEN', key)
  if length + 1 > max then
    if max == 0 then
      trimmed = entry
    else
      local oldest = redis.call('XRANGE', key, '-', '+', 'COUNT', length + 1 - max)
      trimmed = oldest[#oldest][1]
    end
  end
  local added = redis.pcall('XADD', key, 'MAXLEN', max, entry, 'f', frame, 't', now_ms)
  if type(added) == 'table' and added.err then
    -- History left from before a store reset holds larger ids: it is stale, start afresh.
    redis.call('DEL', key)
    redis.call('XADD', key, 'MAXLEN', max, entry, 'f', frame, 't', now_ms)
    trimmed = nil
    if max == 0 then trimmed = entry end
  end
  if trimmed then
    redis.call('XSETID', key, entry, 'MAXDELETEDID', trimmed)
  end
  redis.call('PUBLISH', ARGV[5 + t], frame)
end
return id
";

/// Reads, in one atomic step, what a resuming subscriber (or the dispatcher filling a gap)
/// needs: the epoch, the counter, whether the resume points are placeable, and per topic the
/// highest sequence trimmed from its history and the entries after its resume point. Every entry
/// issued up to the returned counter is in these histories or counted as trimmed, so the counter
/// is a clean cut: later events arrive live. Entries older than the age limit count as trimmed (a
/// quiet topic is trimmed only when it is next published to).
///
/// KEYS: `P:epoch`, `P:seq`, then one history key per topic.
/// ARGV: the epoch the resume points belong to, the history's maximum age in milliseconds (0:
/// none), then one resume sequence per topic (in KEYS order).
/// Returns `{epoch, counter, status, trimmed_1, entries_1, trimmed_2, entries_2, ...}` where status
/// is `complete`, or `unknown` when the epoch differs or a resume point is beyond the counter
/// (then every retained entry is returned).
pub(super) const REPLAY: &str = r"
local epoch = redis.call('GET', KEYS[1]) or ''
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local max_age = tonumber(ARGV[2]) or 0
local cutoff = 0
if max_age > 0 then
  local now = redis.call('TIME')
  cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - max_age
end
local status = 'complete'
if ARGV[1] ~= epoch then status = 'unknown' end
for t = 0, #KEYS - 3 do
  if (tonumber(ARGV[3 + t]) or 0) > last then status = 'unknown' end
end
local out = {epoch, tostring(last), status}
for t = 0, #KEYS - 3 do
  local key = KEYS[3 + t]
  local after = 0
  if status == 'complete' then after = tonumber(ARGV[3 + t]) or 0 end
  local trimmed = '0-0'
  local entries = {}
  if redis.call('EXISTS', key) == 1 then
    local info = redis.call('XINFO', 'STREAM', key)
    for j = 1, #info, 2 do
      if info[j] == 'max-deleted-entry-id' then trimmed = info[j + 1] end
    end
    for _, e in ipairs(redis.call('XRANGE', key, '(' .. after .. '-0', '+')) do
      if (tonumber(e[2][4]) or 0) < cutoff then trimmed = e[1] else entries[#entries + 1] = e end
    end
  end
  out[#out + 1] = trimmed
  out[#out + 1] = entries
end
return out
";

/// Key and channel names under one prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
    pub(super) sequence: String,
    pub(super) epoch: String,
    pub(super) run: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            sequence: format!("{prefix}:seq"),
            epoch: format!("{prefix}:epoch"),
            run: format!("{prefix}:run"),
        }
    }

    pub(super) fn history(&self, topic: &Topic) -> String {
        format!("{}:h:{topic}", self.prefix)
    }

    pub(super) fn channel(&self, topic: &Topic) -> String {
        format!("{}:c:{topic}", self.prefix)
    }
}

/// A frame read back from Redis, with the epoch of its id.
pub(super) struct ReadFrame {
    pub(super) epoch: String,
    pub(super) frame: Frame,
}

/// Reads a frame that starts with `id: <epoch>-<sequence>\n`, as the publish script writes it.
pub(super) fn read_frame(bytes: Bytes, topic: &Topic) -> Option<ReadFrame> {
    let line_end = bytes.iter().position(|&b| b == b'\n')?;
    let id = std::str::from_utf8(bytes.get(..line_end)?)
        .ok()?
        .strip_prefix("id: ")?;
    let (epoch, sequence) = id.rsplit_once('-')?;
    let sequence: u64 = sequence.parse().ok()?;
    let epoch = epoch.to_owned();
    let id = EventId::new(id).ok()?;
    Some(ReadFrame {
        epoch,
        frame: Frame::from_encoded(id, sequence, std::slice::from_ref(topic), bytes),
    })
}

/// The sequence in a stream entry id `<sequence>-0`.
pub(super) fn entry_sequence(entry_id: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(entry_id).ok()?;
    text.split_once('-')?.0.parse().ok()
}

/// One topic's part of a replay reply.
pub(super) struct TopicReplay {
    /// The highest sequence trimmed from the topic's history, 0 when none was.
    pub(super) trimmed_through: u64,
    pub(super) frames: Vec<ReadFrame>,
}

/// A parsed reply of the replay script.
pub(super) struct Replay {
    pub(super) epoch: String,
    /// The counter when the history was read: every later event arrives live.
    pub(super) counter: u64,
    /// Whether the resume point was placed (`false`: unknown, everything retained follows).
    pub(super) placed: bool,
    pub(super) topics: Vec<TopicReplay>,
}

/// Parses the replay script's reply for `topics` (in the order they were passed as keys).
pub(super) fn read_replay(reply: Value, topics: &[Topic]) -> Option<Replay> {
    let Value::Array(items) = reply else {
        return None;
    };
    let mut items = items.into_iter();
    let epoch = string(items.next()?)?;
    let counter = string(items.next()?)?.parse().ok()?;
    let placed = string(items.next()?)? == "complete";
    let mut replays = Vec::with_capacity(topics.len());
    for topic in topics {
        let trimmed = string(items.next()?)?;
        let trimmed_through = entry_sequence(trimmed.as_bytes())?;
        let Value::Array(entries) = items.next()? else {
            return None;
        };
        let mut frames = Vec::with_capacity(entries.len());
        for entry in entries {
            frames.push(read_entry(entry, topic)?);
        }
        replays.push(TopicReplay {
            trimmed_through,
            frames,
        });
    }
    Some(Replay {
        epoch,
        counter,
        placed,
        topics: replays,
    })
}

/// Reads one stream entry `[id, [field, frame]]`.
fn read_entry(entry: Value, topic: &Topic) -> Option<ReadFrame> {
    let Value::Array(parts) = entry else {
        return None;
    };
    let mut parts = parts.into_iter();
    let _entry_id = parts.next()?;
    let Value::Array(fields) = parts.next()? else {
        return None;
    };
    let Value::BulkString(frame) = fields.into_iter().nth(1)? else {
        return None;
    };
    read_frame(Bytes::from(frame), topic)
}

fn string(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    #[test]
    fn frames_read_back_as_the_encoder_wrote_them() {
        let topic = Topic::new("a").expect("valid topic");
        let id = EventId::new("18f2a3b4c-42").expect("valid id");
        let event = Event::text("x\ny").expect("valid event");
        let written = Frame::new(id.clone(), 42, std::slice::from_ref(&topic), &event);
        let read = read_frame(written.bytes().clone(), &topic).expect("readable frame");
        assert_eq!(read.epoch, "18f2a3b4c");
        assert_eq!(read.frame.id(), &id);
        assert_eq!(read.frame.sequence(), 42);
        assert_eq!(read.frame.bytes(), written.bytes());
    }

    #[test]
    fn malformed_frames_are_refused() {
        let topic = Topic::new("a").expect("valid topic");
        for bytes in [
            &b"data: x\n\n"[..],
            b"id: nodash\n",
            b"id: e-notanumber\n",
            b"id: e-1",
        ] {
            assert!(
                read_frame(Bytes::from_static(bytes), &topic).is_none(),
                "{bytes:?}"
            );
        }
    }
}
