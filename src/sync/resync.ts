/**
 * Drift repair: compare the desired state in Redis with the managed entries in the cluster.
 * A registered VPS whose entry is missing or was edited is re-applied; a managed entry with
 * no registered VPS behind it (an orphan) is removed once it has been an orphan for the
 * grace period, unless the policy is upsert-only (as external-dns's policies). Dry-run logs
 * what would change. Only entries carrying our marker are ever looked at.
 *
 * The comparison works on a snapshot while events keep flowing, so no write is made from the
 * snapshot alone: each repair is queued behind any event about the same VPS, name or address
 * (the consumer's queue) and re-checks the desired state first. A repair that finds the VPS
 * changed by an event since the snapshot is dropped; the event's state is newer, and the
 * next resync compares against it.
 */
import { isDeepStrictEqual } from 'node:util';
import type { Logger } from 'pino';
import { STREAM_ID_ANNOTATION, VPS_ID_ANNOTATION } from '../policy/markers.ts';
import { compareStreamIds, isStreamId } from '../util/stream-id.ts';
import type { Policy } from '../policy/policy-file.ts';
import type { KeyedQueue } from '../util/keyed-queue.ts';
import { PermanentError, type EntryWriter, type StoredEntry } from './entry-writer.ts';
import { orderingKeys } from './ordering.ts';
import { planRegister, type ManagedEntry } from './planner.ts';
import type { ObjectReference } from '../kube/event-correlator.ts';
import { entryEvents, entryReference, type EventSink } from './entry-events.ts';
import { NO_FENCE, type Fence } from './term.ts';
import type { AttemptLog } from './attempt-log.ts';
import type { CorruptRecordError, StateStore, VpsRecord } from './state-store.ts';

export interface ResyncOptions {
  store: StateStore;
  writer: EntryWriter;
  /** The consumer's queue: a repair waits for in-flight events about the same VPS. */
  queue: KeyedQueue;
  policy: () => Policy;
  namespace: string;
  istioApiVersion: string;
  orphanPolicy: 'sync' | 'upsert-only';
  orphanGraceMs: number;
  dryRun: boolean;
  logger: Logger;
  /** Kubernetes Events about the repairs (entry-events.ts); none when unset. */
  events?: EventSink;
  /** The attempt log, whose fields of events acknowledged outside the daemon each pass removes. */
  attempts?: AttemptLog;
  now?: () => number;
}

export interface ResyncReport {
  restored: string[];
  orphansDeleted: string[];
  orphansWaiting: string[];
  /** Orphans removed at once: their VPS's tombstone is newer than the event that wrote them. */
  tombstoned: string[];
  unplannable: string[];
  /** Drift seen in the snapshot that an event overtook before the repair could run. */
  overtaken: string[];
  /** Repairs the cluster refused (e.g. the webhook denied them); the rest of the resync went on. */
  refused: string[];
  /** VPSs whose state record cannot be read; left out of this resync (their entries untouched). */
  corrupt: string[];
  /** Address and name index entries and registered-set members that disagreed with the records, now repaired. */
  indexesRepaired: number;
  /** Attempt-log fields of events acknowledged outside the daemon, removed. */
  attemptsSwept: number;
  registered: VpsRecord[];
}

/** The parts of an entry the daemon owns; anything else (status, other managers' fields) is not drift. */
function owned(entry: StoredEntry, desired: ManagedEntry): unknown {
  const labels = entry.metadata?.labels ?? {};
  const annotations = entry.metadata?.annotations ?? {};
  return {
    labels: Object.fromEntries(Object.keys(desired.metadata.labels).map((k) => [k, labels[k]])),
    vpsId: annotations[VPS_ID_ANNOTATION],
    spec: entry.spec,
  };
}

export class Resyncer {
  readonly #options: ResyncOptions;
  /** When each orphan was first seen; grace is counted from there. */
  readonly #orphanSince = new Map<string, number>();

  constructor(options: ResyncOptions) {
    this.#options = options;
  }

