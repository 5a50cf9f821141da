/**
 * How many times a daemon started applying an event and never finished: what "poison" means.
 *
 * Not Redis's delivery count. XREADGROUP from the pending list raises it for every entry it
 * returns, and XAUTOCLAIM without JUSTID raises it even for the claimant's own entries, so a
 * long outage (the webhook down, every write retried) and a few re-reads after reconnects or
 * lease flaps push valid events past any limit without a single crash.
 *
 * So the daemon keeps its own count, in a hash beside the desired state: an attempt marks the
 * event before it starts; an attempt that ends without settling the event (its term ended, the
 * daemon is stopping) unmarks it; settling the event deletes the field in the same script as
 * the XACK. What is left open on the field when a new attempt starts is the number of attempts
 * that never ended: the daemon died (or lost Redis until it was restarted) while applying it. An unmark that cannot reach Redis is retried in the
 * background; one that never gets there counts as an interruption, which errs towards
 * isolating the event, not towards losing it.
 *
 * Each attempt carries a token, and marking and unmarking are idempotent per token: a mark
 * whose reply timed out still runs in Redis later (ioredis's command timeout only rejects the
 * promise), and a command or pipeline can be sent again after a reconnect. Counting each send
 * would make a stall of a few seconds look like several crashes. So the field holds the set of
 * attempts that are open (marked, not ended) and the last few that ended: `v2|<open>|<ended>`,
 * tokens comma-separated. A mark of a token the field knows (open or ended) changes nothing; an
 * unmark moves a token from open to ended. The count is the number of open attempts, exact
 * whatever order marks and unmarks of different attempts land in (an unmark of an earlier
 * attempt arriving after a later one's mark included). An unmark finding no field changes
 * nothing: the event was settled, and the field went with the acknowledgement.
 *
 * Fields of an older daemon (`<count>`, `<count>|<token>`, `<count>|~<token>`) are read as that
 * many open attempts without a token (`*`), which no unmark can end: they were interruptions.
 */
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { backoffDelay } from '../util/backoff.ts';

/** How many ended tokens a field remembers: enough for any unmark re-sent after its attempt's successors. */
const ENDED_KEPT = 16;

/** The attempt set in a field, and how to write it back (the format in the header). */
export const ATTEMPT_SET_LUA = `
local function attempts_of(value)
  local open, ended = {}, {}
  if not value then return open, ended end
  if string.sub(value, 1, 3) == 'v2|' then
    local o, e = string.match(value, '^v2|([^|]*)|(.*)$')
    for t in string.gmatch(o or '', '[^,]+') do open[#open + 1] = t end
    for t in string.gmatch(e or '', '[^,]+') do ended[#ended + 1] = t end
    return open, ended
  end
  local n = tonumber(string.match(value, '^(-?%d+)')) or 0
  local token = string.match(value, '|(.*)$')
  if token and string.sub(token, 1, 1) == '~' then
    ended[1] = string.sub(token, 2)
  elseif token and n > 0 then
    open[1] = token
    n = n - 1
  end
  for _ = 1, n do open[#open + 1] = '*' end
  return open, ended
end
local function attempts_text(open, ended)
  while #ended > ${ENDED_KEPT} do table.remove(ended, 1) end
  return 'v2|' .. table.concat(open, ',') .. '|' .. table.concat(ended, ',')
end
local function position_in(list, token)
  for i, t in ipairs(list) do if t == token then return i end end
  return nil
end`;

/** Marks attempt ARGV[2] at event ARGV[1] once, however often it is sent; returns the attempts open, this one included. */
const MARK = `${ATTEMPT_SET_LUA}
local open, ended = attempts_of(redis.call('HGET', KEYS[1], ARGV[1]))
if position_in(open, ARGV[2]) or position_in(ended, ARGV[2]) then return #open end
open[#open + 1] = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], attempts_text(open, ended))
return #open
`;

/** Ends attempt ARGV[2] at event ARGV[1] once; a field the event's settlement removed stays removed. */
const UNMARK = `${ATTEMPT_SET_LUA}
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return 0 end
local open, ended = attempts_of(value)
local at = position_in(open, ARGV[2])
if at then table.remove(open, at) end
if not position_in(ended, ARGV[2]) then ended[#ended + 1] = ARGV[2] end
redis.call('HSET', KEYS[1], ARGV[1], attempts_text(open, ended))
return #open
`;

/**
 * Removes, a page at a time, the fields of events the group no longer holds as pending and has
 * delivered (at or before its last-delivered-id): they were acknowledged by something other than
 * the daemon's settling scripts (a hand-made XACK, a group reset), which would leave them for
 * good. ARGV: group, the HSCAN cursor, the page size. Returns { next cursor, removed }.
 */
