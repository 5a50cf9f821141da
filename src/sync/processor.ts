/**
 * One stream entry, start to finish: parse, drop if stale, plan, check, write, then commit
 * the new state together with the ack. Bad events are dead-lettered with the reason;
 * transient failures are thrown (TransientError) and the entry stays pending, so nothing is
 * acknowledged before the Kubernetes write it stands for has succeeded.
 */
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { canonicalAddress } from '../policy/address.ts';
import { describeViolation } from '../policy/describe.ts';
import type { Policy } from '../policy/policy-file.ts';
import { settleWithoutChange } from './acknowledge.ts';
import { deadLetter } from './dead-letter.ts';
import { parseEvent, type RegisterEvent, type RetireEvent } from './event.ts';
import { PermanentError, type EntryWriter } from './entry-writer.ts';
import { entryEvents, entryReference, type EventSink } from './entry-events.ts';
import { boundedReason, type OutcomeKind, type OutcomeRecord } from './outcome.ts';
import { planRegister } from './planner.ts';
import { NO_FENCE, type Fence } from './term.ts';
import type { CommitMemory } from './commit-memory.ts';
import type { StateStore, VpsRecord } from './state-store.ts';
import { compareStreamIds } from '../util/stream-id.ts';
import type { OutcomeRuleId } from './outcome-rules.ts';

/** What became of an event: the outcome stream's vocabulary (outcome.ts), for logs and metrics too. */
export type Outcome = OutcomeKind;

/**
 * The webhook denied a claim of an address as taken, but the API server itself shows no
 * other entry with it: the webhook's informer has not yet seen the entry that held it go
 * (typically one this daemon removed or moved a moment ago). Retried, not dead-lettered;
 * not transient either, so a view that never catches up is given up on after the bound.
 */
export class WebhookViewBehindError extends Error {
  override name = 'WebhookViewBehindError';
}

/** The desired state lost a commit this process made (see commit-memory.ts): retried, counted, never a conflict. */
export class StateBehindError extends Error {
  override name = 'StateBehindError';
  /** The event whose commit Redis no longer has. */
  readonly lostStreamId: string;

  constructor(message: string, lostStreamId: string) {
    super(message);
    this.lostStreamId = lostStreamId;
  }
}

/** The outcome rule of a refusal that is not the stream-order fence (that one settles as superseded). */
function refusalRule(refusal: PermanentError): 'webhook.denied' | 'kubernetes.invalid' {
  return refusal.rule === 'kubernetes.invalid' ? 'kubernetes.invalid' : 'webhook.denied';
}

export interface ProcessorDeps {
  redis: Redis;
  store: StateStore;
  writer: EntryWriter;
  policy: () => Policy;
  namespace: string;
  istioApiVersion: string;
  /** The dead-letter stream is trimmed to about this many entries. */
  deadLetterMaxLength: number;
  logger: Logger;
  now?: () => Date;
  /** A VPS's new desired state is committed (registered or retired). */
  onCommitted?: (record: VpsRecord) => void;
  /** What this process committed, to tell a commit Redis lost in a failover from a real conflict (commit-memory.ts). */
  commits?: CommitMemory;
  onApplied?: (operation: 'apply' | 'delete', seconds: number) => void;
  onDeadLetter?: (rule: string) => void;
  /** Kubernetes Events about the entries (entry-events.ts); none when unset. */
  events?: EventSink;
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

