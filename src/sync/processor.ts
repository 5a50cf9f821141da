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
import { deadLetter } from './dead-letter.ts';
import { parseEvent, type RegisterEvent, type RetireEvent } from './event.ts';
import { PermanentError, type EntryWriter } from './entry-writer.ts';
import { planRegister } from './planner.ts';
import type { StateStore, VpsRecord } from './state-store.ts';
import { compareStreamIds } from '../util/stream-id.ts';

export type Outcome = 'applied' | 'deleted' | 'noop' | 'stale' | 'dead-lettered' | 'trimmed';

export interface ProcessorDeps {
  redis: Redis;
  store: StateStore;
  writer: EntryWriter;
  policy: () => Policy;
  namespace: string;
  istioApiVersion: string;
  stream: string;
  group: string;
  logger: Logger;
  now?: () => Date;
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
  readonly #d: ProcessorDeps;
  readonly #now: () => Date;

  constructor(deps: ProcessorDeps) {
    this.#d = deps;
    this.#now = deps.now ?? (() => new Date());
  }

  async #deadLetter(id: string, fields: Record<string, string>, rule: string, reason: string, log: Logger): Promise<ProcessResult> {
    await deadLetter(this.#d.redis, this.#d.stream, this.#d.group, { sourceId: id, fields, rule, reason }, this.#now());
    this.#d.onDeadLetter?.(rule);
    log.warn({ rule, reason }, 'event dead-lettered');
    return { outcome: 'dead-lettered', event: fields.event, vpsId: fields.vps_id, name: fields.name };
  }

  /** `fields` is null for an entry trimmed from the stream while it was pending. */
  async process(id: string, fields: Record<string, string> | null, poison?: { deliveries: number }): Promise<ProcessResult> {
    const base = this.#d.logger.child({ streamId: id, vpsId: fields?.vps_id, name: fields?.name, event: fields?.event });
    if (fields === null) {
      await this.#d.redis.xack(this.#d.stream, this.#d.group, id);
      base.warn('pending entry was trimmed from the stream; acknowledged without applying');
      return { outcome: 'trimmed' };
    }
    if (poison !== undefined) {
      return this.#deadLetter(id, fields, 'event.poison', `delivered ${poison.deliveries} times without being acknowledged (the daemon stopped while applying it each time)`, base);
    }
    const parsed = parseEvent(fields);
    if (!parsed.ok) return this.#deadLetter(id, fields, parsed.rejection.rule, parsed.rejection.reason, base);
    const event = parsed.event;
    const record = await this.#d.store.get(event.vps_id);
    if (record !== undefined && compareStreamIds(record.streamId, id) >= 0) {
      // Redelivered, or older than what is applied: a newer state must never be overwritten.
      return this.#ignoreStale(id, event, base, { appliedStreamId: record.streamId }, 'stale event ignored');
    }
    return event.event === 'register' ? this.#register(id, event, fields, record, base) : this.#retire(id, event, fields, record, base);
  }

  /** Acknowledges an event a newer state has superseded, without applying it. */
  async #ignoreStale(id: string, event: RegisterEvent | RetireEvent, log: Logger, detail: Record<string, string>, message: string): Promise<ProcessResult> {
    await this.#d.redis.xack(this.#d.stream, this.#d.group, id);
    log.info(detail, message);
    return { outcome: 'stale', event: event.event, vpsId: event.vps_id, ...(event.name !== undefined ? { name: event.name } : {}) };
  }

  async #register(id: string, event: RegisterEvent, fields: Record<string, string>, previous: VpsRecord | undefined, log: Logger): Promise<ProcessResult> {
    const { store, writer } = this.#d;
    const plan = planRegister(event, id, { policy: this.#d.policy(), namespace: this.#d.namespace, istioApiVersion: this.#d.istioApiVersion });
    if (!plan.ok) return this.#deadLetter(id, fields, plan.rule, plan.reason, log);
    const address = canonicalAddress(event.address) ?? event.address;
    const addressHolder = await store.holderOfAddress(address);
    if (addressHolder !== undefined && addressHolder !== event.vps_id) {
      return this.#deadLetter(id, fields, 'address.unique', `address: ${JSON.stringify(event.address)} is already registered to VPS ${addressHolder}`, log);
    }
    const nameHolder = await store.holderOfName(event.name);
    if (nameHolder !== undefined && nameHolder !== event.vps_id) {
      return this.#deadLetter(id, fields, 'name.unique', `name: ${JSON.stringify(event.name)} is already used by VPS ${nameHolder}`, log);
    }
    const written = await this.#write('apply', async () => {
      if (previous?.state === 'registered' && previous.name !== event.name) {
        // Renamed: the old entry goes, so one VPS never has two entries.
        await writer.deleteOwned(previous.name, event.vps_id);
      }
      await writer.apply(plan.entry);
    });
    if (written instanceof PermanentError && written.rule === 'ownership.stream-order') {
      // A newer event already wrote this entry (its commit is pending, or another replica's):
      // this one is superseded, exactly like a stale event.
      return this.#ignoreStale(id, event, log, { reason: written.message }, 'superseded by a newer event already written to the entry; ignored');
    }
    if (written instanceof PermanentError) return this.#deadLetter(id, fields, written.rule, written.message, log);
    const committed = await store.commit({
      vpsId: event.vps_id,
      state: 'registered',
      name: event.name,
      address,
      country: event.country,
      labels: event.labels ?? {},
      streamId: id,
      updatedAt: this.#now().toISOString(),
    });
    log.info({ address, outcome: committed === 'ok' ? 'applied' : 'stale' }, 'register applied');
    return { outcome: committed === 'ok' ? 'applied' : 'stale', event: 'register', vpsId: event.vps_id, name: event.name };
  }

  async #retire(id: string, event: RetireEvent, fields: Record<string, string>, previous: VpsRecord | undefined, log: Logger): Promise<ProcessResult> {
    const { store, writer } = this.#d;
    const name = event.name ?? (previous?.state === 'registered' ? previous.name : undefined);
    let result: 'deleted' | 'absent' | 'not-ours' = 'absent';
    if (name !== undefined) {
      const deleted = await this.#write('delete', () => writer.deleteOwned(name, event.vps_id));
      if (deleted instanceof PermanentError) return this.#deadLetter(id, fields, deleted.rule, deleted.message, log);
      result = deleted;
    }
    // A tombstone even for an unknown VPS: a late, older register must not create it.
    const committed = await store.commit({
      vpsId: event.vps_id,
      state: 'retired',
      name: name ?? '',
      address: previous?.address ?? '',
      country: previous?.country ?? '',
      labels: {},
      streamId: id,
      updatedAt: this.#now().toISOString(),
    });
    if (result === 'not-ours') log.warn('retire: the entry exists but is not managed by edge-registrar for this VPS; left alone');
    const outcome: Outcome = committed === 'stale' ? 'stale' : result === 'deleted' ? 'deleted' : 'noop';
    log.info({ outcome }, 'retire applied');
    return { outcome, event: 'retire', vpsId: event.vps_id, ...(name !== undefined ? { name } : {}) };
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
      this.#d.onApplied?.(operation, Number(process.hrtime.bigint() - started) / 1e9);
      return value;
    } catch (error) {
      if (error instanceof PermanentError) return error;
      throw error;
    }
  }
}
