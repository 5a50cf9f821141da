/**
 * The stream consumer. On becoming leader it takes over every entry still pending in the group
 * (the previous leader's unfinished work); after that, and after every reconnect, it reads
 * all of its own pending entries, page by page in stream order, before any new one. It also
 * takes over entries left idle by any other consumer (XAUTOCLAIM); applies the events of one
 * VPS strictly in stream order while other VPSs proceed in parallel; retries transient
 * failures with backoff and jitter without acknowledging and without blocking other VPSs;
 * and guards the blocking read with a watchdog, since blocked reads have been seen to hang
 * after reconnects (ioredis #1888).
 */
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { backoffDelay } from '../util/backoff.ts';
import { TransientError } from './entry-writer.ts';
import { fieldsToRecord } from './event.ts';
import { orderingKeys } from './ordering.ts';
import type { EventProcessor, ProcessResult } from './processor.ts';
import type { KeyedQueue } from '../util/keyed-queue.ts';
import { Semaphore } from '../util/semaphore.ts';

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
  retryBaseMs: number;
  retryMaxMs: number;
  logger: Logger;
  /** Only the Lease holder consumes. */
  isLeader: () => boolean;
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

const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });

export class StreamConsumer {
  readonly #o: ConsumerOptions;
  readonly #log: Logger;
  /** Stream ids being applied (pending in Redis, owned here); never read twice. */
  readonly #inFlight = new Set<string>();
  /** At most `concurrency` VPSs are being written at once. */
  readonly #slots: Semaphore;
  /**
   * Where the next read of this consumer's own pending entries starts ('0': from the oldest),
   * or undefined once they have all been read and new entries come next.
   */
  #pendingCursor: string | undefined = '0';
  /** Leadership seen by the previous turn of the loop; gaining it triggers the takeover. */
  #wasLeader = false;
  #lastClaim = 0;
  #stopped = new AbortController();
  #running: Promise<void> | undefined;

