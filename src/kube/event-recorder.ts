/**
 * Writes Kubernetes Events (events.k8s.io/v1) as the correlator decides (event-correlator.ts):
 * never on the caller's path (record() returns at once and never throws), one write at a time
 * from a bounded queue, every call with a deadline. An Event that cannot be written is counted
 * and forgotten: Events are a courtesy to the kubectl user, the outcome stream is the record.
 *
 * The daemon's RBAC allows create and patch on events and nothing else, so the recorder never
 * reads an Event back: it names each Event itself (`<object>.<hex time>`, as client-go does)
 * and patches its series by that name.
 */
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Counter } from 'prom-client';
import { makeApiClient } from './client.ts';
import { EventCorrelator, type CorrelatorOptions, type Occurrence, type Write } from './event-correlator.ts';
import { microTime } from './lease.ts';

/** The API server refuses a longer note (events.k8s.io/v1 noteLengthLimit, in bytes). */
export const MAX_NOTE_BYTES = 1_024;
/** Writes waiting beyond this are dropped: the buckets keep the queue far shorter unless the API server is down. */
export const MAX_QUEUED_WRITES = 1_000;

export type EventWriteResult = 'created' | 'series-updated' | 'dropped-object-rate' | 'dropped-global-rate' | 'dropped-queue-full' | 'failed';

export interface EventRecorderOptions {
  kubeConfig: k8s.KubeConfig;
  /** events.k8s.io's reportingController, e.g. edge-registrar.io/sync. */
  reportingController: string;
  /** The pod: events.k8s.io's reportingInstance. */
  reportingInstance: string;
  correlator: CorrelatorOptions;
  logger: Logger;
  written?: Counter<'result'>;
  /** How often series counts are written and finished series forgotten. */
  tickMs?: number;
  requestTimeoutMs?: number;
  /** Wall clock in milliseconds; injectable for tests. */
  now?: () => number;
}

/** A note the API server accepts: at most 1,024 bytes of UTF-8, cut on a character boundary. */
export function boundedNote(note: string): string {
  if (Buffer.byteLength(note) <= MAX_NOTE_BYTES) return note;
  let cut = note.slice(0, MAX_NOTE_BYTES - 3);
  while (Buffer.byteLength(`${cut}…`) > MAX_NOTE_BYTES) cut = cut.slice(0, -1);
  return `${cut}…`;
}

/** client-go's naming: the object's name and the time in hex nanoseconds, made unique within the process. */
function eventName(objectName: string, at: number, sequence: number): string {
  const nanos = BigInt(Math.floor(at)) * 1_000_000n + BigInt(sequence % 1_000_000);
  return `${objectName.slice(0, 200)}.${nanos.toString(16)}`;
}

export class EventRecorder {
  readonly #options: EventRecorderOptions;
  readonly #api: k8s.EventsV1Api;
  readonly #correlator: EventCorrelator;
  readonly #now: () => number;
  /** Correlator id -> the Event written for it (namespace, name), for series patches. */
  readonly #names = new Map<number, { namespace: string; name: string }>();
  /** Writes queued or being written, per correlator id: an id's name is kept while any is. */
  readonly #unwritten = new Map<number, number>();
  /** Ids the correlator forgot while writes for them were still queued: their name goes when the last is written. */
  readonly #forgotten = new Set<number>();
  readonly #queue: Write[] = [];
  #draining: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #sequence = 0;
  #failing = false;
  #stopped = false;

  constructor(options: EventRecorderOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#api = makeApiClient(options.kubeConfig, k8s.EventsV1Api, options.requestTimeoutMs);
    this.#correlator = new EventCorrelator(options.correlator, this.#now());
  }

  start(): void {
    this.#timer = setInterval(() => { this.#tick(); }, this.#options.tickMs ?? 60_000);
    this.#timer.unref();
  }

  /** Records one occurrence; returns at once. */
  record(occurrence: Occurrence): void {
    if (this.#stopped) return;
    const now = this.#now();
    const decision = this.#correlator.observe({ ...occurrence, note: boundedNote(occurrence.note) }, now);
    if (decision.dropped !== undefined) {
      this.#options.written?.inc({ result: `dropped-${decision.dropped}` });
      const notice = this.#correlator.observeDrop(now);
      if (notice.write !== undefined) this.#enqueue(notice.write);
    }
    if (decision.write !== undefined) this.#enqueue(decision.write);
  }