const SWEEP = `
local delivered
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[2])) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  if f['name'] == ARGV[1] then delivered = f['last-delivered-id'] end
end
local page = redis.call('HSCAN', KEYS[1], ARGV[2], 'COUNT', tonumber(ARGV[3]))
if not delivered then return { page[1], 0 } end
local removed = 0
local fields = page[2]
for i = 1, #fields, 2 do
  local id = fields[i]
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  local dms, dseq = string.match(delivered, '^(%d+)-(%d+)$')
  local seen = ms and (#ms < #dms or (#ms == #dms and (ms < dms or (ms == dms and tonumber(seq) <= tonumber(dseq)))))
  if not ms or (seen and #redis.call('XPENDING', KEYS[2], ARGV[1], id, id, 1) == 0) then
    redis.call('HDEL', KEYS[1], id)
    removed = removed + 1
  end
end
return { page[1], removed }
`;

/** How many attempts at an event are open in a field (the format in the header; older formats too). */
export function attemptCount(value: string | null | undefined): number {
  if (value === null || value === undefined) return 0;
  if (value.startsWith('v2|')) return (value.split('|')[1] ?? '').split(',').filter((t) => t !== '').length;
  const n = Number.parseInt(value, 10);
  return Number.isFinite(n) && n > 0 ? n : 0;
}

export class AttemptLog {
  readonly #redis: Redis;
  readonly #key: string;
  readonly #log: Logger;
  /** Unmarks that did not reach Redis yet (event id and attempt token), retried until they do. */
  readonly #unmarks = new Map<string, { id: string; token: string }>();
  #retrying: NodeJS.Timeout | undefined;
  #flushing = false;
  #failures = 0;

  constructor(redis: Redis, key: string, logger: Logger) {
    this.#redis = redis;
    this.#key = key;
    this.#log = logger;
  }

  /** The hash's key: settlement scripts delete an event's field from it. */
  get key(): string {
    return this.#key;
  }

  /** Attempts at each of these events that never ended (0 for most), one round trip. */
  async interrupted(ids: readonly string[]): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    if (ids.length === 0) return counts;
    const values = await this.#redis.hmget(this.#key, ...ids);
    ids.forEach((id, i) => counts.set(id, attemptCount(values[i])));
    return counts;
  }

  /**
   * Marks attempt `token` at event `id` as started; returns how many attempts at it are
   * unfinished, this one included. Sending it again for the same attempt (after a timeout, say)
   * counts it once.
   */
  async begin(id: string, token: string): Promise<number> {
    return (await this.#redis.eval(MARK, 1, this.#key, id, token)) as number;
  }

  /** Attempt `token` ended without settling the event (it stays pending, to be tried again). */
  end(id: string, token: string): void {
    this.#unmarks.set(`${id} ${token}`, { id, token });
    this.#flush();
  }

  /** Unmarks still owed to Redis. */
  get owed(): number {
    return this.#unmarks.size;
  }

  #flush(): void {
    if (this.#retrying !== undefined || this.#flushing) return;
    const batch = [...this.#unmarks];
    this.#unmarks.clear();
    this.#flushing = true;
    void this.#send(batch).then(
      () => {
        this.#flushing = false;
        this.#failures = 0;
        if (this.#unmarks.size > 0) this.#flush();
      },
      (error: unknown) => {
        this.#flushing = false;
        // Sent again whole: each unmark is idempotent, so those that did land change nothing.
        for (const [key, unmark] of batch) this.#unmarks.set(key, unmark);
        this.#failures++;
        const delay = backoffDelay(this.#failures, { baseMs: 500, maxMs: 10_000 });
        this.#log.warn({ err: error, owed: this.owed, retryInMs: delay }, 'could not record that attempts ended; will retry');
        this.#retrying = setTimeout(() => {
          this.#retrying = undefined;
          this.#flush();
        }, delay);
        this.#retrying.unref();
      },
    );
  }

  async #send(batch: readonly [string, { id: string; token: string }][]): Promise<void> {
    const pipeline = this.#redis.pipeline();
    for (const [, { id, token }] of batch) pipeline.eval(UNMARK, 1, this.#key, id, token);
    const replies = (await pipeline.exec()) ?? [];
    const failed = replies.find(([error]) => error !== null)?.[0];
    if (failed) throw failed;
  }

  /**
   * Removes the fields of events that were acknowledged outside the daemon (see SWEEP);
   * returns how many. `stream` and `group` are the ones whose pending list decides.
   */
  async sweep(stream: string, group: string, pageSize = 500): Promise<number> {
    let removed = 0;
    let cursor = '0';
    do {
      const [next, count] = (await this.#redis.eval(SWEEP, 2, this.#key, stream, group, cursor, pageSize)) as [string, number];
      cursor = next;
      removed += count;
    } while (cursor !== '0');
    return removed;
  }

  /** Stops retrying (at shutdown): unmarks not delivered by then count as interruptions. */
  stop(): void {
    if (this.#retrying !== undefined) clearTimeout(this.#retrying);
    this.#retrying = undefined;
  }
}
