/**
 * Drift repair: compare the desired state in Redis with the managed entries in the cluster.
 * A registered VPS whose entry is missing or was edited is re-applied; a managed entry with
 * no registered VPS behind it (an orphan) is removed once it has been an orphan for the
 * grace period, unless the policy is upsert-only (as external-dns's policies). Dry-run logs
 * what would change. Only entries carrying our marker are ever looked at.
 */
import { isDeepStrictEqual } from 'node:util';
import type { Logger } from 'pino';
import { VPS_ID_ANNOTATION } from '../policy/markers.ts';
import type { Policy } from '../policy/policy-file.ts';
import type { EntryWriter, StoredEntry } from './entry-writer.ts';
import { planRegister, type ManagedEntry } from './planner.ts';
import type { StateStore, VpsRecord } from './state-store.ts';

export interface ResyncOptions {
  store: StateStore;
  writer: EntryWriter;
  policy: () => Policy;
  namespace: string;
  istioApiVersion: string;
  orphanPolicy: 'sync' | 'upsert-only';
  orphanGraceMs: number;
  dryRun: boolean;
  logger: Logger;
  now?: () => number;
}

export interface ResyncReport {
  restored: string[];
  orphansDeleted: string[];
  orphansWaiting: string[];
  unplannable: string[];
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
  readonly #o: ResyncOptions;
  /** When each orphan was first seen; grace is counted from there. */
  readonly #orphanSince = new Map<string, number>();

  constructor(options: ResyncOptions) {
    this.#o = options;
  }

  async run(): Promise<ResyncReport> {
    const { store, writer, logger, dryRun } = this.#o;
    const now = this.#o.now ?? Date.now;
    const report: ResyncReport = { restored: [], orphansDeleted: [], orphansWaiting: [], unplannable: [], registered: [] };
    const [registered, actual] = await Promise.all([store.registered(), writer.listManaged()]);
    report.registered = registered;
    const byName = new Map(actual.map((e) => [e.metadata?.name ?? '', e]));
    const wanted = new Set<string>();

    for (const record of registered) {
      wanted.add(record.name);
      const plan = planRegister(
        { event: 'register', vps_id: record.vpsId, name: record.name, address: record.address, country: record.country, labels: record.labels },
        record.streamId,
        { policy: this.#o.policy(), namespace: this.#o.namespace, istioApiVersion: this.#o.istioApiVersion },
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
      report.restored.push(record.name);
      logger.info({ vpsId: record.vpsId, name: record.name, drift: current === undefined ? 'missing' : 'changed', dryRun }, 'drift: restoring entry');
      if (!dryRun) await writer.apply(plan.entry);
    }

    for (const [name, entry] of byName) {
      if (wanted.has(name)) {
        this.#orphanSince.delete(name);
        continue;
      }
      const since = this.#orphanSince.get(name) ?? now();
      this.#orphanSince.set(name, since);
      const vpsId = entry.metadata?.annotations?.[VPS_ID_ANNOTATION];
      if (this.#o.orphanPolicy === 'upsert-only' || now() - since < this.#o.orphanGraceMs || dryRun) {
        report.orphansWaiting.push(name);
        logger.info({ name, vpsId, orphanForMs: now() - since, policy: this.#o.orphanPolicy, dryRun }, 'orphan managed entry (no registered VPS)');
        continue;
      }
      const result = await writer.deleteOwned(name, vpsId);
      if (result === 'deleted') {
        report.orphansDeleted.push(name);
        this.#orphanSince.delete(name);
        logger.info({ name, vpsId }, 'orphan managed entry removed');
      }
    }
    for (const name of [...this.#orphanSince.keys()]) if (!byName.has(name)) this.#orphanSince.delete(name);
    return report;
  }
}
