/**
 * What orders work in the daemon. Two events must not overlap, and must start in stream
 * order, when they are about the same VPS, or when one may *free* a name or an address that
 * the other *claims*. The second half is the hard one: a retire carries no address, and a
 * move or a rename names only the new values, so an event's own fields do not say what it
 * frees. The VPS's holdings do: what the desired state says it holds, plus whatever its
 * earlier events still in flight may have given it. `HoldingsLedger` keeps that per VPS
 * while it has events in flight, so every event is queued under the names and addresses it
 * may free as well as those it claims. The resync orders its repairs by the same keys.
 */
import { canonicalAddress } from '../policy/address.ts';

export interface Subject {
  vpsId: string;
  name?: string | undefined;
  address?: string | undefined;
}

/** A VPS's name and address as the desired state holds them (registered VPSs only). */
export interface Holding {
  name: string;
  address: string;
}

const addressKey = (address: string): string => `address:${canonicalAddress(address) ?? address}`;

export function orderingKeys(subject: Subject): string[] {
  const keys = [`vps:${subject.vpsId}`];
  if (subject.name !== undefined && subject.name !== '') keys.push(`name:${subject.name}`);
  if (subject.address !== undefined && subject.address !== '') keys.push(addressKey(subject.address));
  return keys;
}

interface Held {
  /** Keys of the names and addresses this VPS holds or may hold once its in-flight events land. */
  keys: Set<string>;
  inFlight: number;
}

/**
 * Per VPS with events in flight: every name and address it may hold. Entries are created
 * from the desired state when a VPS's first in-flight event is dispatched and dropped when
 * its last one settles, so the ledger is as large as the work in flight, not the fleet.
 * It errs on the side of more keys: an event that fails leaves its claim in the set until
 * the VPS is idle again, which at worst serialises a few more events, never fewer.
 */
export class HoldingsLedger {
  readonly #byVps = new Map<string, Held>();

  /** The VPSs among these whose holdings must be read from the desired state first. */
  unknown(vpsIds: Iterable<string>): string[] {
    return [...new Set(vpsIds)].filter((id) => !this.#byVps.has(id));
  }

  /** Seeds a VPS's holdings from the desired state (undefined: it holds nothing). */
  seed(vpsId: string, holding: Holding | undefined): void {
    if (this.#byVps.has(vpsId)) return;
    this.#byVps.set(vpsId, { keys: new Set(holding === undefined ? [] : orderingKeys({ vpsId, ...holding }).slice(1)), inFlight: 0 });
  }

  /**
   * The keys to queue an event under: its VPS, what it claims, and what its VPS may hold
   * before it (which it may free). Called in stream order, once per dispatched event; each
   * call must be matched by one `settle`.
   */
  dispatch(subject: Subject): string[] {
    const own = orderingKeys(subject);
    const held = this.#byVps.get(subject.vpsId) ?? { keys: new Set<string>(), inFlight: 0 };
    this.#byVps.set(subject.vpsId, held);
    const keys = [...new Set([...own, ...held.keys])];
    for (const key of own.slice(1)) held.keys.add(key);
    held.inFlight++;
    return keys;
  }

  /** An event of this VPS is done (applied, dead-lettered, dropped or left pending). */
  settle(vpsId: string): void {
    const held = this.#byVps.get(vpsId);
    if (held === undefined) return;
    held.inFlight--;
    if (held.inFlight <= 0) this.#byVps.delete(vpsId);
  }

  /**
   * Drops VPSs seeded but never given an event (a dispatch that failed after seeding them);
   * VPSs with events in flight are kept.
   */
  forgetIdle(vpsIds: Iterable<string>): void {
    for (const vpsId of vpsIds) if ((this.#byVps.get(vpsId)?.inFlight ?? 1) <= 0) this.#byVps.delete(vpsId);
  }

  /** Forgets everything (a new leadership term starts with nothing in flight). */
  clear(): void {
    this.#byVps.clear();
  }

  get size(): number {
    return this.#byVps.size;
  }
}
