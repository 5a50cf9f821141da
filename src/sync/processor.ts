/**
 * One stream entry, start to finish: parse, drop if stale, plan, check, write, then commit
 * the new state together with the ack. Bad events are dead-lettered with the reason;
 * transient failures are thrown (TransientError) and the entry stays pending, so nothing is
 * acknowledged before the Kubernetes write it stands for has succeeded.
 */
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { canonicalAddress } from '../policy/address.ts';
import type { Policy } from '../policy/policy-file.ts';
import { boundedReason, deadLetter } from './dead-letter.ts';
import { parseEvent, type RegisterEvent, type RetireEvent } from './event.ts';
import { PermanentError, type EntryWriter } from './entry-writer.ts';
import { planRegister } from './planner.ts';
import type { StateStore, VpsRecord } from './state-store.ts';
import { compareStreamIds } from '../util/stream-id.ts';

export type Outcome = 'applied' | 'deleted' | 'noop' | 'stale' | 'dead-lettered' | 'trimmed';

/**
 * The webhook denied a claim of an address as taken, but the API server itself shows no
 * other entry with it: the webhook's informer has not yet seen the entry that held it go
 * (typically one this daemon removed or moved a moment ago). Retried, not dead-lettered;
 * not transient either, so a view that never catches up is given up on after the bound.
 */
export class WebhookViewBehindError extends Error {
  override name = 'WebhookViewBehindError';
}

export interface ProcessorDeps {
  redis: Redis;
  store: StateStore;
  writer: EntryWriter;
  policy: () => Policy;
  namespace: string;
  istioApiVersion: string;
  stream: string;
  group: string;
  /** The dead-letter stream is trimmed to about this many entries. */
  deadLetterMaxLength: number;
  logger: Logger;
  now?: () => Date;
  /** A VPS's new desired state is committed (registered or retired). */
  onCommitted?: (record: VpsRecord) => void;
  onApplied?: (operation: 'apply' | 'delete', seconds: number) => void;
  onDeadLetter?: (rule: string) => void;
}

export interface ProcessResult {
  outcome: Outcome;
  event?: string;
  vpsId?: string;
  name?: string;
}

export class EventProcessor {
  readonly #deps: ProcessorDeps;
  readonly #now: () => Date;

  constructor(deps: ProcessorDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? (() => new Date());
  }

  async #deadLetter(id: string, fields: Record<string, string>, rule: string, reason: string, log: Logger): Promise<ProcessResult> {
    const letter = await deadLetter(this.#deps.redis, this.#deps.stream, this.#deps.group, { sourceId: id, fields, rule, reason }, this.#now(), this.#deps.deadLetterMaxLength);
    if (letter === undefined) {
      // Delivered twice and settled by the other delivery: nothing to add.
      log.info({ rule }, 'event already settled by another delivery; not dead-lettered again');
      return { outcome: 'stale', event: fields.event, vpsId: fields.vps_id, name: fields.name };
    }
    this.#deps.onDeadLetter?.(rule);
    log.warn({ rule, reason: boundedReason(reason) }, 'event dead-lettered');
    return { outcome: 'dead-lettered', event: fields.event, vpsId: fields.vps_id, name: fields.name };
  }

  /** Dead-letters an event whose attempts kept failing unexpectedly, with the last error. */
  async giveUp(id: string, fields: Record<string, string>, error: unknown, attempts: number): Promise<ProcessResult> {
    const log = this.#deps.logger.child({ streamId: id, vpsId: fields.vps_id, name: fields.name, event: fields.event });
    const message = error instanceof Error ? error.message : String(error);
    return this.#deadLetter(id, fields, 'event.retries-exhausted', `failed ${attempts} times without a transient cause; last error: ${message}`, log);
  }

