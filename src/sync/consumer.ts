/**
 * The stream consumer. Where it reads next is an explicit state machine (read-position.ts):
 * on becoming leader it takes over every entry still pending in the group (the previous
 * leader's unfinished work), then reads its own pending entries, page by page in stream
 * order, and only then new ones; anything that may have lost sight of a delivery sends it
 * back to the oldest pending entry. It applies events in stream order wherever order matters
 * (one VPS; a name or address one event frees and a later one claims: see ordering.ts) while
 * unrelated VPSs proceed in parallel; retries transient failures with backoff and jitter
 * without acknowledging and without blocking other VPSs; and gives up (dead-letters) after a
 * bounded number of unexpected failures. It reports its own progress, so liveness can fail
 * when it stalls.
 *
 * Work belongs to the leadership term it was read in, and so do reads:
 * - an event of an ended term is left pending, and a new term starts reading only once the
 *   old term's work has settled, from the oldest pending entry, so stream order is rebuilt
 *   from Redis;
 * - the blocking read is cut when the term ends, on a connection that never re-sends it
 *   (redis/blocking-reader.ts), so a deposed leader takes no deliveries after its term;
 * - entries a deposed leader took anyway (a read that reached Redis late) are found pending
 *   with another consumer, claimed, and read in stream order before any newer event runs.
 *
 * "Poison" means the daemon died while applying that event `maxInterruptedAttempts` times
 * (attempt-log.ts), not that Redis delivered it often. An event that was interrupted before
 * is applied alone, with nothing else in flight, so the one event that crashes the daemon
 * does not take the others of its batch down with it again.
 */
import type { Redis } from 'ioredis';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { BlockingReader, StreamEntry } from '../redis/blocking-reader.ts';
import { isRedisUnavailable } from '../redis/errors.ts';
import { ReplicationBehindError } from '../redis/replica-wait.ts';
import { backoffDelay } from '../util/backoff.ts';
import type { KeyedQueue } from '../util/keyed-queue.ts';
import { Semaphore } from '../util/semaphore.ts';
import { sleep } from '../util/sleep.ts';
import type { SettlementKeys } from './acknowledge.ts';
import type { AttemptLog } from './attempt-log.ts';
import { TransientError } from './entry-writer.ts';
import { fieldsToRecord } from './event.ts';
import { HoldingsLedger, type Holding } from './ordering.ts';
import { StateBehindError, type EventProcessor, type ProcessResult } from './processor.ts';
import { TermEndedError } from './term.ts';
import { IDLE, advance, nextRead, type ReadEvent, type ReadPosition } from './read-position.ts';

