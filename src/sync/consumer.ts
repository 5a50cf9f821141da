/**
 * The stream consumer. On becoming leader it takes over every entry still pending in the group
 * (the previous leader's unfinished work); after that, and after every reconnect, it reads
 * all of its own pending entries, page by page in stream order, before any new one. It also
 * takes over entries left idle by any other consumer (XAUTOCLAIM); applies events in stream
 * order wherever order matters (one VPS; a name or address one event frees and a later one
 * claims: see ordering.ts) while unrelated VPSs proceed in parallel; retries transient
 * failures with backoff and jitter without acknowledging and without blocking other VPSs,
 * and gives up (dead-letters) after a bounded number of unexpected failures; and guards the
 * blocking read with a watchdog, since blocked reads have been seen to hang after reconnects
 * (ioredis #1888). It reports its own progress, so liveness can fail when it stalls.
 *
 * Work belongs to the leadership term it was read in. An event left pending when the Lease
 * lapses releases the keys of the events queued behind it, so those must not run in a later
 * term either, even if the Lease is held again by the time they reach the front: every event
 * of an ended term is left pending, and a new term starts reading only once the old term's
 * work has settled, from the oldest pending entry, so stream order is rebuilt from Redis.
 */
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { backoffDelay } from '../util/backoff.ts';
import { TransientError } from './entry-writer.ts';
import { fieldsToRecord } from './event.ts';
import { HoldingsLedger, type Holding } from './ordering.ts';
import type { EventProcessor, ProcessResult } from './processor.ts';
import type { KeyedQueue } from '../util/keyed-queue.ts';
import { Semaphore } from '../util/semaphore.ts';
import { sleep } from '../util/sleep.ts';

type StreamEntry = [id: string, fields: string[] | null];

export interface ConsumerOptions {
  blocking: Redis;
  commands: Redis;
  processor: EventProcessor;
  /** Orders events per VPS, name and address; shared with the resync. */
  queue: KeyedQueue;
  stream: string;
  group: string;
  consumer: string;
  batchSize: number;
  blockMs: number;
  concurrency: number;
  claimIdleMs: number;
  consumerRetentionMs: number;
  maxDeliveries: number;
  /**
   * Attempts at an event that fails neither transiently (the API server, Redis unreachable)
   * nor permanently (a denial): after this many it is dead-lettered with the error.
   */
  maxAttempts: number;
  retryBaseMs: number;
  retryMaxMs: number;
  logger: Logger;
  /**
   * Only the Lease holder consumes: the current leadership term while this replica leads,
   * undefined otherwise, a new number each time leadership is gained (LeaderElector.term).
   */
  leadershipTerm: () => number | undefined;
  /** The names and addresses these VPSs hold in the desired state (registered ones only). */
  holdings: (vpsIds: readonly string[]) => Promise<Map<string, Holding>>;
  onResult?: (result: ProcessResult, seconds: number) => void;
  onRetry?: (reason: string) => void;
}

/**
 * Removes the group's consumers, other than this one, that have nothing pending and have been
 * silent longer than the retention. One script, so no consumer can get a pending entry
 * between the check and the removal (removing a consumer drops its pending entries).
 */
const PRUNE_CONSUMERS = `
local removed = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['name'] ~= ARGV[2] and tonumber(f['pending']) == 0 and tonumber(f['idle']) > tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    table.insert(removed, f['name'])
  end
end
return removed
`;

export class StreamConsumer {
  readonly #options: ConsumerOptions;
  readonly #log: Logger;
  /** What each VPS with events in flight may hold: the names and addresses its events may free. */
  readonly #holdings = new HoldingsLedger();
  /** When the loop last finished a turn. */
  #lastTurnAt = Date.now();
  /** When an attempt at an event last finished, or work was dispatched to an idle consumer. */
  #lastProgressAt = Date.now();
  /** Stream ids being applied (pending in Redis, owned here); never read twice. */
  readonly #inFlight = new Set<string>();
  /** At most `concurrency` VPSs are being written at once. */
  readonly #slots: Semaphore;
  /**
   * Where the next read of this consumer's own pending entries starts ('0': from the oldest),
   * or undefined once they have all been read and new entries come next.
   */
  #pendingCursor: string | undefined = '0';
  /** The term the loop last read in; a different one triggers the takeover. */
  #readingTerm: number | undefined;
  /** Aborted when the term the loop reads in ends, so retries of its events stop waiting. */
  #termEnded = new AbortController();
  #lastClaim = 0;
  #stopped = new AbortController();
  #running: Promise<void> | undefined;

