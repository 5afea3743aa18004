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
//! | `P:h:<topic>` | stream | the topic's history: entry id `<sequence>-0`, field `f` = the encoded frame, `t` = the server's time in ms, `m` = the header; trimmed to the retention, expires when the topic goes quiet |
//! | `P:s:<topic>` | string | the bytes of frames and headers in the topic's history; expires with it |
//! | `P:t` | sorted set | checkpoints of the counter over time, for the expiry floor (at most about 257 entries) |
//! | `P:tn` | string | `<epoch> <time>` of the newest checkpoint in `P:t`, so most publishes need not read `P:t`; only a hint, checked against the epoch |
//! | `P:k:<key>` | string | the id a publish with this idempotency key got; expires |
//! | `P:i:<id>` | string | the place `<epoch>-<sequence>` of the event published with this chosen id; expires with the histories (the idle expiry, or the age limit if sooner) |
//! | `P:g` | stream | the global history, for pattern subscriptions: every event once, whatever its topics, as in `P:h:<topic>`; trimmed to its own count and bytes (`pattern_history`), expires when nothing is published; absent when that is 0 |
//! | `P:gs` | string | the bytes of frames and headers in the global history; expires with it |
//! | `P:c:<topic>` | channel | every event published to this topic alone: header, LF, frame |
//! | `P:m` | channel | every event published to several topics at once: header, LF, frame |
//!
//! A frame's header travels with it through the channel and in the history (field `m`): a
//! private flag (`p` or `-`), for an event with a chosen id a space and its place
//! `<epoch>-<sequence>` (its id line carries the chosen id, so it cannot tell the place), then
//! the event's topics, each preceded by a unit separator (0x1F, which no topic contains). So
//! every instance knows all of an event's topics and its place in the one order, and an event
//! published to several topics crosses Redis once. Events without a chosen id carry no place:
//! their id line is `<epoch>-<sequence>`.
//!
//! A process with local pattern subscribers PSUBSCRIBEs `P:c:*` (the prefix escaped) besides
//! its channels: the wildcard feed. Prefixes must not nest (`app` and `app:c` share keys and
//! channels).

use bytes::Bytes;
use redis::Value;

use crate::event::{EventId, Frame, Topic};

/// A Lua function both scripts share: the expiry floor. Every topic's keys expire `ttl` ms after
/// its last publish, taking their history (and its record of what was trimmed) with them, so an
/// event published before `now - ttl` may be gone without a trace. `P:t` holds checkpoints
/// (score: the server's time in ms; member: the last sequence issued before it), one per
/// `ttl / 256` at most; the first checkpoint after `now - ttl` bounds the sequences published
/// before then. Returns that bound: every sequence above it was published within `ttl`, so its
/// topic's keys still exist.
macro_rules! floor_lua {
    () => {
        r"
local function expiry_floor(checkpoints, now_ms, ttl, last)
  local first = redis.call('ZRANGEBYSCORE', checkpoints, '(' .. (now_ms - ttl), '+inf', 'LIMIT', 0, 1)
  if #first == 0 then return last end
  return tonumber(first[1])
end
local function seq_of(entry_id) return tonumber(string.match(entry_id, '^(%d+)')) end
"
    };
}