  /**
   * One repair. A refusal (the webhook denying it, say) is about that entry alone: it is
   * reported and the resync goes on. Anything else (the API server gone) ends this resync,
   * to be tried again whole.
   */
  async #refusable<T>(name: string, report: ResyncReport, repair: () => Promise<T>, onRefused?: (refusal: PermanentError) => void): Promise<T | 'refused'> {
    try {
      return await repair();
    } catch (error) {
      if (!(error instanceof PermanentError)) throw error;
      report.refused.push(name);
      this.#options.logger.warn({ name, rule: error.rule, reason: error.message }, 'drift repair refused by the cluster; entry left as is');
      onRefused?.(error);
      return 'refused';
    }
  }

  #entry(name: string, uid?: string): ObjectReference {
    return entryReference(this.#options.namespace, name, this.#options.istioApiVersion, uid);
  }

  /** The stream id of the VPS's retire, when it is newer than the event that wrote the entry. */
  async #newerTombstone(vpsId: string | undefined, entry: StoredEntry): Promise<string | undefined> {
    const written = entry.metadata?.annotations?.[STREAM_ID_ANNOTATION];
    if (vpsId === undefined || written === undefined || !isStreamId(written)) return undefined;
    const record = await this.#options.store.get(vpsId);
    return record?.state === 'retired' && compareStreamIds(record.streamId, written) > 0 ? record.streamId : undefined;
  }

  /**
   * One pass. `fence` throws TermEndedError once the leadership term the pass runs in is over
   * (or the daemon is stopping): it is checked before every repair, so no repair of an ended
   * term is written, and the pass ends there.
   */
  async run(fence: Fence = NO_FENCE): Promise<ResyncReport> {
    const { store, writer, logger, dryRun, events } = this.#options;
    const now = this.#options.now ?? Date.now;
    const report: ResyncReport = { restored: [], orphansDeleted: [], orphansWaiting: [], tombstoned: [], unplannable: [], overtaken: [], refused: [], corrupt: [], indexesRepaired: 0, attemptsSwept: 0, registered: [] };
    // The indexes the consumer judges claims by must say what the records say, whatever made
    // them disagree; repaired before the fleet is read, so this pass compares against them.
    fence();
    const indexes = await store.repairIndexes({ dryRun });
    report.indexesRepaired = indexes.repaired;
    if (indexes.repaired > 0) logger.warn({ repaired: indexes.repaired, dryRun }, 'the address and name indexes disagreed with the state records; repaired from the records');
    if (indexes.conflicts.length > 0) logger.error({ conflicts: indexes.conflicts.slice(0, 20) }, 'two registered VPSs hold the same address or name in the desired state; left as they are');
    if (this.#options.attempts !== undefined && !dryRun) report.attemptsSwept = await this.#options.attempts.sweep(store.keys.stream, store.settlement.group);
    const onCorrupt = (error: CorruptRecordError): void => {
      report.corrupt.push(error.vpsId);
      logger.error({ vpsId: error.vpsId, err: error }, 'state record unreadable; VPS left out of this resync');
    };
    const [registered, actual] = await Promise.all([store.registered(onCorrupt), writer.listManaged()]);
    report.registered = registered;
    const byName = new Map(actual.map((e) => [e.metadata?.name ?? '', e]));
    const wanted = new Set<string>();

    for (const record of registered) {
      fence();
      wanted.add(record.name);
      const plan = planRegister(
        { event: 'register', vps_id: record.vpsId, name: record.name, address: record.address, country: record.country, labels: record.labels },
        record.streamId,
        { policy: this.#options.policy(), namespace: this.#options.namespace, istioApiVersion: this.#options.istioApiVersion },
      );
      if (!plan.ok) {
        // The policy changed since this VPS registered; leave the entry and say so.
        report.unplannable.push(record.name);
        logger.warn({ vpsId: record.vpsId, name: record.name, rule: plan.rule, reason: plan.reason }, 'registered VPS no longer passes the policy; entry left as is');
        continue;
      }
      const current = byName.get(record.name);
      const desired = { ...plan.entry, spec: plan.entry.spec as unknown as Record<string, unknown> };
      if (current !== undefined && isDeepStrictEqual(owned(current, plan.entry), { labels: plan.entry.metadata.labels, vpsId: record.vpsId, spec: desired.spec })) continue;
      const drift = current === undefined ? 'missing' : 'changed';
      if (dryRun) {
        report.restored.push(record.name);
        logger.info({ vpsId: record.vpsId, name: record.name, drift, dryRun }, 'drift: would restore entry');
        continue;
      }
      const restored = await this.#refusable(
        record.name,
        report,
        () =>
          this.#options.queue.run(orderingKeys(record), async () => {
            const latest = await store.get(record.vpsId);
            if (latest?.state !== 'registered' || latest.streamId !== record.streamId) return false;
            fence();
            return writer.apply(plan.entry);
          }),
        (refusal) => events?.record(entryEvents.repairRefused(this.#entry(record.name, current?.metadata?.uid), record.streamId, refusal.rule, refusal.message)),
      );
      if (restored === 'refused') continue;
      if (restored !== false) {
        report.restored.push(record.name);
        logger.info({ vpsId: record.vpsId, name: record.name, drift }, 'drift: entry restored');
        events?.record(entryEvents.driftRepaired(this.#entry(record.name, restored.metadata?.uid), record.streamId, drift));
      } else {
        report.overtaken.push(record.name);
        logger.debug({ vpsId: record.vpsId, name: record.name }, 'drift overtaken by a newer event; left to it');
      }
    }

    const unreadable = new Set(report.corrupt);
    for (const [name, entry] of byName) {
      fence();
      // Wanted, or belonging to a VPS whose record cannot be read (not known to be an orphan).
      if (wanted.has(name) || unreadable.has(entry.metadata?.annotations?.[VPS_ID_ANNOTATION] ?? '')) {
        this.#orphanSince.delete(name);
        continue;
      }
      const since = this.#orphanSince.get(name) ?? now();
      this.#orphanSince.set(name, since);
      const vpsId = entry.metadata?.annotations?.[VPS_ID_ANNOTATION];
      // A deposed leader's late create after the retire: no grace, the tombstone says it is over.
      const tombstone = await this.#newerTombstone(vpsId, entry);
      // A stray that a tombstone says is gone (written after its VPS's retire, by a deposed
      // leader) goes under every policy, upsert-only too: it routes to an address that may now
      // be someone else's. Other orphans wait out the grace, and stay under upsert-only.
      const removable = tombstone !== undefined || (this.#options.orphanPolicy === 'sync' && now() - since >= this.#options.orphanGraceMs);
      if (!removable || dryRun) {
        report.orphansWaiting.push(name);
        logger.info({ name, vpsId, orphanForMs: now() - since, retiredBy: tombstone, policy: this.#options.orphanPolicy, dryRun }, 'orphan managed entry (no registered VPS)');
        continue;
      }
      // Re-checked behind the events for this name: a register may have claimed it meanwhile.
      const result = await this.#refusable(name, report, () =>
        this.#options.queue.run(orderingKeys({ vpsId: vpsId ?? `orphan:${name}`, name }), async () =>
          (await store.holderOfName(name)) === undefined ? writer.deleteOwned(name, vpsId, tombstone, fence) : ('claimed' as const),
        ),
      );
      if (result === 'claimed' || result === 'superseded') {
        report.overtaken.push(name);
        this.#orphanSince.delete(name);
      } else if (result === 'deleted') {
        (tombstone === undefined ? report.orphansDeleted : report.tombstoned).push(name);
        this.#orphanSince.delete(name);
        logger.info({ name, vpsId, retiredBy: tombstone }, 'orphan managed entry removed');
        const entryRef = this.#entry(name, entry.metadata?.uid);
        events?.record(tombstone === undefined ? entryEvents.orphanRemoved(entryRef, now() - since) : entryEvents.tombstonedRemoved(entryRef, tombstone));
      }
    }
    for (const name of [...this.#orphanSince.keys()]) if (!byName.has(name)) this.#orphanSince.delete(name);
    return report;
  }
}