  constructor(options: ConsumerOptions) {
    this.#options = options;
    this.#log = options.logger.child({ component: 'consumer', stream: options.stream, group: options.group, consumer: options.consumer });
    this.#slots = new Semaphore(options.concurrency);
    // After a reconnect, whatever was delivered before may not have been seen: re-read
    // this consumer's pending list before new entries.
    options.blocking.on('ready', () => {
      this.#pendingCursor = '0';
    });
  }

  async ensureGroup(): Promise<void> {
    try {
      await this.#options.commands.xgroup('CREATE', this.#options.stream, this.#options.group, '0', 'MKSTREAM');
      this.#log.info('consumer group created');
    } catch (error) {
      if (!String(error).includes('BUSYGROUP')) throw error;
    }
  }

  /** Read through a method: the flag changes while we await, which flow analysis cannot see. */
  #stopping(): boolean {
    return this.#stopped.signal.aborted;
  }

  get inFlight(): number {
    return this.#inFlight.size;
  }

  /**
   * How long the consumer has made no progress, 0 when it is moving: the loop has not
   * finished a turn (a read, a claim or a back-off sleep) for that long, or events are in
   * flight and no attempt at any of them has finished for that long. Either way a restart
   * is the cure, which is what liveness is for; an API server outage is not a stall (the
   * attempts keep failing and finishing).
   */
  stalledMs(now = Date.now()): number {
    const loop = now - this.#lastTurnAt;
    const work = this.#inFlight.size > 0 ? now - this.#lastProgressAt : 0;
    return Math.max(loop, work);
  }

  start(): void {
    this.#running ??= this.#loop();
  }

  /** Stops reading; in-flight events finish (or stay pending for the next consumer). */
  async stop(): Promise<void> {
    this.#stopped.abort();
    this.#termEnded.abort();
    await this.#running;
    await this.#options.queue.idle();
  }

  async #read(id: string): Promise<StreamEntry[]> {
    const { blocking, group, consumer, batchSize, blockMs, stream } = this.#options;
    const read = blocking.xreadgroup('GROUP', group, consumer, 'COUNT', batchSize, 'BLOCK', blockMs, 'STREAMS', stream, id) as Promise<[string, StreamEntry[]][] | null>;
    let timer: NodeJS.Timeout | undefined;
    const watchdog = new Promise<'hung'>((resolve) => (timer = setTimeout(() => { resolve('hung'); }, blockMs + 10_000)));
    const result = await Promise.race([read, watchdog]).finally(() => { clearTimeout(timer); });
    if (result === 'hung') {
      this.#log.warn({ blockMs }, 'blocking read did not return; reconnecting');
      read.catch(() => undefined);
      blocking.disconnect(true);
      this.#pendingCursor = '0';
      return [];
    }
    return result?.[0]?.[1] ?? [];
  }

  /**
   * The delivery count of each entry, asked of Redis one id at a time (pipelined): a range
   * query from the first id to the last can be filled by other consumers' entries in
   * between and miss some of ours, and a poison entry would then go unnoticed.
   */
  async #deliveries(ids: readonly string[]): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    if (ids.length === 0) return counts;
    const { commands, stream, group } = this.#options;
    const pipeline = commands.pipeline();
    for (const id of ids) pipeline.xpending(stream, group, id, id, 1);
    const replies = (await pipeline.exec()) ?? [];
    for (const [error, rows] of replies) {
      if (error !== null) throw error;
      for (const [id, , , count] of rows as [string, string, number, number][]) counts.set(id, count);
    }
    return counts;
  }

  async #loop(): Promise<void> {
    const signal = this.#stopped.signal;
    let failures = 0;
    while (!signal.aborted) {
      this.#lastTurnAt = Date.now();
      const term = this.#options.leadershipTerm();
      if (term !== this.#readingTerm && this.#readingTerm !== undefined) this.#endTerm();
      if (term === undefined) {
        await sleep(250, signal);
        continue;
      }
      if (term !== this.#readingTerm && this.#inFlight.size > 0) {
        // The last term's events are leaving (each is left pending at its next attempt,
        // or finishes a write already sent); none may be overtaken by a re-read of its own.
        await sleep(50, signal);
        continue;
      }
      // Back-pressure: never hold more than a few batches in memory.
      if (this.#inFlight.size >= this.#options.batchSize * 4) {
        await sleep(50, signal);
        continue;
      }
      try {
        if (term !== this.#readingTerm) {
          this.#pendingCursor = '0';
          await this.#takeOver();
          this.#readingTerm = term;
        }
        if (Date.now() - this.#lastClaim > this.#options.claimIdleMs / 2) await this.#claimIdle(term);
        const cursor = this.#pendingCursor;
        const entries = await this.#read(cursor ?? '>');
        failures = 0;
        if (cursor !== undefined) {
          // A full page may have more behind it: continue after its last entry. Reading from
          // '0' again would return the same page (still pending, being applied) and leave the
          // rest to wait for the idle claim, behind newer events.
          const last = entries.at(-1)?.[0];
          this.#pendingCursor = entries.length < this.#options.batchSize || last === undefined ? undefined : last;
          const fresh = entries.filter(([id]) => !this.#inFlight.has(id));
          if (fresh.length > 0) await this.#dispatch(fresh, await this.#deliveries(fresh.map(([id]) => id)), term);
        } else {
          await this.#dispatch(entries, undefined, term);
        }
      } catch (error) {
        if (this.#stopping()) break;
        failures++;
        const delay = backoffDelay(failures, { baseMs: this.#options.retryBaseMs, maxMs: this.#options.retryMaxMs });
        this.#log.warn({ err: error, retryInMs: delay }, 'reading the stream failed; retrying');
        this.#options.onRetry?.('redis');
        this.#pendingCursor = '0';
        await sleep(delay, signal);
      }
    }
  }

  /** The term being read in has ended: its events' retries stop waiting, and reading restarts from the oldest pending entry. */
  #endTerm(): void {
    this.#readingTerm = undefined;
    this.#pendingCursor = '0';
    this.#termEnded.abort();
    this.#termEnded = new AbortController();
  }

  /**
   * A new leader continues where the old one stopped: everything pending in the group (the
   * old leader's unfinished events, whatever their idle time) becomes this consumer's, and
   * is then read in stream order with its own pending entries, before any new event. Only
   * the Lease holder reads, and the old one stopped reading when its renewal deadline passed,
   * so nothing is taken from a consumer still working. JUSTID: a takeover is not a delivery,
   * and must not count towards the poison limit.
   */
  async #takeOver(): Promise<void> {
    const { commands, stream, group, consumer } = this.#options;
    let cursor = '0-0';
    let moved = 0;
    do {
      const reply = (await commands.xautoclaim(stream, group, consumer, 0, cursor, 'COUNT', 1000, 'JUSTID')) as [string, string[], string[]?];
      cursor = reply[0];
      moved += reply[1].length;
      await this.#acknowledgeDeleted(reply[2]);
    } while (cursor !== '0-0');
    if (moved > 0) this.#log.info({ count: moved }, 'took over the pending entries of the group');
  }

  /** XAUTOCLAIM returns entries deleted from the stream while pending in its third element; they are done. */
  async #acknowledgeDeleted(ids: readonly string[] | undefined): Promise<void> {
    for (const id of ids ?? []) await this.#options.commands.xack(this.#options.stream, this.#options.group, id);
  }

  async #claimIdle(term: number): Promise<void> {
    this.#lastClaim = Date.now();
    const { commands, stream, group, consumer, claimIdleMs, batchSize } = this.#options;
    const reply = (await commands.xautoclaim(stream, group, consumer, claimIdleMs, '0-0', 'COUNT', batchSize)) as [string, StreamEntry[], string[]?];
    const claimed = reply[1].filter(([id]) => !this.#inFlight.has(id));
    await this.#acknowledgeDeleted(reply[2]);
    if (claimed.length > 0) {
      this.#log.info({ count: claimed.length }, 'claimed entries left idle by another consumer');
      await this.#dispatch(claimed, await this.#deliveries(claimed.map(([id]) => id)), term);
    }
    const removed = (await commands.eval(PRUNE_CONSUMERS, 1, stream, group, consumer, this.#options.consumerRetentionMs)) as string[];
    if (removed.length > 0) this.#log.info({ consumers: removed }, 'removed consumers of replicas that are gone (nothing pending, silent)');
  }

  /**
   * Queues each entry behind every earlier event it must follow (see ordering.ts); returns
   * once queued. The holdings of VPSs without events in flight are read first, and read
   * again for any VPS whose last event settled meanwhile, so no event is queued without
   * knowing what its VPS may free. `term` is the leadership term they were read in.
   */
  async #dispatch(entries: readonly StreamEntry[], deliveries: Map<string, number> | undefined, term: number): Promise<void> {
    const fresh = entries
      .filter(([id]) => !this.#inFlight.has(id))
      .map(([id, raw]) => ({ id, fields: raw === null ? null : fieldsToRecord(raw) }));
    const vpsIds = fresh.flatMap(({ id, fields }) => (fields === null ? [] : [fields.vps_id ?? id]));
    for (let missing = this.#holdings.unknown(vpsIds); missing.length > 0; missing = this.#holdings.unknown(vpsIds)) {
      const read = await this.#options.holdings(missing);
      for (const vpsId of missing) this.#holdings.seed(vpsId, read.get(vpsId));
    }
    // From here to the end no await: nothing settles between reading holdings and queueing.
    if (this.#inFlight.size === 0 && fresh.length > 0) this.#lastProgressAt = Date.now();
    const termEnded = this.#termEnded.signal;
    for (const { id, fields } of fresh) {
      this.#inFlight.add(id);
      const count = deliveries?.get(id) ?? 1;
      const poison = count > this.#options.maxDeliveries ? { deliveries: count } : undefined;
      const vpsId = fields === null ? undefined : (fields.vps_id ?? id);
      const keys = vpsId === undefined || fields === null ? [`entry:${id}`] : this.#holdings.dispatch({ vpsId, name: fields.name, address: fields.address });
      void this.#options.queue
        .run(keys, () => this.#applyWithRetry(id, fields, poison, term, termEnded))
        .catch((error: unknown) => {
          this.#log.error({ err: error, streamId: id }, 'applying event failed unexpectedly; it stays pending');
          return 'left-pending' as const;
        })
        .then((outcome) => {
          this.#inFlight.delete(id);
          if (vpsId !== undefined) this.#holdings.settle(vpsId);
          // Left pending: the next read starts from this consumer's pending entries, in stream
          // order, before any new event. Set after it left #inFlight, so that read sees it.
          if (outcome === 'left-pending') this.#pendingCursor = '0';
        });
    }
    // Yield once so queued work starts before the next read.
    await Promise.resolve();
  }

  /**
   * Applies one event until it is done. Transient failures (the API server or Redis away)
   * are retried for as long as they last; anything else is an unexpected failure (a corrupt
   * state record, the webhook's view of the namespace behind ours for too long), retried
   * `maxAttempts` times and then dead-lettered with the error, so it never blocks its VPS's
   * keys for good.
   */
  async #applyWithRetry(id: string, fields: Record<string, string> | null, poison: { deliveries: number } | undefined, term: number, termEnded: AbortSignal): Promise<'done' | 'left-pending'> {
    // Not only "leading now": leading in the term the event was read in. An event queued
    // behind one that was left pending (the Lease lost while it was retried) must not run in
    // its place, out of stream order, even once the Lease is held again.
    const leaving = (): boolean => this.#stopping() || this.#options.leadershipTerm() !== term;
    let unexpected = 0;
    for (let attempt = 1; ; attempt++) {
      const delay = backoffDelay(attempt, { baseMs: this.#options.retryBaseMs, maxMs: this.#options.retryMaxMs });
      await this.#slots.acquire();
      // Checked before every attempt, the first included; nothing is written by a replica
      // that no longer leads.
      if (leaving()) {
        this.#slots.release();
        return 'left-pending';
      }
      const started = process.hrtime.bigint();
      try {
        const result = await this.#options.processor.process(id, fields, poison);
        this.#options.onResult?.(result, Number(process.hrtime.bigint() - started) / 1e9);
        return 'done';
      } catch (error) {
        // Redis down shows up as odd errors from any command: count only what is not that.
        const transient = error instanceof TransientError || this.#options.commands.status !== 'ready';
        if (!transient) unexpected++;
        if (fields !== null && unexpected >= this.#options.maxAttempts) {
          const result = await this.#options.processor.giveUp(id, fields, error, unexpected).catch((giveUpError: unknown) => {
            this.#log.warn({ err: giveUpError, streamId: id }, 'dead-lettering an event that keeps failing failed; will retry');
            return undefined;
          });
          if (result !== undefined) {
            this.#options.onResult?.(result, Number(process.hrtime.bigint() - started) / 1e9);
            return 'done';
          }
        }
        this.#log.warn({ err: error, streamId: id, vpsId: fields?.vps_id, name: fields?.name, attempt, unexpected, retryInMs: delay, transient }, 'applying event failed; will retry (not acknowledged)');
        this.#options.onRetry?.(error instanceof TransientError ? 'kubernetes' : transient ? 'redis' : 'unexpected');
      } finally {
        this.#lastProgressAt = Date.now();
        this.#slots.release();
      }
      // Stopping, or the term is over: leave it pending; whoever consumes next re-reads it.
      if (leaving()) return 'left-pending';
      // Ends early when the term does (stop() ends it too).
      await sleep(delay, termEnded);
    }
  }
}
