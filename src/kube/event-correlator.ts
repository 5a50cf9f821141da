/**
 * Which Kubernetes Events to write, decided without I/O, the way client-go's EventRecorder
 * decides it, so a busy daemon cannot flood the API server (Kyverno's event floods are the
 * example not to follow: one Event per object per background scan, thousands a minute).
 *
 * - Series (client-go's events library): an occurrence isomorphic to one recorded in the last
 *   6 minutes is not a new Event. The second occurrence turns the first Event into a series
 *   (a patch with count 2); later ones only count, and the count is written when the series
 *   has been quiet for 6 minutes (it is then finished) or every 30 minutes while it goes on.
 *   Isomorphic means the same object, reporting controller, reason, action and note: unlike
 *   client-go the note is part of the key, because ours names the stream id of the event
 *   applied, and a series must not present the second apply under the first one's id.
 * - Spam filter (client-go's record package): each object has a token bucket, 25 Events at
 *   once and one more every 5 minutes; an occurrence that finds it empty is dropped.
 * - A bucket for the whole daemon on top, because the per-object filter does not bound a
 *   backfill of 5,000 new objects. What it drops is counted into one series on the daemon's
 *   own object (its Lease), so the drop is visible where an operator looks, and bounded too.
 *
 * Dropping an Event loses nothing of the record: every event's outcome is on the outcome
 * stream. Events are a courtesy to the kubectl user, and must stay cheap.
 */

export interface ObjectReference {
  apiVersion: string;
  kind: string;
  namespace: string;
  name: string;
  uid?: string;
}

export interface Occurrence {
  regarding: ObjectReference;
  type: 'Normal' | 'Warning';
  /** UpperCamelCase, why: Applied, DriftRepaired, WriteRefused… */
  reason: string;
  /** UpperCamelCase, what was done: Apply, Repair, Delete… */
  action: string;
  note: string;
}

export interface CorrelatorOptions {
  /** Per object: Events at once, and the seconds it takes to earn one more (client-go: 25, 300). */
  objectBurst: number;
  objectRefillSeconds: number;
  /** The whole daemon: Events at once, and Events earned per minute. */
  globalBurst: number;
  globalPerMinute: number;
  /** Where drops are counted (the daemon's own object). */
  dropsRegarding: ObjectReference;
  /** client-go's: a series is finished after 6 quiet minutes and refreshed every 30. */
  seriesFinishMs?: number;
  seriesRefreshMs?: number;
}

export const SERIES_FINISH_MS = 6 * 60_000;
export const SERIES_REFRESH_MS = 30 * 60_000;
/** How many isomorphic keys are remembered at most; the oldest are forgotten first (client-go keeps an LRU of 4,096). */
export const MAX_REMEMBERED = 4_096;

/** What to write. `id` names the Event the correlator gave it (the recorder maps ids to object names). */
export type Write =
  | { kind: 'create'; id: number; occurrence: Occurrence; at: number }
  | { kind: 'series'; id: number; count: number; lastObservedAt: number };

export type Decision = { write?: Write; dropped?: 'object-rate' | 'global-rate' };

interface Recorded {
  id: number;
  firstAt: number;
  count: number;
  lastObservedAt: number;
  /** The count last written (1 for a plain Event). */
  writtenCount: number;
  lastWrittenAt: number;
}

/** Starts full; earns `refillPerMs` tokens a millisecond up to `burst`. */
class TokenBucket {
  readonly #burst: number;
  readonly #refillPerMs: number;
  #tokens: number;
  #updatedAt: number;
  constructor(burst: number, refillPerMs: number, now: number) {
    this.#burst = burst;
    this.#refillPerMs = refillPerMs;
    this.#tokens = burst;
    this.#updatedAt = now;
  }
  #level(now: number): number {
    return Math.min(this.#burst, this.#tokens + Math.max(0, now - this.#updatedAt) * this.#refillPerMs);
  }
  take(now: number): boolean {
    this.#tokens = this.#level(now);
    this.#updatedAt = Math.max(this.#updatedAt, now);
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
  full(now: number): boolean {
    return this.#level(now) >= this.#burst;
  }
}

const refKey = (ref: ObjectReference): string => `${ref.apiVersion}/${ref.kind}/${ref.namespace}/${ref.name}/${ref.uid ?? ''}`;
const isomorphicKey = (o: Occurrence): string => JSON.stringify([refKey(o.regarding), o.type, o.reason, o.action, o.note]);

export class EventCorrelator {
  readonly #options: Required<CorrelatorOptions>;
  /** Insertion-ordered, so the first entries are the least recently recorded. */
  readonly #recorded = new Map<string, Recorded>();
  readonly #objectBuckets = new Map<string, TokenBucket>();
  readonly #global: TokenBucket;
  #nextId = 1;
  /** Ids forgotten since the last tick (their Event's name need no longer be kept). */
  #forgotten: number[] = [];