  /** The outcome record of event `id` (its echoed fields as sent). */
  #record(id: string, fields: Record<string, string> | null, outcome: OutcomeKind, extra: { name?: string | undefined; reason?: string; rule?: string } = {}): OutcomeRecord {
    const name = extra.name ?? fields?.name;
    return {
      source_id: id,
      ...(fields?.vps_id !== undefined ? { vps_id: fields.vps_id } : {}),
      ...(fields?.event !== undefined ? { event: fields.event } : {}),
      outcome,
      ...(name !== undefined && name !== '' ? { name } : {}),
      ...(extra.rule !== undefined ? { rule: extra.rule } : {}),
      ...(extra.reason !== undefined ? { reason: extra.reason } : {}),
      at: this.#now().toISOString(),
    };
  }

  async #deadLetter(id: string, fields: Record<string, string>, rule: OutcomeRuleId, reason: string, log: Logger, fence: Fence): Promise<ProcessResult> {
    fence();
    const { outcome: _outcome, at: _at, ...echo } = this.#record(id, fields, 'dead-lettered');
    const keys = { ...this.#deps.store.settlement, deadLetters: this.#deps.store.keys.deadLetters, deadLetterMaxLength: this.#deps.deadLetterMaxLength };
    const letter = await deadLetter(this.#deps.redis, keys, { sourceId: id, fields, rule, reason }, this.#now(), echo);
    if (letter === undefined) {
      // Delivered twice and settled by the other delivery: nothing to add.
      log.info({ rule }, 'event already settled by another delivery; not dead-lettered again');
      return { outcome: 'superseded', event: fields.event, vpsId: fields.vps_id, name: fields.name };
    }
    this.#deps.onDeadLetter?.(rule);
    log.warn({ rule, reason: boundedReason(reason) }, 'event dead-lettered');
    return { outcome: 'dead-lettered', event: fields.event, vpsId: fields.vps_id, name: fields.name };
  }

  /** Dead-letters an event whose attempts kept failing unexpectedly, with the last error. */
  async giveUp(id: string, fields: Record<string, string>, error: unknown, attempts: number, fence: Fence = NO_FENCE): Promise<ProcessResult> {
    const log = this.#deps.logger.child({ streamId: id, vpsId: fields.vps_id, name: fields.name, event: fields.event });
    const message = error instanceof Error ? error.message : String(error);
    return this.#deadLetter(id, fields, 'event.retries-exhausted', `failed ${attempts} times without a transient cause; last error: ${message}`, log, fence);
  }

  /** Dead-letters an event a daemon started applying `interrupted` times and never finished: it stopped each time (attempt-log.ts). */
  async poison(id: string, fields: Record<string, string>, interrupted: number, fence: Fence = NO_FENCE): Promise<ProcessResult> {
    const log = this.#deps.logger.child({ streamId: id, vpsId: fields.vps_id, name: fields.name, event: fields.event });
    return this.#deadLetter(id, fields, 'event.poison', `a daemon started applying it ${interrupted} times and stopped (crashed, was killed, or lost Redis) before finishing each time; after the first, it ran with no other event in flight`, log, fence);
  }

  /**
   * `fields` is null for an entry trimmed from the stream while it was pending. `fence` throws
   * TermEndedError once the event's leadership term is over; it is called before every write.
   */
  async process(id: string, fields: Record<string, string> | null, fence: Fence = NO_FENCE): Promise<ProcessResult> {
    const base = this.#deps.logger.child({ streamId: id, vpsId: fields?.vps_id, name: fields?.name, event: fields?.event });
    if (fields === null) {
      fence();
      await settleWithoutChange(this.#deps.redis, this.#deps.store.settlement, this.#record(id, null, 'trimmed', { reason: 'the entry was trimmed from the stream before it was applied' }));
      base.warn('pending entry was trimmed from the stream; acknowledged without applying');
      return { outcome: 'trimmed' };
    }
    const parsed = parseEvent(fields);
    if (!parsed.ok) return this.#deadLetter(id, fields, parsed.rejection.rule, parsed.rejection.reason, base, fence);
    const event = parsed.event;
    const record = await this.#deps.store.get(event.vps_id);
    if (record !== undefined && record.streamId === id && this.#isOwnState(event, record)) {
      // This event's own commit landed, but its reply did not come back (a timeout, a dropped
      // connection): it is applied, not superseded. What a commit does next is done now.
      return this.#alreadyCommitted(id, event, fields, record, base);
    }
    if (record !== undefined && compareStreamIds(record.streamId, id) >= 0) {
      // Redelivered, or older than what is applied: a newer state must never be overwritten.
      return this.#ignoreStale(id, event, fields, base, `the state of a newer event (${record.streamId}) is applied`, 'stale event ignored', fence);
    }
    return event.event === 'register' ? this.#register(id, event, fields, record, base, fence) : this.#retire(id, event, fields, record, base, fence);
  }

  /**
   * Whether what settling this event wrote is still in Redis, after a WAIT found no replica with
   * it (a failover may have lost it since). A committed state is looked for under the event's
   * stream id; anything else (a dead letter, a superseded event) is gone exactly when the event is
   * pending again. An event undelivered again is not pending: it comes back with the next reads.
   */
  async survived(id: string, fields: Record<string, string>, result: ProcessResult): Promise<boolean> {
    const parsed = parseEvent(fields);
    if (parsed.ok && (result.outcome === 'applied' || result.outcome === 'deleted' || result.outcome === 'unchanged')) {
      const record = await this.#deps.store.get(parsed.event.vps_id);
      return record?.streamId === id;
    }
    const { stream, group } = this.#deps.store.settlement;
    const pending = await this.#deps.redis.xpending(stream, group, id, id, 1);
    return pending.length === 0;
  }

  /** Whether `record` is the state this event commits (its stream id is the event's already). */
  #isOwnState(event: RegisterEvent | RetireEvent, record: VpsRecord): boolean {
    if (event.event === 'retire') return record.state === 'retired';
    return record.state === 'registered' && record.name === event.name && record.address === (canonicalAddress(event.address) ?? event.address) && record.country === event.country;
  }

  /**
   * The event's commit ran (its state is stored under its stream id) and so did its
   * acknowledgement and outcome, in the same script. Its outcome is read back so the result,
   * the metrics and the Event say what it recorded; the fleet and the Telemetry follow the
   * commit as they would have. Settled again in case (impossible with the script as it is) the
   * acknowledgement is missing: that writes the outcome only if it was never written.
   */
  async #alreadyCommitted(id: string, event: RegisterEvent | RetireEvent, fields: Record<string, string>, record: VpsRecord, log: Logger): Promise<ProcessResult> {
    const recorded = await this.#deps.store.outcomeOf(id);
    const outcome: Outcome = recorded?.outcome ?? (event.event === 'register' ? 'applied' : 'deleted');
    await settleWithoutChange(this.#deps.redis, this.#deps.store.settlement, this.#record(id, fields, outcome, { name: record.name || undefined }));
    this.#deps.commits?.remember(record.vpsId, record.streamId);
    this.#deps.onCommitted?.(record);
    const { namespace, istioApiVersion, events } = this.#deps;
    if (outcome === 'applied') events?.record(entryEvents.applied(entryReference(namespace, record.name, istioApiVersion), id, { vpsId: record.vpsId, address: record.address, country: record.country }));
    if (outcome === 'deleted' && record.name !== '') events?.record(entryEvents.retired(entryReference(namespace, record.name, istioApiVersion), id, record.vpsId));
    log.info({ outcome }, 'event already committed by an earlier attempt whose reply was lost');
    return { outcome, event: event.event, vpsId: event.vps_id, ...(record.name !== '' ? { name: record.name } : {}) };
  }

  /** Acknowledges an event a newer state has superseded, without applying it. */
  async #ignoreStale(id: string, event: RegisterEvent | RetireEvent, fields: Record<string, string>, log: Logger, reason: string, message: string, fence: Fence): Promise<ProcessResult> {
    fence();
    await settleWithoutChange(this.#deps.redis, this.#deps.store.settlement, this.#record(id, fields, 'superseded', { reason }));
    log.info({ reason }, message);
    return { outcome: 'superseded', event: event.event, vpsId: event.vps_id, ...(event.name !== undefined ? { name: event.name } : {}) };
  }

  async #register(id: string, event: RegisterEvent, fields: Record<string, string>, previous: VpsRecord | undefined, log: Logger, fence: Fence): Promise<ProcessResult> {
    const { store, writer } = this.#deps;
    const plan = planRegister(event, id, { policy: this.#deps.policy(), namespace: this.#deps.namespace, istioApiVersion: this.#deps.istioApiVersion });
    if (!plan.ok) return this.#deadLetter(id, fields, plan.rule, plan.reason, log, fence);
    const address = canonicalAddress(event.address) ?? event.address;
    // Two independent reads, sent together (one round trip with auto-pipelining).
    const [addressHolder, nameHolder] = await Promise.all([store.holderOfAddress(address), store.holderOfName(event.name)]);
    if (addressHolder !== undefined && addressHolder !== event.vps_id) {
      await this.#confirmHolderState(addressHolder, `address ${address}`);
      const reason = describeViolation({ rule: 'address.unique', path: 'address', value: event.address, problem: `is registered to VPS ${addressHolder}`, expected: `an address no other VPS holds at this point in the stream (retire VPS ${addressHolder}, or move it to another address, before this event)` });
      return this.#deadLetter(id, fields, 'address.unique', reason, log, fence);
    }
    if (nameHolder !== undefined && nameHolder !== event.vps_id) {
      await this.#confirmHolderState(nameHolder, `name ${event.name}`);
      const reason = describeViolation({ rule: 'name.unique', path: 'name', value: event.name, problem: `is used by VPS ${nameHolder}`, expected: `a name no other VPS holds at this point in the stream (retire or rename VPS ${nameHolder} before this event)` });
      return this.#deadLetter(id, fields, 'name.unique', reason, log, fence);
    }
    let renamedFrom: string | undefined;
    const written = await this.#write('apply', fence, async () => {
      if (previous?.state === 'registered' && previous.name !== event.name) {
        // Renamed: the old entry goes, so one VPS never has two entries.
        const removed = await writer.deleteOwned(previous.name, event.vps_id, id, fence);
        if (removed === 'superseded') return 'superseded' as const;
        if (removed === 'deleted') renamedFrom = previous.name;
      }
      fence();
      return writer.apply(plan.entry);
    });
    if (written === 'superseded' || (written instanceof PermanentError && written.rule === 'ownership.stream-order')) {
      // A newer event already wrote this entry (its commit is pending, or another replica's):
      // this one is superseded, exactly like a stale event.
      const reason = written === 'superseded' ? `entry ${previous?.name ?? ''} was written by a newer event` : written.message;
      return this.#ignoreStale(id, event, fields, log, reason, 'superseded by a newer event already written to the entry; ignored', fence);
    }
    if (written instanceof PermanentError && written.deniedRules.length > 0 && written.deniedRules.every((rule) => rule === 'address.unique')) {
      await this.#confirmAddressTaken(address, event.name, written);
    }
    if (written instanceof PermanentError) {
      const result = await this.#deadLetter(id, fields, refusalRule(written), written.message, log, fence);
      if (result.outcome === 'dead-lettered' && written.deniedRules.length > 0) await this.#tellRefused(event.name, id, written);
      return result;
    }
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
    fence();
    const committed = await store.commit(record, this.#record(id, fields, 'applied'));
    if (committed !== 'stale') {
      this.#deps.commits?.remember(record.vpsId, record.streamId);
      this.#deps.onCommitted?.(record);
      const { namespace, istioApiVersion, events } = this.#deps;
      if (renamedFrom !== undefined) events?.record(entryEvents.renamed(entryReference(namespace, renamedFrom, istioApiVersion), id, event.vps_id, event.name));
      events?.record(entryEvents.applied(entryReference(namespace, event.name, istioApiVersion, written.metadata?.uid), id, { vpsId: event.vps_id, address, country: event.country }));
    }
    log.info({ address, outcome: committed !== 'stale' ? 'applied' : 'superseded' }, 'register applied');
    return { outcome: committed !== 'stale' ? 'applied' : 'superseded', event: 'register', vpsId: event.vps_id, name: event.name };
  }

  async #retire(id: string, event: RetireEvent, fields: Record<string, string>, previous: VpsRecord | undefined, log: Logger, fence: Fence): Promise<ProcessResult> {
    const { store, writer } = this.#deps;
    const name = event.name ?? (previous?.state === 'registered' ? previous.name : undefined);
    let result: 'deleted' | 'absent' | 'not-ours' = 'absent';
    if (name !== undefined) {
      const deleted = await this.#write('delete', fence, () => writer.deleteOwned(name, event.vps_id, id, fence));
      if (deleted instanceof PermanentError && deleted.rule !== 'ownership.stream-order') return this.#deadLetter(id, fields, refusalRule(deleted), deleted.message, log, fence);
      if (deleted === 'superseded' || deleted instanceof PermanentError) {
        return this.#ignoreStale(id, event, fields, log, `entry ${name} was written by a newer event`, 'retire superseded by a newer event already written to the entry; ignored', fence);
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
    fence();
    const settled =
      result === 'deleted'
        ? this.#record(id, fields, 'deleted', { name })
        : this.#record(id, fields, 'unchanged', { name, reason: result === 'not-ours' ? `entry ${name ?? ''} exists but is not managed by edge-registrar for this VPS; left alone` : `no entry of VPS ${event.vps_id} to remove` });
    const committed = await store.commit(tombstone, settled);
    if (committed !== 'stale') {
      this.#deps.commits?.remember(tombstone.vpsId, tombstone.streamId);
      this.#deps.onCommitted?.(tombstone);
      if (result === 'deleted' && name !== undefined) this.#deps.events?.record(entryEvents.retired(entryReference(this.#deps.namespace, name, this.#deps.istioApiVersion), id, event.vps_id));
    }
    if (result === 'not-ours') log.warn('retire: the entry exists but is not managed by edge-registrar for this VPS; left alone');
    const outcome: Outcome = committed === 'stale' ? 'superseded' : result === 'deleted' ? 'deleted' : 'unchanged';
    log.info({ outcome }, 'retire applied');
    return { outcome, event: 'retire', vpsId: event.vps_id, ...(name !== undefined ? { name } : {}) };
  }

  /**
   * The desired state says `holder` holds what a claim asks for. If this process committed a
   * newer state for the holder than the one read back, Redis lost that commit (a failover of
   * its primary) and the event behind it will be delivered again: the claim is left pending
   * and read again after it in stream order (consumer.ts), not dead-lettered for a conflict the
   * stream does not have. Past the memory's patience the lost event is taken to be gone, and
   * the claim is judged on the state as it stands.
   */
  async #confirmHolderState(holder: string, what: string): Promise<void> {
    if (this.#deps.commits === undefined) return;
    const stored = await this.#deps.store.get(holder);
    const lost = this.#deps.commits.lostCommit(holder, stored?.streamId, this.#now().getTime());
    if (lost !== undefined) {
      throw new StateBehindError(`VPS ${holder} holds ${what} in the desired state (stream id ${stored?.streamId ?? 'none'}), but this daemon committed event ${lost} for it, which Redis no longer has (a failover lost the write); will retry once that event is applied again`, lost);
    }
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
   * A Warning Event on the entry the webhook refused to write. The entry may exist (an update
   * refused), and `kubectl describe` finds Events by the object's uid, so it is looked up;
   * a failed lookup only leaves the uid out (`kubectl events --for` still finds it).
   */
  async #tellRefused(name: string, id: string, refusal: PermanentError): Promise<void> {
    const { events, writer, namespace, istioApiVersion } = this.#deps;
    if (events === undefined) return;
    const uid = await writer.get(name).then((entry) => entry?.metadata?.uid, () => undefined);
    events.record(entryEvents.refused(entryReference(namespace, name, istioApiVersion, uid), id, refusal.deniedRules.length > 0 ? refusal.deniedRules : [refusal.rule], refusal.message));
  }

  /**
   * One Kubernetes write of an event, timed for the apply histogram when it succeeds. A
   * permanent refusal is returned (the caller dead-letters the event); anything else is
   * thrown, to be retried.
   */
  async #write<T>(operation: 'apply' | 'delete', fence: Fence, write: () => Promise<T>): Promise<T | PermanentError> {
    const started = process.hrtime.bigint();
    try {
      fence();
      const value = await write();
      this.#deps.onApplied?.(operation, Number(process.hrtime.bigint() - started) / 1e9);
      return value;
    } catch (error) {
      if (error instanceof PermanentError) return error;
      throw error;
    }
  }
}