  /** Writes what is still counted and waits for the queue, at most `timeoutMs`. */
  async stop(timeoutMs: number): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#timer);
    for (const write of this.#correlator.flush(this.#now())) this.#enqueue(write);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.#draining ?? Promise.resolve(), new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
  }

  #tick(): void {
    const { writes, forgotten } = this.#correlator.tick(this.#now());
    for (const write of writes) this.#enqueue(write);
    // A forgotten id may still have writes queued (its create, when the API server is slow or
    // away, or a last series count queued just now): its name is kept until they are written,
    // then dropped, so the map holds no more than the ids remembered and the writes queued.
    for (const id of forgotten) {
      if (this.#unwritten.has(id)) this.#forgotten.add(id);
      else this.#names.delete(id);
    }
  }

  /** Names of Events kept for series patches (bounded by the correlator's memory and the queue). */
  get namesKept(): number {
    return this.#names.size;
  }

  /** One write for `id` is done (written, failed or skipped); its name goes with the last if the correlator forgot it. */
  #written(id: number): void {
    const left = (this.#unwritten.get(id) ?? 1) - 1;
    if (left > 0) {
      this.#unwritten.set(id, left);
      return;
    }
    this.#unwritten.delete(id);
    if (this.#forgotten.delete(id)) this.#names.delete(id);
  }

  #enqueue(write: Write): void {
    if (this.#queue.length >= MAX_QUEUED_WRITES) {
      this.#options.written?.inc({ result: 'dropped-queue-full' });
      return;
    }
    this.#queue.push(write);
    this.#unwritten.set(write.id, (this.#unwritten.get(write.id) ?? 0) + 1);
    // #drain catches each write's failure; this guards the loop itself, since Events are a
    // courtesy and nothing in them may take the daemon down (an unhandled rejection would).
    this.#draining ??= this.#drain()
      .catch(() => { this.#options.written?.inc({ result: 'failed' }); })
      .finally(() => (this.#draining = undefined));
  }

  async #drain(): Promise<void> {
    for (let write = this.#queue.shift(); write !== undefined; write = this.#queue.shift()) {
      const { id } = write;
      try {
        await (write.kind === 'create' ? this.#create(write) : this.#patchSeries(write));
        this.#options.written?.inc({ result: write.kind === 'create' ? 'created' : 'series-updated' });
        if (this.#failing) this.#options.logger.info('writing Kubernetes Events again');
        this.#failing = false;
      } catch (error) {
        this.#options.written?.inc({ result: 'failed' });
        // One warning when writes start failing, not one per Event.
        const log = { err: error, kind: write.kind };
        if (this.#failing) this.#options.logger.debug(log, 'Kubernetes Event not written');
        else this.#options.logger.warn(log, 'Kubernetes Event not written (further failures are logged at debug until one succeeds)');
        this.#failing = true;
      } finally {
        this.#written(id);
      }
    }
  }

  async #create(write: Extract<Write, { kind: 'create' }>): Promise<void> {
    const { occurrence, at } = write;
    const namespace = occurrence.regarding.namespace;
    const name = eventName(occurrence.regarding.name, at, this.#sequence++);
    this.#names.set(write.id, { namespace, name });
    const body: k8s.EventsV1Event = {
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      metadata: { name, namespace },
      eventTime: microTime(new Date(at)),
      reportingController: this.#options.reportingController,
      reportingInstance: this.#options.reportingInstance.slice(0, 128),
      action: occurrence.action,
      reason: occurrence.reason,
      type: occurrence.type,
      note: occurrence.note,
      regarding: { ...occurrence.regarding },
    };
    await this.#api.createNamespacedEvent({ namespace, body });
  }

  async #patchSeries(write: Extract<Write, { kind: 'series' }>): Promise<void> {
    const target = this.#names.get(write.id);
    if (target === undefined) return; // its create was never queued (dropped): nothing to count on
    await this.#api.patchNamespacedEvent(
      { ...target, body: { series: { count: write.count, lastObservedTime: microTime(new Date(write.lastObservedAt)) } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
  }
}