export interface ConsumerOptions {
  reader: BlockingReader;
  commands: Redis;
  processor: EventProcessor;
  attempts: AttemptLog;
  /** Where settling an entry writes (its ack and outcome): for entries deleted from the stream while pending. */
  settlement: SettlementKeys;
  /** Orders events per VPS, name and address; shared with the resync. */
  queue: KeyedQueue;
  stream: string;
  group: string;
  consumer: string;
  batchSize: number;
  concurrency: number;
  /** How often, while the stream is quiet, to look for entries pending with another consumer. */
  strayCheckMs: number;
  consumerRetentionMs: number;
  /** Attempts at an event that may end with the daemon gone before it is dead-lettered as poison. */
  maxInterruptedAttempts: number;
  /**
   * Attempts at an event that fail neither transiently (the API server, Redis unreachable)
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
  /** Work each new term does first, before it takes over or reads anything (the key migration). */
  onTermStart?: () => Promise<void>;
  /** The term's work was rewound (see StreamConsumer's #rewind), with why. */
  onRewind?: (reason: RewindReason) => void;
  /** Returns once a replica has every settling write so far; throws (transient) when none has in time (redis/replica-wait.ts). */
  durable?: () => Promise<void>;
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

/**
 * One page of XAUTOCLAIM JUSTID over the group (min idle 0). Entries deleted from the stream
 * while pending come back in its third element, and Redis has already dropped them from the
 * pending list: their outcome (trimmed) is recorded in the same script, or nobody could.
 */
const CLAIM_PAGE = `
local reply = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'COUNT', ARGV[4], 'JUSTID')
for _, id in ipairs(reply[3] or {}) do
  redis.call('HDEL', KEYS[3], id)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'source_id', id, 'outcome', 'trimmed',
    'reason', 'the entry was deleted from the stream before it was applied', 'at', ARGV[6])
end
return { reply[1], reply[2] }
`;

/**
 * One page of the entries pending with consumers other than this one (ARGV[2]), claimed by
 * XCLAIM JUSTID (no delivery counted). XAUTOCLAIM cannot be used here: it walks the whole
 * pending list, this consumer's own in-flight entries included, and for one that the producer
 * deleted from the stream while it was being applied it drops the entry from the pending list
 * and reports it, so the apply's commit would acknowledge nothing and the event's only outcome
 * would say trimmed. A stray that was deleted from the stream is acknowledged here with its
 * outcome (trimmed), since no one else can. Returns how many it claimed and how many it settled.
 */
const CLAIM_STRAYS_PAGE = `
local claimed, trimmed = 0, 0
local budget = tonumber(ARGV[3])
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['name'] ~= ARGV[2] and tonumber(f['pending']) > 0 and budget > 0 then
    for _, row in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', budget, f['name'])) do
      local id = row[1]
      budget = budget - 1
      if #redis.call('XRANGE', KEYS[1], id, id) == 0 then
        redis.call('HDEL', KEYS[3], id)
        redis.call('XACK', KEYS[1], ARGV[1], id)
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'source_id', id, 'outcome', 'trimmed',
          'reason', 'the entry was deleted from the stream before it was applied', 'at', ARGV[5])
        trimmed = trimmed + 1
      else
        redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
        claimed = claimed + 1
      end
    end
  end
end
return { claimed, trimmed }
`;

type AttemptOutcome = 'done' | 'left-pending';

/** Why the work in flight was rewound: Redis lost a commit of this daemon, or an attempt failed in a way nothing handled. */
export type RewindReason = 'lost-commit' | 'unexpected-failure';

/** Strays claimed per script call: one call stays short however many a deposed leader took. */
const STRAY_PAGE = 500;

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
  /** At most `concurrency` events are being written at once; an event interrupted before takes them all. */
  readonly #slots: Semaphore;
  #position: ReadPosition = IDLE;
  /** The term whose takeover was done and whose events are in flight; a different one must wait for them to settle. */
  #workingTerm: number | undefined;
  /** Aborted when the term the loop reads in ends (or its work is rewound), so retries of its events stop waiting. */
  #termEnded = new AbortController();
  /**
   * The generation of this term's work: raised when the work must be rebuilt from Redis (a
   * lost commit, an event left pending). Work and reads of an older generation are fenced like
   * those of an ended term, so nothing queued or read behind the rewound event runs first.
   */
  #generation = 0;
  /** A rewind is under way: nothing is read until every event of the old generation has left. */
  #rewinding = false;
  /** Rewinds in a row without an event finishing in between (for their back-off). */
  #rewinds = 0;
  #lastStrayCheck = 0;
  #stopped = new AbortController();
  #running: Promise<void> | undefined;