  /** `fields` is null for an entry trimmed from the stream while it was pending. */
  async process(id: string, fields: Record<string, string> | null, poison?: { deliveries: number }): Promise<ProcessResult> {
    const base = this.#deps.logger.child({ streamId: id, vpsId: fields?.vps_id, name: fields?.name, event: fields?.event });
    if (fields === null) {
      await this.#deps.redis.xack(this.#deps.stream, this.#deps.group, id);
      base.warn('pending entry was trimmed from the stream; acknowledged without applying');
      return { outcome: 'trimmed' };
    }
    if (poison !== undefined) {
      return this.#deadLetter(id, fields, 'event.poison', `delivered ${poison.deliveries} times without being acknowledged (the daemon stopped while applying it each time)`, base);
    }
    const parsed = parseEvent(fields);
    if (!parsed.ok) return this.#deadLetter(id, fields, parsed.rejection.rule, parsed.rejection.reason, base);
    const event = parsed.event;
    const record = await this.#deps.store.get(event.vps_id);
    if (record !== undefined && compareStreamIds(record.streamId, id) >= 0) {
      // Redelivered, or older than what is applied: a newer state must never be overwritten.
      return this.#ignoreStale(id, event, base, { appliedStreamId: record.streamId }, 'stale event ignored');
    }
    return event.event === 'register' ? this.#register(id, event, fields, record, base) : this.#retire(id, event, fields, record, base);
  }