/// Publishes one event atomically: takes the next sequence (creating the counter and a new
/// epoch if the store lost them), builds the frame by putting the `id:` line in front of the
/// event's encoded fields (the rule of `Frame::new`), appends it to every topic's history and
/// to the global history (with the server's time, for age limits), trims each history by age,
/// count and bytes (the global one in batches, once it is a 64th over its count or bytes) while
/// recording the newest entry trimmed away, sets the histories to expire
/// when they go quiet, and publishes the frame once. Returns the id.
///
/// A new epoch starts whenever the counter is missing or the server's `run_id` changed since the
/// epoch was made: after a restart, even one that restored data, ids issued before may have
/// been lost and issued again, so they must not be compared with new ones.
///
/// A topic's history key made afresh (first publish, or after it expired) records the expiry
/// floor as trimmed: events of an earlier, expired history are reported missed, never complete.
/// The global history made afresh records every earlier sequence as trimmed: it holds nothing
/// from before it was made (it may be turned on long after the topics).
///
/// With an idempotency key whose first publish is remembered, returns that id and does nothing.
/// With a chosen id, the frame's `id:` line carries it and the header carries the event's place
/// (`<epoch>-<sequence>`); the id is remembered (`P:i:<id>`, expiring with the histories) so a
/// resume after it can be placed. A chosen id still remembered, or one shaped like the ids the
/// script makes (hex, a dash, digits), is refused: the script returns `{'duplicate'}` and
/// changes nothing. The idempotency key is checked first, so a retry returns the first id.
///
/// Redis spends most of a publish on the script's calls (each costs a few µs of argument and
/// reply conversion besides its own work), so the script makes as few as it can: a publish to
/// one topic at its count bound makes 10, and 4 more for the global history (16 and 22 before):
/// - one MGET reads everything the script decides on before it writes: the epoch and the run
///   it was made under, the idempotency key, the chosen id, the newest checkpoint (`P:tn`) and
///   every history's size;
/// - INCR takes the sequence; it returns 1 exactly when the counter was missing (the script
///   never leaves it at 0), which is when the counter was lost, so no EXISTS is needed;
/// - the checkpoint check reads `P:tn` (`<epoch> <time>` of the newest checkpoint, written with
///   every checkpoint the script adds) instead of the sorted set; only when that says one may
///   be due, or is missing or of another epoch (an older script made a new epoch: it does not
///   write `P:tn`), does it read the sorted set, as before, and refresh `P:tn`;
/// - a history's trimming is planned before the append: XLEN (and EXISTS only when that is 0,
///   to tell an absent history from an empty one) gives the count, the size key the bytes, and
///   the oldest entries are read only as far as the age, count and byte bounds drop them (one
///   entry at a topic's count bound); the append then trims them itself (XADD `MINID`) instead
///   of an XLEN and an XTRIM after it. The result is the same as appending and then trimming by
///   age, count and bytes in turn, as the script did before;
/// - numbers that go to Redis at every publish (the time, the expiry, most counts) are passed as
///   text, which Redis takes as is rather than formatting a Lua number anew at each call.
///
/// Keys written by older versions of this script work unchanged, and older and newer instances
/// may publish side by side during an upgrade: the keys keep their formats (a size key holds the
/// bytes, as a number), and `P:tn` is only a hint, checked against the epoch and made anew
/// whenever it is missing or stale (an older script adds checkpoints without it: the newer one
/// then reads `P:t`, as it did before). One case differs: should `P:t` alone be deleted by hand
/// (or evicted) while `P:tn` stays, the next checkpoint comes up to `ttl / 256` later than it
/// would have, and meanwhile a topic history made afresh records more as trimmed (a resume from
/// before it is reported missed, never complete).
///
/// KEYS: `P:seq`, `P:epoch`, `P:run`, `P:k:<key>` (or an empty name without a key), `P:t`,
/// `P:i:<id>` (or an empty name without a chosen id), `P:g` and `P:gs` (or two empty names when
/// the global history is off), `P:tn`, then per topic its history key and its size key.
/// ARGV: the encoded fields, the history length, a random nonce (hex, used only when a new
/// epoch is made), the history's maximum age in milliseconds (0: none), the frame header (see
/// [`header`]), the channel to publish on, how long the idempotency key is remembered in
/// milliseconds, the server's run id as the publishing connection learned it when it was made
/// (empty when unknown: then the script asks INFO, which costs about 20 µs of Redis time), the
/// most bytes of history per topic (0: no limit), the milliseconds after its last publish that
/// a topic's keys expire, the chosen id (empty: none), and the global history's length and most
/// bytes (0: no limit).
pub(super) const PUBLISH: &str = concat!(
    floor_lua!(),
    r"
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
-- The same as text, made without formatting a number.
local now_text = now[1] .. string.sub('00000' .. now[2], -6, -4)
local chosen = ARGV[11]
-- One read for all the script decides on before it writes (see above).
local names = {KEYS[2], KEYS[3], KEYS[9]}
local remembered, taken = 0, 0
if KEYS[4] ~= '' then names[#names + 1] = KEYS[4]; remembered = #names end
if chosen ~= '' then names[#names + 1] = KEYS[6]; taken = #names end
local sizes = #names
for k = 11, #KEYS, 2 do names[#names + 1] = KEYS[k] end
if KEYS[7] ~= '' then names[#names + 1] = KEYS[8] end
local values = redis.call('MGET', unpack(names))
if remembered > 0 and values[remembered] then return values[remembered] end
if chosen ~= '' then
  -- Shaped like ours (epoch, dash, sequence), it would name two events; remembered, it did.
  if string.match(chosen, '^%x+%-%d+$') or values[taken] then
    return {'duplicate'}
  end
end
local run_id = ARGV[8]
if run_id == '' then run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or '' end
local epoch = values[1]
-- INCR makes a missing counter and returns 1: the counter was lost (or never made).
local sequence = redis.call('INCR', KEYS[1])
if (not epoch) or sequence == 1 or values[2] ~= run_id then
  epoch = string.format('%x', tonumber(now[1])) .. ARGV[3]
  redis.call('MSET', KEYS[2], epoch, KEYS[3], run_id)
  redis.call('DEL', KEYS[5], KEYS[9])
  values[3] = false
end
local sequence_text = tostring(sequence)
local place = epoch .. '-' .. sequence_text
local id = place
local header = ARGV[5]
if chosen ~= '' then
  id = chosen
  -- The id line no longer tells the place: the header does, after the private flag.
  header = string.sub(header, 1, 1) .. ' ' .. place .. string.sub(header, 2)
end
local frame = 'id: ' .. id .. '\n' .. ARGV[1]
local entry = sequence_text .. '-0'
local max_age = tonumber(ARGV[4])
local ttl_text = ARGV[10]
local ttl = tonumber(ttl_text)
-- A checkpoint per ttl/256 (at least a second), and none older than the ttl needs.
local spacing = math.max(1000, math.floor(ttl / 256))
local due = true
if values[3] then
  local of, at = string.match(values[3], '^(%S+) (%d+)$')
  due = of ~= epoch or tonumber(at) + spacing <= now_ms
end
if due then
  local newest = redis.call('ZRANGE', KEYS[5], -1, -1, 'WITHSCORES')
  if #newest == 0 or tonumber(newest[2]) + spacing <= now_ms then
    redis.call('ZADD', KEYS[5], now_text, sequence - 1)
    redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now_ms - ttl)
    redis.call('SET', KEYS[9], epoch .. ' ' .. now_text)
  else
    redis.call('SET', KEYS[9], epoch .. ' ' .. newest[2])
  end
end
local floor = nil
local added_bytes = #frame + #header
-- Appends the event to one history and trims it: `size` is what its size key held.
local function append(key, size_key, size, max, max_bytes, global)
  -- The global history is trimmed in batches, once it is a 64th over a bound, so most publishes
  -- only append to it; a topic's history is trimmed to its bounds at every publish.
  local count_slack, bytes_slack = 0, 0
  if global then count_slack, bytes_slack = math.floor(max / 64), math.floor(max_bytes / 64) end
  local length = redis.call('XLEN', key)
  local fresh = length == 0 and redis.call('EXISTS', key) == 0
  if fresh then size = 0 else size = tonumber(size or '0') end
  -- What goes, oldest first, as if the event were appended and the history then trimmed by age,
  -- by count and by bytes in turn. The oldest entries are read only as far as they go (as many
  -- as the count bound drops, else one, then 32 at a time). Trimming does not record what it
  -- removed, so note the newest entry that goes, for resuming clients to learn they missed it
  -- (XINFO's max-deleted-entry-id).
  local count, bytes = length + 1, size + added_bytes
  local trimmed = nil
  local gone, gone_bytes, all_gone = 0, 0, false
  -- (Counts as text where they are fixed: Redis would format a number anew.)
  local batch, at, want = {}, 1, '1'
  if count > max + count_slack and count - max > 1 then want = count - max end
  local function oldest()
    if batch[at] == nil and gone < length then
      local start = '-'
      if trimmed then start = '(' .. trimmed end
      batch, at, want = redis.call('XRANGE', key, start, '+', 'COUNT', want), 1, '32'
    end
    return batch[at]
  end
  local function drop()
    local e = oldest()
    if e then
      gone, gone_bytes, trimmed = gone + 1, gone_bytes + #e[2][2] + #(e[2][6] or ''), e[1]
      at = at + 1
    else
      -- Every older entry is gone, and the event itself does not fit.
      gone, gone_bytes, trimmed, all_gone = gone + 1, gone_bytes + added_bytes, entry, true
    end
  end
  if max_age > 0 and not fresh then
    local cutoff = now_ms - max_age
    while true do
      local e = oldest()
      if not e or (tonumber(e[2][4]) or 0) >= cutoff then break end
      drop()
    end
  end
  if count - gone > max + count_slack then
    while count - gone > max do drop() end
  end
  if max_bytes > 0 and bytes - gone_bytes > max_bytes + bytes_slack then
    while bytes - gone_bytes > max_bytes and not all_gone do drop() end
  end
  local added
  if trimmed and not all_gone then
    -- Every entry id is `<sequence>-0`, so the bound `<sequence>-1` drops through `trimmed`.
    local bound = string.match(trimmed, '^%d+') .. '-1'
    added = redis.pcall('XADD', key, 'MINID', bound, entry, 'f', frame, 't', now_text, 'm', header)
  else
    added = redis.pcall('XADD', key, entry, 'f', frame, 't', now_text, 'm', header)
  end
  size = bytes - gone_bytes
  if type(added) == 'table' and added.err then
    -- History left from before a store reset holds larger ids: it is stale, start afresh. (The
    -- refused XADD trimmed nothing.)
    redis.call('DEL', key)
    redis.call('XADD', key, entry, 'f', frame, 't', now_text, 'm', header)
    trimmed, size, fresh, all_gone = nil, added_bytes, true, false
    if 1 > max + count_slack or (max_bytes > 0 and size > max_bytes + bytes_slack) then
      trimmed, size, all_gone = entry, 0, true
    end
  end
  if all_gone then redis.call('XTRIM', key, 'MINID', sequence_text .. '-1') end
  if fresh then
    local before = sequence - 1
    if not global then
      floor = floor or expiry_floor(KEYS[5], now_ms, ttl, sequence - 1)
      before = floor
    end
    if before > 0 and (not trimmed or seq_of(trimmed) < before) then trimmed = before .. '-0' end
  end
  if trimmed then
    redis.call('XSETID', key, entry, 'MAXDELETEDID', trimmed)
  end
  redis.call('PEXPIRE', key, ttl_text)
  redis.call('SET', size_key, size, 'PX', ttl_text)
end
local max, max_bytes = tonumber(ARGV[2]), tonumber(ARGV[9])
for k = 10, #KEYS, 2 do
  append(KEYS[k], KEYS[k + 1], values[sizes + (k - 8) / 2], max, max_bytes, false)
end
if KEYS[7] ~= '' then
  append(KEYS[7], KEYS[8], values[#values], tonumber(ARGV[12]), tonumber(ARGV[13]), true)
end
-- One message per event: on the topic's channel, or on the shared channel for several topics.
redis.call('PUBLISH', ARGV[6], header .. '\n' .. frame)
if chosen ~= '' then
  redis.call('SET', KEYS[6], place, 'PX', ttl_text)
end
if KEYS[4] ~= '' then
  redis.call('SET', KEYS[4], id, 'PX', ARGV[7])
end
return id
"
);

/// Reads, in one atomic step, what a resuming subscriber (or the dispatcher filling a gap)
/// needs: the epoch, the counter, whether the resume points are placeable, and per topic the
/// highest sequence trimmed from its history and the entries after its resume point. Every entry
/// issued up to the returned counter is in these histories or counted as trimmed, so the counter
/// is a clean cut: later events arrive live. Entries older than the age limit count as trimmed (a
/// quiet topic is trimmed only when it is next published to), and so does everything up to the
/// expiry floor for a topic whose history has expired.
///
/// KEYS: `P:epoch`, `P:seq`, `P:t`, then one history key per topic.
/// ARGV: the epoch the resume points belong to, the history's maximum age in milliseconds (0:
/// none), the most entries to return over all topics (a page, shared evenly, at least one per
/// topic; 0: all), the milliseconds after its last publish that a topic's keys expire, the most
/// bytes of frames to return over all topics (shared the same way; 0: no limit), then one resume
/// sequence per topic (in KEYS order).
/// Returns `{epoch, counter, status, trimmed_1, entries_1, more_1, trimmed_2, ...}` where status
/// is `complete`, or `unknown` when the epoch differs or a resume point is beyond the counter
/// (then every retained entry is returned), and `more` is `1` when the page was full.
pub(super) const REPLAY: &str = concat!(
    floor_lua!(),
    r"
local epoch = redis.call('GET', KEYS[1]) or ''
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local max_age = tonumber(ARGV[2]) or 0
local ttl = tonumber(ARGV[4]) or 0
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local cutoff = 0
if max_age > 0 then cutoff = now_ms - max_age end
local status = 'complete'
if ARGV[1] ~= epoch then status = 'unknown' end
local page = tonumber(ARGV[3]) or 0
local budget = tonumber(ARGV[5]) or 0
local topics = #KEYS - 3
for t = 1, topics do
  if (tonumber(ARGV[5 + t]) or 0) > last then status = 'unknown' end
end
-- The page and the byte budget are shared evenly by the topics, at least one entry each, so a
-- merged replay reads every topic about as far and holds no more than a page at a time.
local per_topic = 0
if page > 0 then per_topic = math.max(1, math.floor(page / topics)) end
local per_topic_bytes = 0
if budget > 0 then per_topic_bytes = math.max(1, math.floor(budget / topics)) end
local out = {epoch, tostring(last), status}
local floor = nil
for t = 1, topics do
  local key = KEYS[3 + t]
  local after = 0
  if status == 'complete' then after = tonumber(ARGV[5 + t]) or 0 end
  local trimmed = '0-0'
  local entries = {}
  local more = '0'
  if redis.call('EXISTS', key) == 1 then
    local info = redis.call('XINFO', 'STREAM', key)
    for j = 1, #info, 2 do
      if info[j] == 'max-deleted-entry-id' then trimmed = info[j + 1] end
    end
    local from = '(' .. after .. '-0'
    local bytes = 0
    local done = false
    -- Entries too old to replay count as trimmed and not toward the page: read past them
    -- (they are the oldest), so a page always holds young entries when there are any.
    repeat
      local range
      if per_topic > 0 then
        range = redis.call('XRANGE', key, from, '+', 'COUNT', per_topic)
      else
        range = redis.call('XRANGE', key, from, '+')
      end
      more = '0'
      if per_topic > 0 and #range == per_topic then more = '1' end
      for _, e in ipairs(range) do
        local size = #e[2][2]
        if per_topic_bytes > 0 and #entries > 0 and bytes + size > per_topic_bytes then
          more = '1'
          break
        end
        if (tonumber(e[2][4]) or 0) < cutoff then
          trimmed = e[1]
          from = '(' .. e[1]
        else
          entries[#entries + 1] = e
          bytes = bytes + size
          done = true
        end
      end
    until done or more == '0'
  elseif ttl > 0 then
    floor = floor or expiry_floor(KEYS[3], now_ms, ttl, last)
    trimmed = floor .. '-0'
  end
  out[#out + 1] = trimmed
  out[#out + 1] = entries
  out[#out + 1] = more
end
return out
"
);

/// One step of finding where a replay that is over its budget must start: reads the histories
/// newest first, a few entries per topic, merged by sequence (an event on several topics counted
/// once), and spends the budget on them. A replay of the newest events that fit starts after the
/// entry that did not fit. Each call does a bounded amount of work, so Redis serves publishes
/// between the steps; the caller carries the cursors and the budget left from step to step.
///
/// KEYS: one history key per topic.
/// ARGV: the sequence the replay follows (exclusive), the events and the bytes of frames the
/// budget has left, the history's maximum age in milliseconds (0: none), the entries to read per
/// topic in this step, then per topic a cursor: an entry id to read below (exclusive: the id of
/// the last entry counted, or the first id past the replay's end), or empty when the topic is
/// done.
/// Returns `{state, start, events_left, bytes_left, cursor_1, ...}` where state is `fits` (the
/// whole replay fits), `cut` (it starts after `start`) or `more` (call again with the cursors).
pub(super) const BUDGET_SCAN: &str = concat!(
    floor_lua!(),
    r"
local after = tonumber(ARGV[1])
local events = tonumber(ARGV[2])
local bytes = tonumber(ARGV[3])
local max_age = tonumber(ARGV[4])
local batch = tonumber(ARGV[5])
local cutoff = 0
if max_age > 0 then
  local now = redis.call('TIME')
  cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - max_age
end
local floor_id = '(' .. after .. '-0'
local heads = {}
for t = 1, #KEYS do
  local cursor = ARGV[5 + t]
  local list = {}
  if cursor ~= '' then
    list = redis.call('XREVRANGE', KEYS[t], '(' .. cursor, floor_id, 'COUNT', batch)
  end
  heads[t] = {list = list, i = 1, cursor = cursor, full = #list == batch}
end
local function result(state, start)
  local out = {state, tostring(start), tostring(events), tostring(bytes)}
  for t = 1, #KEYS do
    local h = heads[t]
    if h.list[h.i] == nil and not h.full then out[#out + 1] = '' else out[#out + 1] = h.cursor end
  end
  return out
end
while true do
  local best = -1
  for t = 1, #KEYS do
    local h = heads[t]
    local e = h.list[h.i]
    if e == nil then
      -- This topic's older entries are not read yet and may come before the others' heads.
      if h.full then return result('more', after) end
    elseif seq_of(e[1]) > best then
      best = seq_of(e[1])
    end
  end
  if best < 0 then return result('fits', after) end
  local size, too_old = 0, false
  for t = 1, #KEYS do
    local h = heads[t]
    local e = h.list[h.i]
    if e and seq_of(e[1]) == best then
      size = #e[2][2]
      if (tonumber(e[2][4]) or 0) < cutoff then too_old = true end
      h.cursor = e[1]
      h.i = h.i + 1
    end
  end
  -- Older entries are too old as well, and not replayed anyway.
  if too_old then return result('fits', after) end
  if events < 1 or size > bytes then return result('cut', best) end
  events = events - 1
  bytes = bytes - size
end
"
);

/// How long a history is kept, as the scripts need it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retention {
    /// The age past which entries are dropped (0: no limit).
    pub(super) max_age_ms: u64,
    /// How long after its last publish a topic's keys expire.
    pub(super) expiry_ms: u64,
}

/// What one read of history pages asks for.
pub(super) struct PageRead<'a> {
    pub(super) keys: &'a Keys,
    pub(super) script: &'a redis::Script,
    /// Each history and the sequence after which to read it.
    pub(super) starts: &'a [(Source, u64)],
    /// The epoch the starts belong to.
    pub(super) epoch: &'a str,
    pub(super) retention: Retention,
    /// Entries over all topics, at least one per topic (0: all).
    pub(super) page: usize,
    /// Bytes of frames over all topics, at least one entry per topic (0: no limit).
    pub(super) page_bytes: usize,
}

/// The most bytes of frames one page read returns over all its topics (shared evenly; each
/// topic with entries left gets at least one), so a replay holds about this much, plus one event
/// per topic, in memory at a time.
pub(super) const PAGE_BYTES: usize = 256 * 1024;

/// Reads one page of each topic's history after its start, in one atomic script call.
pub(super) async fn read_pages(
    read: PageRead<'_>,
    connection: &mut impl redis::aio::ConnectionLike,
    what: &str,
) -> Result<Replay, crate::broker::BrokerError> {
    use crate::broker::BrokerError;
    let mut invocation = read.script.prepare_invoke();
    invocation
        .key(&read.keys.epoch)
        .key(&read.keys.sequence)
        .key(&read.keys.checkpoints);
    for (source, _) in read.starts {
        invocation.key(read.keys.source(source));
    }
    invocation
        .arg(read.epoch)
        .arg(read.retention.max_age_ms)
        .arg(read.page)
        .arg(read.retention.expiry_ms)
        .arg(read.page_bytes);
    for (_, after) in read.starts {
        invocation.arg(*after);
    }
    let reply: Value = invocation
        .invoke_async(connection)
        .await
        .map_err(|e| BrokerError::unavailable(what.to_owned(), e))?;
    let sources: Vec<Source> = read.starts.iter().map(|(s, _)| s.clone()).collect();
    read_replay(reply, &sources).ok_or_else(|| {
        BrokerError::unavailable(
            "Redis returned history in an unexpected shape",
            std::io::Error::from(std::io::ErrorKind::InvalidData),
        )
    })
}

/// Key and channel names under one prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
    pub(super) sequence: String,
    pub(super) epoch: String,
    pub(super) run: String,
    pub(super) checkpoints: String,
    /// The epoch and time of the newest checkpoint: a hint that saves reading `checkpoints`.
    pub(super) newest_checkpoint: String,
    /// The global history: every event once, for pattern subscriptions.
    pub(super) global: String,
    /// The running byte size of the global history.
    pub(super) global_size: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            sequence: format!("{prefix}:seq"),
            epoch: format!("{prefix}:epoch"),
            run: format!("{prefix}:run"),
            checkpoints: format!("{prefix}:t"),
            newest_checkpoint: format!("{prefix}:tn"),
            global: format!("{prefix}:g"),
            global_size: format!("{prefix}:gs"),
        }
    }

    /// The history a replay reads from `source`.
    pub(super) fn source(&self, source: &Source) -> String {
        match source {
            Source::Topic(topic) => self.history(topic),
            Source::Global => self.global.clone(),
        }
    }

    pub(super) fn history(&self, topic: &Topic) -> String {
        format!("{}:h:{topic}", self.prefix)
    }

    /// The running byte size of a topic's history.
    pub(super) fn size(&self, topic: &Topic) -> String {
        format!("{}:s:{topic}", self.prefix)
    }

    pub(super) fn channel(&self, topic: &Topic) -> String {
        format!("{}:c:{topic}", self.prefix)
    }

    /// The glob pattern of every topic's channel (the prefix escaped, so its own `*`, `?`, `[`
    /// or `\` match only themselves): what the wildcard feed PSUBSCRIBEs.
    pub(super) fn every_channel(&self) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + 4);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str(":c:*");
        pattern
    }

    /// The channel of events published to several topics at once.
    pub(super) fn multi(&self) -> String {
        format!("{}:m", self.prefix)
    }

    pub(super) fn idempotency(&self, key: &str) -> String {
        format!("{}:k:{key}", self.prefix)
    }

    /// Where a chosen id's place (`<epoch>-<sequence>`) is remembered.
    pub(super) fn chosen(&self, id: &EventId) -> String {
        format!("{}:i:{id}", self.prefix)
    }
}

/// A history a replay reads: one topic's, or the global one (every event, for patterns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    Topic(Topic),
    Global,
}

/// The epoch and sequence in an id the publish script made (`<hex epoch>-<decimal sequence>`),
/// or `None` for any other id: a chosen one, or one that is not ours. The script refuses chosen
/// ids of this shape, so the two never mix.
pub(super) fn own_place(id: &str) -> Option<(&str, u64)> {
    let (epoch, sequence) = id.split_once('-')?;
    if epoch.is_empty()
        || !epoch.bytes().all(|b| b.is_ascii_hexdigit())
        || sequence.is_empty()
        || !sequence.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((epoch, sequence.parse().ok()?))
}

/// Separates the topics in a frame header; no topic contains a control character.
const TOPIC_SEPARATOR: char = '\u{1f}';

/// The header that travels with a frame: the private flag, then each topic after a separator.
/// For an event with a chosen id, the publish script puts its place after the flag (see
/// [`Header`]).
pub(super) fn header(private: bool, topics: &[Topic]) -> String {
    let mut header = String::from(if private { "p" } else { "-" });
    for topic in topics {
        header.push(TOPIC_SEPARATOR);
        header.push_str(topic.as_str());
    }
    header
}

/// A frame header read back: `p` or `-` (private or not), for an event with a chosen id a
/// space and its place `<epoch>-<sequence>`, then each topic after a separator.
pub(super) struct Header {
    private: bool,
    /// The event's epoch and sequence when its id line does not tell them (a chosen id).
    place: Option<(String, u64)>,
    topics: Box<[Topic]>,
}

/// Reads a header back.
fn read_header(header: &[u8]) -> Option<Header> {
    let header = std::str::from_utf8(header).ok()?;
    let mut parts = header.split(TOPIC_SEPARATOR);
    let first = parts.next()?;
    let (flag, place) = match first.split_once(' ') {
        Some((flag, place)) => {
            let (epoch, sequence) = own_place(place)?;
            (flag, Some((epoch.to_owned(), sequence)))
        }
        None => (first, None),
    };
    let private = match flag {
        "p" => true,
        "-" => false,
        _ => return None,
    };
    let topics = parts
        .map(Topic::new)
        .collect::<Result<Box<[Topic]>, _>>()
        .ok()?;
    (!topics.is_empty()).then_some(Header {
        private,
        place,
        topics,
    })
}

/// Reads a pub/sub message: a header, LF, then the frame.
pub(super) fn read_message(payload: Bytes) -> Option<ReadFrame> {
    let split = payload.iter().position(|&b| b == b'\n')?;
    let header = read_header(&payload[..split])?;
    read_frame(payload.slice(split + 1..), header)
}

/// A frame read back from Redis, with the epoch of its id.
pub(super) struct ReadFrame {
    pub(super) epoch: String,
    pub(super) frame: Frame,
}

/// Reads a frame that starts with its `id:` line, as the publish script writes it: the id is
/// `<epoch>-<sequence>`, unless the header tells the place (a chosen id).
fn read_frame(bytes: Bytes, header: Header) -> Option<ReadFrame> {
    let line_end = bytes.iter().position(|&b| b == b'\n')?;
    let id = std::str::from_utf8(bytes.get(..line_end)?)
        .ok()?
        .strip_prefix("id: ")?;
    let (epoch, sequence) = match header.place {
        Some(place) => place,
        None => {
            let (epoch, sequence) = own_place(id)?;
            (epoch.to_owned(), sequence)
        }
    };
    let id = EventId::new(id).ok()?;
    Some(ReadFrame {
        epoch,
        frame: Frame::from_encoded(id, sequence, header.topics, header.private, bytes),
    })
}

/// The sequence in a stream entry id `<sequence>-0`.
pub(super) fn entry_sequence(entry_id: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(entry_id).ok()?;
    text.split_once('-')?.0.parse().ok()
}

/// One history's part of a replay reply.
pub(super) struct TopicReplay {
    /// The highest sequence trimmed from the history, 0 when none was.
    pub(super) trimmed_through: u64,
    pub(super) frames: Vec<ReadFrame>,
    /// Whether the page was full: more entries may follow the last one.
    pub(super) more: bool,
}

/// A parsed reply of the replay script.
pub(super) struct Replay {
    pub(super) epoch: String,
    /// The counter when the histories were read: every later event arrives live.
    pub(super) counter: u64,
    /// Whether the resume point was placed (`false`: unknown, everything retained follows).
    pub(super) placed: bool,
    pub(super) topics: Vec<TopicReplay>,
}

/// Parses the replay script's reply for `sources` (in the order they were passed as keys).
pub(super) fn read_replay(reply: Value, sources: &[Source]) -> Option<Replay> {
    let Value::Array(items) = reply else {
        return None;
    };
    let mut items = items.into_iter();
    let epoch = string(items.next()?)?;
    let counter: u64 = string(items.next()?)?.parse().ok()?;
    let placed = string(items.next()?)? == "complete";
    let mut replays = Vec::with_capacity(sources.len());
    for source in sources {
        let trimmed = string(items.next()?)?;
        let trimmed_through = entry_sequence(trimmed.as_bytes())?;
        let Value::Array(entries) = items.next()? else {
            return None;
        };
        let mut frames = Vec::with_capacity(entries.len());
        for entry in entries {
            frames.push(read_entry(entry, source)?.0);
        }
        let more = string(items.next()?)? == "1";
        replays.push(TopicReplay {
            trimmed_through,
            frames,
            more,
        });
    }
    Some(Replay {
        epoch,
        counter,
        placed,
        topics: replays,
    })
}

/// Parses the entries of an XRANGE or XREVRANGE of `source`: each frame, and the server's time
/// in milliseconds when it was published.
pub(super) fn read_entries(reply: Value, source: &Source) -> Option<Vec<(ReadFrame, u64)>> {
    let Value::Array(entries) = reply else {
        return None;
    };
    entries
        .into_iter()
        .map(|entry| read_entry(entry, source))
        .collect()
}

/// Reads one stream entry `[id, [f, frame, t, time, m, header]]`, and its time; entries of a
/// topic's history written before headers existed count as public events of that topic alone.
fn read_entry(entry: Value, source: &Source) -> Option<(ReadFrame, u64)> {
    let Value::Array(parts) = entry else {
        return None;
    };
    let mut parts = parts.into_iter();
    let _entry_id = parts.next()?;
    let Value::Array(fields) = parts.next()? else {
        return None;
    };
    let mut fields = fields.into_iter();
    let Value::BulkString(frame) = fields.nth(1)? else {
        return None;
    };
    let time = fields
        .nth(1)
        .and_then(string)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let header = match (fields.nth(1), source) {
        (Some(Value::BulkString(header)), _) => read_header(&header)?,
        (_, Source::Topic(topic)) => Header {
            private: false,
            place: None,
            topics: Box::from([topic.clone()]),
        },
        (_, Source::Global) => return None,
    };
    Some((read_frame(Bytes::from(frame), header)?, time))
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

    /// The header of a public event of `topic` alone, without a place.
    fn public(topic: &Topic) -> Header {
        Header {
            private: false,
            place: None,
            topics: Box::from([topic.clone()]),
        }
    }

    #[test]
    fn frames_read_back_as_the_encoder_wrote_them() {
        let topic = Topic::new("a").expect("valid topic");
        let id = EventId::new("18f2a3b4c-42").expect("valid id");
        let event = Event::text("x\ny").expect("valid event");
        let written = Frame::new(id.clone(), 42, std::slice::from_ref(&topic), &event);
        let read = read_frame(written.bytes().clone(), public(&topic)).expect("readable frame");
        assert_eq!(read.epoch, "18f2a3b4c");
        assert_eq!(read.frame.id(), &id);
        assert_eq!(read.frame.sequence(), 42);
        assert_eq!(read.frame.bytes(), written.bytes());
    }

    #[test]
    fn messages_carry_every_topic_and_the_private_flag() {
        let topics = [
            Topic::new("a b").expect("topic"),
            Topic::new("c").expect("topic"),
        ];
        let id = EventId::new("e1-7").expect("valid id");
        let frame = Frame::new(id, 7, &topics, &Event::text("x").expect("event"));
        let mut payload = header(true, &topics).into_bytes();
        payload.push(b'\n');
        payload.extend_from_slice(frame.bytes());
        let read = read_message(Bytes::from(payload)).expect("readable message");
        assert_eq!(read.frame.topics(), &topics);
        assert!(read.frame.is_private());
        assert_eq!(read.frame.bytes(), frame.bytes());
        assert!(read_message(Bytes::from_static(b"x\x1fa\nid: e-1\n")).is_none());
    }

    #[test]
    fn malformed_frames_are_refused() {
        let topic = Topic::new("a").expect("valid topic");
        for bytes in [
            &b"data: x\n\n"[..],
            b"id: nodash\n",
            b"id: e-notanumber\n",
            b"id: e-1",
            // Not one of ours, and no place in the header to say where it goes.
            b"id: books/1#rev-2\n",
            b"id: urn:uuid:5bd5b2a3-5f2c\n",
        ] {
            assert!(
                read_frame(Bytes::from_static(bytes), public(&topic)).is_none(),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn a_chosen_id_travels_with_its_place_in_the_header() {
        let topic = Topic::new("books/1").expect("topic");
        let chosen = EventId::new("books/1#rev-2").expect("valid id");
        let frame = Frame::new(
            chosen.clone(),
            9,
            std::slice::from_ref(&topic),
            &Event::text("x").expect("event"),
        );
        let mut payload = b"p 18f2a3b4c-9\x1fbooks/1\n".to_vec();
        payload.extend_from_slice(frame.bytes());
        let read = read_message(Bytes::from(payload)).expect("readable message");
        assert_eq!(read.epoch, "18f2a3b4c");
        assert_eq!(read.frame.id(), &chosen);
        assert_eq!(read.frame.sequence(), 9);
        assert!(read.frame.is_private());
        // A place that is not `<epoch>-<sequence>` makes the message unreadable, not misplaced.
        let mut payload = b"- books-x\x1fbooks/1\n".to_vec();
        payload.extend_from_slice(frame.bytes());
        assert!(read_message(Bytes::from(payload)).is_none());
    }

    #[test]
    fn only_hex_dash_digits_is_shaped_like_our_ids() {
        assert_eq!(own_place("18f2a3b4c-42"), Some(("18f2a3b4c", 42)));
        for other in [
            "books/1#rev-2",
            "urn:uuid:5bd5b2a3-5f2c-4a36-9c7e-0e0f6b0f1a2d",
            "x",
            "-1",
            "abc-",
            "abc-1-2",
            "abc-99999999999999999999999",
        ] {
            assert_eq!(own_place(other), None, "{other}");
        }
    }

    #[test]
    fn the_wildcard_pattern_escapes_the_prefix() {
        assert_eq!(Keys::new("app").every_channel(), "app:c:*");
        assert_eq!(Keys::new("a*b?[c]\\").every_channel(), r"a\*b\?\[c\]\\:c:*");
    }
}