  constructor(options: ConsumerOptions) {
    this.#options = options;
    this.#log = options.logger.child({ component: 'consumer', stream: options.stream, group: options.group, consumer: options.consumer });
    this.#slots = new Semaphore(options.concurrency);
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

  /** Where the next read starts (for tests and logs). */
  get position(): ReadPosition {
    return this.#position;
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

  /**
   * The leader elector says leadership ended (LeaderElector's onChange): the read in flight is
   * cut now, not when its block time runs out, and retries stop waiting.
   */
  leadershipLost(): void {
    this.#options.reader.close();
    this.#termEnded.abort();
  }

  /** Stops reading and writing; events in flight finish their current call, then stay pending for the next leader. */
  async stop(): Promise<void> {
    this.#stopped.abort();
    this.#termEnded.abort();
    this.#options.reader.close();
    await this.#running;
    await this.#options.queue.idle();
  }

  #move(event: ReadEvent): void {
    this.#position = advance(this.#position, event);
  }

  async #loop(): Promise<void> {
    const signal = this.#stopped.signal;
    let failures = 0;
    while (!signal.aborted) {
      this.#lastTurnAt = Date.now();
      const term = this.#options.leadershipTerm();
      if (this.#workingTerm !== undefined && term !== this.#workingTerm) this.#endTerm();
      this.#move({ kind: 'term', term });
      const action = nextRead(this.#position);
      if (action.kind === 'wait') {
        await sleep(250, signal);
        continue;
      }
      if (this.#rewinding) {
        // The rewound generation's events are leaving (fenced at their next step); once they
        // have, reading starts again from the oldest pending entry, after a back-off that
        // grows while rewinds repeat (a lost commit whose event never comes back).
        if (this.#inFlight.size > 0) {
          await sleep(50, signal);
          continue;
        }
        this.#rewinding = false;
        await sleep(backoffDelay(this.#rewinds, { baseMs: this.#options.retryBaseMs, maxMs: this.#options.retryMaxMs }), signal);
        continue;
      }
      if (this.#inFlight.size > 0 && this.#workingTerm !== action.term) {
        // The last term's events are leaving (each is left pending at its next attempt, or
        // finishes a write already sent); none may be overtaken by a re-read of its own.
        await sleep(50, signal);
        continue;
      }
      // Back-pressure: never hold more than a few batches in memory.
      if (this.#inFlight.size >= this.#options.batchSize * 4) {
        await sleep(50, signal);
        continue;
      }
      try {
        if (action.kind === 'take-over') {
          this.#holdings.clear();
          await this.#options.onTermStart?.();
          await this.#takeOver();
          this.#workingTerm = action.term;
          this.#move({ kind: 'took-over' });
          continue;
        }
        if (Date.now() - this.#lastStrayCheck > this.#options.strayCheckMs) {
          await this.#pruneConsumers();
          if (await this.#claimStrays()) {
            this.#move({ kind: 'strays-claimed' });
            continue;
          }
        }
        const generation = this.#generation;
        const result = await this.#options.reader.read(action.id);
        failures = 0;
        if (result.kind === 'cut') {
          if (!this.#stopping() && this.#options.leadershipTerm() === action.term) this.#log.warn({ reason: result.reason }, 'stream read cut; reading again from the oldest pending entry');
          this.#move({ kind: 'read-cut' });
          continue;
        }
        const entries = result.entries;
        // Read in a term that has ended meanwhile, or before a rewind: they stay pending, to be
        // read again in stream order (whoever leads next, or this term from the oldest pending).
        if (this.#options.leadershipTerm() !== action.term || this.#generation !== generation) continue;
        if (action.id === '>') {
          // Entries a deposed leader took after our takeover sit before these in the stream:
          // claim them and read everything pending in stream order instead of running these first.
          if (entries.length > 0 && (await this.#claimStrays())) {
            this.#move({ kind: 'strays-claimed' });
            continue;
          }
        } else {
          this.#move({ kind: 'read', count: entries.length, batchSize: this.#options.batchSize, lastId: entries.at(-1)?.[0] });
        }
        await this.#dispatch(entries, action.term, generation);
      } catch (error) {
        if (this.#stopping()) break;
        failures++;
        const delay = backoffDelay(failures, { baseMs: this.#options.retryBaseMs, maxMs: this.#options.retryMaxMs });
        this.#log.warn({ err: error, retryInMs: delay }, 'reading the stream failed; retrying');
        this.#options.onRetry?.('redis');
        this.#move({ kind: 'read-failed' });
        await sleep(delay, signal);
      }
    }
  }

  /** Whether a lost event is pending in the group, acknowledged but still in the stream (with its fields), or gone. */
  async #findLost(streamId: string): Promise<'pending' | 'gone' | { fields: Record<string, string> }> {
    const { commands, stream, group } = this.#options;
    const pending = await commands.xpending(stream, group, streamId, streamId, 1);
    if (pending.length > 0) return 'pending';
    const [entry] = await commands.xrange(stream, streamId, streamId);
    return entry === undefined ? 'gone' : { fields: fieldsToRecord(entry[1]) };
  }

  /** The term being worked in has ended: its events' retries stop waiting, and reads restart after a takeover. */
  #endTerm(): void {
    this.#workingTerm = undefined;
    this.#generation++;
    this.#options.reader.close();
    this.#termEnded.abort();
    this.#termEnded = new AbortController();
  }

  /**
   * The work of this term must be rebuilt from Redis: an event was left pending while the term
   * goes on (Redis lost a commit of this daemon, and the event it acknowledged will be
   * delivered again; or an attempt failed unexpectedly). Releasing only that event's place in
   * the order would let every event queued behind it, and a read already in flight, run before
   * it. So the whole generation is fenced: queued events leave without running, writes already
   * sent finish, the read in flight is cut, and once all have left the consumer reads again
   * from the oldest pending entry, in stream order.
   */
  #rewind(reason: RewindReason, streamId: string): void {
    this.#generation++;
    this.#rewinding = true;
    this.#rewinds++;
    this.#options.reader.close();
    this.#termEnded.abort();
    this.#termEnded = new AbortController();
    this.#move({ kind: 'left-pending' });
    this.#log.warn({ streamId, reason, inFlight: this.#inFlight.size, rewinds: this.#rewinds }, 'rewinding: every event in flight leaves pending, and the pending list is read again in stream order');
    this.#options.onRewind?.(reason);
  }

  /**
   * A new leader continues where the old one stopped: everything pending in the group (the
   * old leader's unfinished events, whatever their idle time) becomes this consumer's, and
   * is then read in stream order with its own pending entries, before any new event. JUSTID:
   * a takeover is no delivery.
   */
  async #takeOver(): Promise<void> {
    const moved = await this.#claimAll();
    if (moved > 0) this.#log.info({ count: moved }, 'took over the pending entries of the group');
  }

  /** XAUTOCLAIM JUSTID of every pending entry in the group; returns how many changed hands (or were ours). */
  async #claimAll(): Promise<number> {
    const { commands, stream, group, consumer, settlement } = this.#options;
    let cursor = '0-0';
    let moved = 0;
    do {
      const reply = (await commands.eval(CLAIM_PAGE, 3, stream, settlement.outcomes.key, settlement.attempts, group, consumer, cursor, 1000, String(settlement.outcomes.maxLength), new Date().toISOString())) as [string, string[]];
      cursor = reply[0];
      moved += reply[1].length;
    } while (cursor !== '0-0');
    return moved;
  }

  /**
   * Entries pending with any other consumer: while this replica leads, only a deposed
   * leader's read that reached Redis late can have put them there. Claimed (JUSTID) when
   * found, never touching this consumer's own entries (in flight, some of them); true then, and
   * the caller reads from the oldest pending entry.
   */
  async #claimStrays(): Promise<boolean> {
    this.#lastStrayCheck = Date.now();
    const { commands, stream, group, consumer, settlement } = this.#options;
    const summary = (await commands.xpending(stream, group)) as [number, string | null, string | null, [string, string][] | null];
    const others = (summary[3] ?? []).filter(([name, count]) => name !== consumer && Number(count) > 0);
    if (others.length === 0) return false;
    let [claimed, trimmed] = [0, 0];
    for (;;) {
      const [pageClaimed, pageTrimmed] = (await commands.eval(CLAIM_STRAYS_PAGE, 3, stream, settlement.outcomes.key, settlement.attempts, group, consumer, STRAY_PAGE, String(settlement.outcomes.maxLength), new Date().toISOString())) as [number, number];
      claimed += pageClaimed;
      trimmed += pageTrimmed;
      if (pageClaimed + pageTrimmed < STRAY_PAGE) break;
    }
    this.#log.warn({ consumers: others.map(([name, count]) => `${name}:${count}`), claimed, trimmed }, 'found entries pending with another consumer (a deposed leader read them late); claimed, reading in stream order');
    return true;
  }

  async #pruneConsumers(): Promise<void> {
    const { commands, stream, group, consumer, consumerRetentionMs } = this.#options;
    const removed = (await commands.eval(PRUNE_CONSUMERS, 1, stream, group, consumer, consumerRetentionMs)) as string[];
    if (removed.length > 0) this.#log.info({ consumers: removed }, 'removed consumers of replicas that are gone (nothing pending, silent)');
  }

  /**
   * Queues each entry behind every earlier event it must follow (see ordering.ts); returns
   * once queued. The holdings of VPSs without events in flight are read first, and read
   * again for any VPS whose last event settled meanwhile, so no event is queued without
   * knowing what its VPS may free. `term` is the leadership term they were read in.
   */
  async #dispatch(entries: readonly StreamEntry[], term: number, generation: number): Promise<void> {
    const fresh = entries
      .filter(([id]) => !this.#inFlight.has(id))
      .map(([id, raw]) => ({ id, fields: raw === null ? null : fieldsToRecord(raw) }));
    if (fresh.length === 0) return;
    const interrupted = await this.#options.attempts.interrupted(fresh.map(({ id }) => id));
    const vpsIds = fresh.flatMap(({ id, fields }) => (fields === null ? [] : [fields.vps_id ?? id]));
    const seeded: string[] = [];
    try {
      for (let missing = this.#holdings.unknown(vpsIds); missing.length > 0; missing = this.#holdings.unknown(vpsIds)) {
        const read = await this.#options.holdings(missing);
        for (const vpsId of missing) this.#holdings.seed(vpsId, read.get(vpsId));
        seeded.push(...missing);
      }
    } catch (error) {
      // Seeded here and never given an event: dropped, or the ledger would keep them for good.
      this.#holdings.forgetIdle(seeded);
      throw error;
    }
    // From here to the end no await: nothing settles between reading holdings and queueing.
    if (this.#inFlight.size === 0) this.#lastProgressAt = Date.now();
    const termEnded = this.#termEnded.signal;
    for (const { id, fields } of fresh) {
      this.#inFlight.add(id);
      const vpsId = fields === null ? undefined : (fields.vps_id ?? id);
      const keys = vpsId === undefined || fields === null ? [`entry:${id}`] : this.#holdings.dispatch({ vpsId, name: fields.name, address: fields.address });
      void this.#options.queue
        .run(keys, () => this.#applyWithRetry(id, fields, interrupted.get(id) ?? 0, term, generation, termEnded))
        .catch((error: unknown) => {
          this.#log.error({ err: error, streamId: id }, 'applying event failed unexpectedly; it stays pending');
          if (this.#generation === generation) this.#rewind('unexpected-failure', id);
          return 'left-pending' as const;
        })
        .then((outcome) => {
          this.#inFlight.delete(id);
          if (vpsId !== undefined) this.#holdings.settle(vpsId);
          if (outcome === 'done') this.#rewinds = 0;
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
   * keys for good. `interrupted` is how many attempts at it a daemon never finished.
   */
  async #applyWithRetry(id: string, fields: Record<string, string> | null, interrupted: number, term: number, generation: number, termEnded: AbortSignal): Promise<AttemptOutcome> {
    // Not only "leading now": leading in the term the event was read in, and in the generation
    // of that term's work. An event queued behind one that was left pending (the Lease lost
    // while it was retried, a lost commit) must not run in its place, out of stream order,
    // even once the Lease is held again.
    const leaving = (): boolean => this.#stopping() || this.#options.leadershipTerm() !== term || this.#generation !== generation;
    const fence = (): void => {
      if (leaving()) throw new TermEndedError(`leadership term ${term} ended or its work was rewound; ${id} stays pending`);
    };
    const { attempts, processor } = this.#options;
    // Interrupted before: run alone, so if it takes the daemon down again, only it is counted.
    const permits = interrupted > 0 ? this.#slots.limit : 1;
    if (interrupted > 0) this.#log.warn({ streamId: id, vpsId: fields?.vps_id, interrupted }, 'a daemon stopped while applying this event before; applying it alone');
    // The mark was sent (its reply may never come: a timeout still runs it later), so the
    // attempt's end must be sent too, or a mark that lands late counts as an interruption.
    let markSent = false;
    let marked = false;
    // A WAIT found no replica with the settling write: the write may yet be lost in a failover.
    let unreplicated = false;
    // Redis lost a commit of this daemon that this event depends on: the lost event's id.
    let lost: string | undefined;
    // This attempt's mark, the same however often begin() is sent (attempt-log.ts).
    const token = randomBytes(6).toString('hex');
    let unexpected = 0;
    // The event is settled (its outcome written); what is left is for a replica to have it.
    // An object, so the check after the try sees what the closure set.
    const progress = { settled: false };
    const durable = async (result: ProcessResult, started: bigint): Promise<void> => {
      if (!progress.settled) this.#options.onResult?.(result, Number(process.hrtime.bigint() - started) / 1e9);
      progress.settled = true;
      await this.#options.durable?.();
    };
    let result: ProcessResult | undefined;
    // Its permits, kept from one attempt to the next while the event is settled and waits for a
    // replica: so at most `concurrency` events are settled and unreplicated at once.
    let holding = false;
    for (let attempt = 1; ; attempt++) {
      const delay = backoffDelay(attempt, { baseMs: this.#options.retryBaseMs, maxMs: this.#options.retryMaxMs });
      if (!holding) await this.#slots.acquire(permits);
      holding = false;
      let keep = false;
      const started = process.hrtime.bigint();
      try {
        // Checked before every attempt, the first included; nothing is written by a replica
        // that no longer leads.
        fence();
        if (result === undefined && !marked) {
          markSent = true;
          const unfinished = await attempts.begin(id, token);
          marked = true;
          if (fields !== null && unfinished - 1 >= this.#options.maxInterruptedAttempts) result = await processor.poison(id, fields, unfinished - 1, fence);
        }
        // Settled, but no replica had it when last asked: if a failover lost it meanwhile (the
        // state or the acknowledgement is gone), it is applied again, as a redelivery would be.
        if (result !== undefined && unreplicated && fields !== null && !(await processor.survived(id, fields, result))) {
          this.#log.warn({ streamId: id, vpsId: fields.vps_id, outcome: result.outcome }, 'the settled event was lost with an unreplicated write (a failover); applying it again');
          result = undefined;
          progress.settled = false;
        }
        result ??= await processor.process(id, fields, fence);
        // Counted done only once a replica has the commit (redis/replica-wait.ts): until
        // then the event keeps its place in the order, and a failover cannot take back more
        // than the events in flight.
        await durable(result, started);
        return 'done';
      } catch (error) {
        unreplicated ||= error instanceof ReplicationBehindError;
        keep = progress.settled && error instanceof ReplicationBehindError && !leaving();
        lost = error instanceof StateBehindError ? error.lostStreamId : undefined;
        if (lost !== undefined) {
          this.#log.warn({ err: error, streamId: id, vpsId: fields?.vps_id }, 'the desired state lost a commit of this daemon (a Redis failover); leaving this event pending to be read again after the lost one');
          this.#options.onRetry?.('redis');
        } else if (!(error instanceof TermEndedError)) {
          const transient = error instanceof TransientError || error instanceof ReplicationBehindError || isRedisUnavailable(error) || this.#options.commands.status !== 'ready';
          if (!transient) unexpected++;
          if (fields !== null && result === undefined && unexpected >= this.#options.maxAttempts && !leaving()) {
            result = await processor.giveUp(id, fields, error, unexpected, fence).catch((giveUpError: unknown) => {
              this.#log.warn({ err: giveUpError, streamId: id }, 'dead-lettering an event that keeps failing failed; will retry');
              return undefined;
            });
            if (result !== undefined) {
              const given = result;
              const done = await durable(given, started).then(() => true, () => false);
              if (done) return 'done';
            }
          }
          this.#log.warn({ err: error, streamId: id, vpsId: fields?.vps_id, name: fields?.name, attempt, unexpected, retryInMs: delay, transient }, 'applying event failed; will retry (not acknowledged)');
          this.#options.onRetry?.(error instanceof TransientError ? 'kubernetes' : transient ? 'redis' : 'unexpected');
        }
      } finally {
        this.#lastProgressAt = Date.now();
        if (keep) holding = true;
        else this.#slots.release(permits);
      }
      // Settled already and the term is over: nothing is pending to leave (the settling script
      // removed the attempt's mark with the acknowledgement).
      if (progress.settled && leaving()) {
        if (holding) this.#slots.release(permits);
        return 'done';
      }
      // Stopping, or the term or its generation is over: leave it pending; whoever consumes
      // next (this term, after the rewind) re-reads it in stream order.
      if (leaving()) {
        if (markSent) attempts.end(id, token);
        return 'left-pending';
      }
      // Redis lost a commit this daemon made (a failover). Where the lost event is decides:
      // - pending again (the failover took its acknowledgement too, as it does: the ack is
      //   written after the commit): it comes back older than this one and must go first, so
      //   the whole generation is rewound before this returns (before anything queued behind it
      //   may start) and the pending list read again from Redis, in stream order;
      // - acknowledged but still in the stream: no read will bring it back, so it is applied
      //   again here, first, and this event tried again after it (still in stream order);
      // - gone from the stream: nothing can bring it back but a new event; this one waits, as
      //   for a transient failure, until the commit memory gives the lost one up and the claim
      //   is judged on the state as it stands.
      if (lost !== undefined) {
        const where = await this.#findLost(lost).catch(() => 'unknown' as const);
        if (where === 'pending') {
          this.#rewind('lost-commit', id);
          if (markSent) attempts.end(id, token);
          return 'left-pending';
        }
        if (where !== 'unknown' && where !== 'gone') {
          this.#log.warn({ streamId: id, lostStreamId: lost }, 'the lost event was acknowledged but is still in the stream: applying it again before this one');
          const again = await processor.process(lost, where.fields, fence).catch((error: unknown) => {
            this.#log.warn({ err: error, lostStreamId: lost }, 'applying the lost event again failed; will retry');
            return undefined;
          });
          if (again !== undefined) continue;
        }
      }
      // Ends early when the term does (stop() ends it too).
      await sleep(delay, termEnded);
    }
  }
}
