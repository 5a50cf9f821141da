/**
 * The registered fleet as metrics (edge_registrar_vps_info, managed entries per country),
 * kept in memory: replaced whole from the desired state on every resync or refresh, and
 * updated by every commit in between. A scrape reads memory only; it never costs Redis a
 * read per VPS. The same in-memory fleet feeds the managed Telemetry (`snapshot`, `onChange`).
 */
import type { SyncMetrics } from '../observability/metrics.ts';
import type { VpsRecord } from './state-store.ts';

/** streamId: the event that set the VPS's state, by which the Telemetry orders a fleet it must cut (fit-mapping.ts). */
type Shown = Pick<VpsRecord, 'vpsId' | 'name' | 'address' | 'country' | 'streamId'>;

export class FleetMetrics {
  readonly #metrics: Pick<SyncMetrics, 'vpsInfo' | 'managedEntries'>;
  readonly #byVps = new Map<string, Shown>();
  readonly #onChange: () => void;

  constructor(metrics: Pick<SyncMetrics, 'vpsInfo' | 'managedEntries'>, onChange: () => void = () => undefined) {
    this.#metrics = metrics;
    this.#onChange = onChange;
  }

  /** The registered VPSs now. */
  snapshot(): Shown[] {
    return [...this.#byVps.values()];
  }

  static #labels(r: Shown): { name: string; address: string; country: string; vps_id: string } {
    return { name: r.name, address: r.address, country: r.country, vps_id: r.vpsId };
  }

  replaceAll(registered: readonly VpsRecord[]): void {
    this.#byVps.clear();
    this.#metrics.vpsInfo.reset();
    this.#metrics.managedEntries.reset();
    for (const r of registered) this.#add(r);
    this.#onChange();
  }

  /** A committed state: a registered VPS is shown with its new labels, a retired one is removed. */
  update(record: VpsRecord): void {
    const previous = this.#byVps.get(record.vpsId);
    if (previous !== undefined) {
      this.#metrics.vpsInfo.remove(FleetMetrics.#labels(previous));
      this.#metrics.managedEntries.dec({ country: previous.country });
      this.#byVps.delete(record.vpsId);
    }
    if (record.state === 'registered') this.#add(record);
    this.#onChange();
  }

  #add(r: Shown): void {
    const shown = { vpsId: r.vpsId, name: r.name, address: r.address, country: r.country, streamId: r.streamId };
    this.#byVps.set(r.vpsId, shown);
    this.#metrics.vpsInfo.set(FleetMetrics.#labels(shown), 1);
    this.#metrics.managedEntries.inc({ country: r.country });
  }

  get size(): number {
    return this.#byVps.size;
  }
}