  constructor(options: CorrelatorOptions, now: number) {
    this.#options = { seriesFinishMs: SERIES_FINISH_MS, seriesRefreshMs: SERIES_REFRESH_MS, ...options };
    this.#global = new TokenBucket(options.globalBurst, options.globalPerMinute / 60_000, now);
  }

  /** The drop notice's occurrence: constant, so every drop folds into one series. */
  #dropNotice(): Occurrence {
    return {
      regarding: this.#options.dropsRegarding,
      type: 'Warning',
      reason: 'EventsRateLimited',
      action: 'Record',
      note: 'Events about WorkloadEntries were dropped by the rate limit (the count says how many); every stream event still has its outcome on the outcome stream.',
    };
  }

  /** Decides about one occurrence at `now` (milliseconds). */
  observe(occurrence: Occurrence, now: number): Decision {
    return this.#observe(occurrence, now, false);
  }

  /** Counts one dropped occurrence into the drop notice's series. */
  observeDrop(now: number): Decision {
    return this.#observe(this.#dropNotice(), now, true);
  }

  #observe(occurrence: Occurrence, now: number, exemptFromGlobal: boolean): Decision {
    const key = isomorphicKey(occurrence);
    const known = this.#recorded.get(key);
    if (known !== undefined && now - known.lastObservedAt < this.#options.seriesFinishMs) {
      known.count += 1;
      known.lastObservedAt = now;
      this.#touch(key, known);
      if (known.count === 2) {
        known.writtenCount = 2;
        known.lastWrittenAt = now;
        return { write: { kind: 'series', id: known.id, count: 2, lastObservedAt: now } };
      }
      return {};
    }
    if (!this.#objectBucket(occurrence.regarding, now).take(now)) return { dropped: 'object-rate' };
    // The drop notice is the one thing the global bucket does not stop: it is bounded by its own object's bucket and series.
    if (!exemptFromGlobal && !this.#global.take(now)) return { dropped: 'global-rate' };
    const id = this.#nextId++;
    this.#touch(key, { id, firstAt: now, count: 1, lastObservedAt: now, writtenCount: 1, lastWrittenAt: now });
    return { write: { kind: 'create', id, occurrence, at: now } };
  }

  /**
   * The periodic pass: series quiet for the finish time get their final count written and are
   * forgotten; long-running ones get their count refreshed. Plain Events are forgotten once
   * they could no longer start a series.
   */
  tick(now: number): { writes: Write[]; forgotten: number[] } {
    const writes: Write[] = [];
    for (const [key, recorded] of this.#recorded) {
      const quiet = now - recorded.lastObservedAt >= this.#options.seriesFinishMs;
      const unwritten = recorded.count > recorded.writtenCount;
      if (recorded.count >= 2 && unwritten && (quiet || now - recorded.lastWrittenAt >= this.#options.seriesRefreshMs)) {
        writes.push({ kind: 'series', id: recorded.id, count: recorded.count, lastObservedAt: recorded.lastObservedAt });
        recorded.writtenCount = recorded.count;
        recorded.lastWrittenAt = now;
      }
      if (quiet) {
        this.#recorded.delete(key);
        this.#forgotten.push(recorded.id);
      }
    }
    for (const [key, bucket] of this.#objectBuckets) if (bucket.full(now)) this.#objectBuckets.delete(key);
    const forgotten = this.#forgotten;
    this.#forgotten = [];
    return { writes, forgotten };
  }

  /** Every unwritten series count, for a last flush at shutdown (the correlator is done after it). */
  flush(now: number): Write[] {
    return this.tick(now + this.#options.seriesFinishMs + this.#options.seriesRefreshMs).writes;
  }

  /** The Events this correlator may still write about; for tests and metrics. */
  get remembered(): number {
    return this.#recorded.size;
  }

  #touch(key: string, recorded: Recorded): void {
    this.#recorded.delete(key);
    this.#recorded.set(key, recorded);
    while (this.#recorded.size > MAX_REMEMBERED) {
      const oldest = this.#recorded.entries().next().value;
      if (oldest === undefined) break;
      this.#recorded.delete(oldest[0]);
      this.#forgotten.push(oldest[1].id);
    }
  }

  #objectBucket(ref: ObjectReference, now: number): TokenBucket {
    const key = refKey(ref);
    let bucket = this.#objectBuckets.get(key);
    if (bucket === undefined) {
      bucket = new TokenBucket(this.#options.objectBurst, 1 / (this.#options.objectRefillSeconds * 1000), now);
      this.#objectBuckets.set(key, bucket);
    }
    return bucket;
  }
}
