/**
 * How many times a daemon started applying an event and never finished: what "poison" means.
 *
 * Not Redis's delivery count. XREADGROUP from the pending list raises it for every entry it
 * returns, and XAUTOCLAIM without JUSTID raises it even for the claimant's own entries, so a
 * long outage (the webhook down, every write retried) and a few re-reads after reconnects or
 * lease flaps push valid events past any limit without a single crash.
 *
 * So the daemon keeps its own count, in a hash beside the desired state: an attempt marks the
 * event (HINCRBY +1) before it starts; an attempt that ends without settling the event (its
 * term ended, the daemon is stopping) unmarks it (HINCRBY -1); settling the event deletes the
 * field in the same script as the XACK. What is left on the field when a new attempt starts is
 * the number of attempts that never ended: the daemon died (or lost Redis until it was
 * restarted) while applying it. An unmark that cannot reach Redis is retried in the
 * background; one that never gets there counts as an interruption, which errs towards
 * isolating the event, not towards losing it.
 *
 * Each attempt carries a token, and marking and unmarking are idempotent per token: a mark
 * whose reply timed out still runs in Redis later (ioredis's command timeout only rejects the
 * promise), and a command or pipeline can be sent again after a reconnect. Counting each send
 * would make a stall of a few seconds look like several crashes. So the field holds
 * `<count>|<token>`: the last token counted (`~<token>` once that attempt was unmarked), and a
 * mark or unmark that repeats what the field already says changes nothing.
 */
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { backoffDelay } from '../util/backoff.ts';

/** The count in a field (`<count>|<token>`; a bare number from before tokens). */
export const ATTEMPT_COUNT_LUA = `
local function count_of(value)
  if not value then return 0 end
  return tonumber(string.match(value, '^(-?%d+)')) or 0
end
local function token_of(value)
  if not value then return '' end
  return string.match(value, '|(.*)$') or ''
end`;

/** Marks attempt ARGV[2] at event ARGV[1] once, however often it is sent; returns the count. */
const MARK = `${ATTEMPT_COUNT_LUA}
local value = redis.call('HGET', KEYS[1], ARGV[1])
local n, last = count_of(value), token_of(value)
if last == ARGV[2] or last == '~' .. ARGV[2] then return n end
n = n + 1
redis.call('HSET', KEYS[1], ARGV[1], n .. '|' .. ARGV[2])
return n
`;

/** Unmarks attempt ARGV[2] at event ARGV[1] once; a field the event's settlement removed stays removed. */
const UNMARK = `${ATTEMPT_COUNT_LUA}
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value or token_of(value) == '~' .. ARGV[2] then return count_of(value) end
local n = math.max(count_of(value) - 1, 0)
redis.call('HSET', KEYS[1], ARGV[1], n .. '|~' .. ARGV[2])
return n
`;

/** Parses a field's count (see the header). */
export function attemptCount(value: string | null | undefined): number {
  const n = Number.parseInt(value ?? '0', 10);
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

  /** Stops retrying (at shutdown): unmarks not delivered by then count as interruptions. */
  stop(): void {
    if (this.#retrying !== undefined) clearTimeout(this.#retrying);
    this.#retrying = undefined;
  }
}