  constructor(options: ConsumerOptions) {
    this.#o = options;
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
      await this.#o.commands.xgroup('CREATE', this.#o.stream, this.#o.group, '0', 'MKSTREAM');
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

  start(): void {
    this.#running ??= this.#loop();
  }

  /** Stops reading; in-flight events finish (or stay pending for the next consumer). */
  async stop(): Promise<void> {
    this.#stopped.abort();
    await this.#running;
    await this.#o.queue.idle();
  }

  async #read(id: string): Promise<StreamEntry[]> {
    const { blocking, group, consumer, batchSize, blockMs, stream } = this.#o;
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

  async #deliveries(ids: readonly string[]): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    if (ids.length === 0) return counts;
    const first = ids[0] as string;
    const last = ids[ids.length - 1] as string;
    const rows = (await this.#o.commands.xpending(this.#o.stream, this.#o.group, first, last, ids.length * 2)) as [string, string, number, number][];
    for (const [id, , , count] of rows) counts.set(id, count);
    return counts;
  }

  async #loop(): Promise<void> {
    const signal = this.#stopped.signal;
    let failures = 0;
    while (!signal.aborted) {
      if (!this.#o.isLeader()) {
        this.#wasLeader = false;
        this.#pendingCursor = '0';
        await sleep(250, signal);
        continue;
      }
      // Back-pressure: never hold more than a few batches in memory.
      if (this.#inFlight.size >= this.#o.batchSize * 4) {
        await sleep(50, signal);
        continue;
      }
      try {
        if (!this.#wasLeader) {
          await this.#takeOver();
          this.#wasLeader = true;
          this.#pendingCursor = '0';
        }
        if (Date.now() - this.#lastClaim > this.#o.claimIdleMs / 2) await this.#claimIdle();
        const cursor = this.#pendingCursor;
        const entries = await this.#read(cursor ?? '>');
        failures = 0;
        if (cursor !== undefined) {
          // A full page may have more behind it: continue after its last entry. Reading from
          // '0' again would return the same page (still pending, being applied) and leave the
          // rest to wait for the idle claim, behind newer events.
          const last = entries.at(-1)?.[0];
          this.#pendingCursor = entries.length < this.#o.batchSize || last === undefined ? undefined : last;
          const fresh = entries.filter(([id]) => !this.#inFlight.has(id));
          if (fresh.length > 0) await this.#dispatch(fresh, await this.#deliveries(fresh.map(([id]) => id)));
        } else {
          await this.#dispatch(entries, undefined);
        }
      } catch (error) {
        if (this.#stopping()) break;
        failures++;
        const delay = backoffDelay(failures, { baseMs: this.#o.retryBaseMs, maxMs: this.#o.retryMaxMs });
        this.#log.warn({ err: error, retryInMs: delay }, 'reading the stream failed; retrying');
        this.#o.onRetry?.('redis');
        this.#pendingCursor = '0';
        await sleep(delay, signal);
      }
    }
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
    const { commands, stream, group, consumer } = this.#o;
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
    for (const id of ids ?? []) await this.#o.commands.xack(this.#o.stream, this.#o.group, id);
  }

  async #claimIdle(): Promise<void> {
    this.#lastClaim = Date.now();
    const { commands, stream, group, consumer, claimIdleMs, batchSize } = this.#o;
    const reply = (await commands.xautoclaim(stream, group, consumer, claimIdleMs, '0-0', 'COUNT', batchSize)) as [string, StreamEntry[], string[]?];
    const claimed = reply[1].filter(([id]) => !this.#inFlight.has(id));
    await this.#acknowledgeDeleted(reply[2]);
    if (claimed.length > 0) {
      this.#log.info({ count: claimed.length }, 'claimed entries left idle by another consumer');
      await this.#dispatch(claimed, await this.#deliveries(claimed.map(([id]) => id)));
    }
    const removed = (await commands.eval(PRUNE_CONSUMERS, 1, stream, group, consumer, this.#o.consumerRetentionMs)) as string[];
    if (removed.length > 0) this.#log.info({ consumers: removed }, 'removed consumers of replicas that are gone (nothing pending, silent)');
  }

  /** Queues each entry behind the previous event of the same VPS; returns once queued. */
  async #dispatch(entries: readonly StreamEntry[], deliveries: Map<string, number> | undefined): Promise<void> {
    for (const [id, raw] of entries) {
      if (this.#inFlight.has(id)) continue;
      this.#inFlight.add(id);
      const fields = raw === null ? null : fieldsToRecord(raw);
      const count = deliveries?.get(id) ?? 1;
      const poison = count > this.#o.maxDeliveries ? { deliveries: count } : undefined;
      const keys = fields === null ? [`entry:${id}`] : orderingKeys({ vpsId: fields.vps_id ?? id, name: fields.name, address: fields.address });
      this.#o.queue
        .run(keys, () => this.#applyWithRetry(id, fields, poison))
        .catch((error: unknown) => {
          this.#log.error({ err: error, streamId: id }, 'applying event failed unexpectedly; it stays pending');
        })
        .finally(() => {
          this.#inFlight.delete(id);
        });
    }
    // Yield once so queued work starts before the next read.
    await Promise.resolve();
  }

  async #applyWithRetry(id: string, fields: Record<string, string> | null, poison: { deliveries: number } | undefined): Promise<void> {
    const signal = this.#stopped.signal;
    for (let attempt = 1; ; attempt++) {
      const delay = backoffDelay(attempt, { baseMs: this.#o.retryBaseMs, maxMs: this.#o.retryMaxMs });
      await this.#slots.acquire();
      const started = process.hrtime.bigint();
      try {
        const result = await this.#o.processor.process(id, fields, poison);
        this.#o.onResult?.(result, Number(process.hrtime.bigint() - started) / 1e9);
        return;
      } catch (error) {
        const transient = error instanceof TransientError;
        this.#log.warn({ err: error, streamId: id, vpsId: fields?.vps_id, name: fields?.name, attempt, retryInMs: delay, transient }, 'applying event failed; will retry (not acknowledged)');
        this.#o.onRetry?.(transient ? 'kubernetes' : 'redis');
      } finally {
        this.#slots.release();
      }
      // Stopping, or no longer the leader: leave it pending; whoever consumes next re-reads it.
      if (this.#stopping() || !this.#o.isLeader()) return;
      await sleep(delay, signal);
      if (this.#stopping() || !this.#o.isLeader()) return;
    }
  }
}