  /** Acknowledges an event a newer state has superseded, without applying it. */
  async #ignoreStale(id: string, event: RegisterEvent | RetireEvent, log: Logger, detail: Record<string, string>, message: string): Promise<ProcessResult> {
    await this.#deps.redis.xack(this.#deps.stream, this.#deps.group, id);
    log.info(detail, message);
    return { outcome: 'stale', event: event.event, vpsId: event.vps_id, ...(event.name !== undefined ? { name: event.name } : {}) };
  }

  async #register(id: string, event: RegisterEvent, fields: Record<string, string>, previous: VpsRecord | undefined, log: Logger): Promise<ProcessResult> {
    const { store, writer } = this.#deps;
    const plan = planRegister(event, id, { policy: this.#deps.policy(), namespace: this.#deps.namespace, istioApiVersion: this.#deps.istioApiVersion });
    if (!plan.ok) return this.#deadLetter(id, fields, plan.rule, plan.reason, log);
    const address = canonicalAddress(event.address) ?? event.address;
    // Two independent reads, sent together (one round trip with auto-pipelining).
    const [addressHolder, nameHolder] = await Promise.all([store.holderOfAddress(address), store.holderOfName(event.name)]);
    if (addressHolder !== undefined && addressHolder !== event.vps_id) {
      return this.#deadLetter(id, fields, 'address.unique', `address: ${JSON.stringify(event.address)} is already registered to VPS ${addressHolder}`, log);
    }
    if (nameHolder !== undefined && nameHolder !== event.vps_id) {
      return this.#deadLetter(id, fields, 'name.unique', `name: ${JSON.stringify(event.name)} is already used by VPS ${nameHolder}`, log);
    }
    const written = await this.#write('apply', async () => {
      if (previous?.state === 'registered' && previous.name !== event.name) {
        // Renamed: the old entry goes, so one VPS never has two entries.
        if ((await writer.deleteOwned(previous.name, event.vps_id, id)) === 'superseded') return 'superseded' as const;
      }
      await writer.apply(plan.entry);
      return 'applied' as const;
    });
    if (written === 'superseded' || (written instanceof PermanentError && written.rule === 'ownership.stream-order')) {
      // A newer event already wrote this entry (its commit is pending, or another replica's):
      // this one is superseded, exactly like a stale event.
      const reason = written === 'superseded' ? `entry ${previous?.name ?? ''} was written by a newer event` : written.message;
      return this.#ignoreStale(id, event, log, { reason }, 'superseded by a newer event already written to the entry; ignored');
    }
    if (written instanceof PermanentError && written.deniedRules.length > 0 && written.deniedRules.every((rule) => rule === 'address.unique')) {
      await this.#confirmAddressTaken(address, event.name, written);
    }
    if (written instanceof PermanentError) return this.#deadLetter(id, fields, written.rule, written.message, log);
    const record: VpsRecord = {
      vpsId: event.vps_id,
      state: 'registered',
      name: event.name,
      address,
      country: event.country,
      labels: event.labels ?? {},
      streamId: id,
      updatedAt: this.#now().toISOString(),
    };
    const committed = await store.commit(record);
    if (committed === 'ok') this.#deps.onCommitted?.(record);
    log.info({ address, outcome: committed === 'ok' ? 'applied' : 'stale' }, 'register applied');
    return { outcome: committed === 'ok' ? 'applied' : 'stale', event: 'register', vpsId: event.vps_id, name: event.name };
  }

  async #retire(id: string, event: RetireEvent, fields: Record<string, string>, previous: VpsRecord | undefined, log: Logger): Promise<ProcessResult> {
    const { store, writer } = this.#deps;
    const name = event.name ?? (previous?.state === 'registered' ? previous.name : undefined);
    let result: 'deleted' | 'absent' | 'not-ours' = 'absent';
    if (name !== undefined) {
      const deleted = await this.#write('delete', () => writer.deleteOwned(name, event.vps_id, id));
      if (deleted instanceof PermanentError) return this.#deadLetter(id, fields, deleted.rule, deleted.message, log);
      if (deleted === 'superseded') {
        return this.#ignoreStale(id, event, log, { reason: `entry ${name} was written by a newer event` }, 'retire superseded by a newer event already written to the entry; ignored');
      }
      result = deleted;
    }
    // A tombstone even for an unknown VPS: a late, older register must not create it.
    const tombstone: VpsRecord = {
      vpsId: event.vps_id,
      state: 'retired',
      name: name ?? '',
      address: previous?.address ?? '',
      country: previous?.country ?? '',
      labels: {},
      streamId: id,
      updatedAt: this.#now().toISOString(),
    };
    const committed = await store.commit(tombstone);
    if (committed === 'ok') this.#deps.onCommitted?.(tombstone);
    if (result === 'not-ours') log.warn('retire: the entry exists but is not managed by edge-registrar for this VPS; left alone');
    const outcome: Outcome = committed === 'stale' ? 'stale' : result === 'deleted' ? 'deleted' : 'noop';
    log.info({ outcome }, 'retire applied');
    return { outcome, event: 'retire', vpsId: event.vps_id, ...(name !== undefined ? { name } : {}) };
  }

  /**
   * The webhook said the address is taken. Our desired state said it was free (the check
   * above), so ask the API server itself: if no other entry holds it, the webhook's cache is
   * behind (an entry just removed or moved), and the claim is retried rather than
   * dead-lettered. If one does (an unmanaged entry, say), the denial stands.
   */
  async #confirmAddressTaken(address: string, name: string, denial: PermanentError): Promise<void> {
    const holders = await this.#deps.writer.entriesWithAddress(address, name);
    if (holders.length === 0) {
      throw new WebhookViewBehindError(`the webhook denied address ${address} as taken, but no other entry in the API server holds it (its cache is behind); will retry: ${denial.message}`, { cause: denial });
    }
  }

  /**
   * One Kubernetes write of an event, timed for the apply histogram when it succeeds. A
   * permanent refusal is returned (the caller dead-letters the event); anything else is
   * thrown, to be retried.
   */
  async #write<T>(operation: 'apply' | 'delete', write: () => Promise<T>): Promise<T | PermanentError> {
    const started = process.hrtime.bigint();
    try {
      const value = await write();
      this.#deps.onApplied?.(operation, Number(process.hrtime.bigint() - started) / 1e9);
      return value;
    } catch (error) {
      if (error instanceof PermanentError) return error;
      throw error;
    }
  }
}
