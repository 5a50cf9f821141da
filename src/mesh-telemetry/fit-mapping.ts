/**
 * Which VPSs the Telemetry maps when the whole fleet does not fit (the object over etcd's size,
 * or an expression over Envoy's parser limit). Refusing to write at all leaves the last mapping
 * in force, and that one claims what is no longer true: a retired VPS keeps its name, and an
 * address handed to a new VPS is counted as the VPS that retired. A wrong name is worse than
 * none, so the keeper writes the largest mapping that claims nothing stale: a subset of the
 * fleet as it is now. Retirements and address changes are in it by construction (they are the
 * fleet now, and they do not grow it); what is left out is the newest registrations, whose
 * requests are tagged `unregistered` until the fleet fits again. Pure.
 */
import { compareStreamIds } from '../util/stream-id.ts';
import type { MappedVps } from './tag-expressions.ts';

/** A registered VPS as the keeper sees it: what the tags map, and what orders it. */
export interface FleetMember extends MappedVps {
  vpsId?: string;
  /** The stream id of the event that set its state: an older one is an earlier registration. */
  streamId?: string;
}

const identity = (vps: FleetMember): string => vps.vpsId ?? vps.name;

/** Missing stream ids first (an order no one gave): the rest as Redis orders them. */
function byStreamId(a: string | undefined, b: string | undefined): number {
  if (a === b) return 0;
  if (a === undefined) return -1;
  if (b === undefined) return 1;
  return compareStreamIds(a, b);
}

/**
 * The fleet in the order it is kept when it must be cut: the VPSs of the last mapping written
 * first (they keep their attribution, at their address and name now), then the others oldest
 * event first. With no mapping written yet (a new leader), all oldest event first.
 */
export function mappingOrder<T extends FleetMember>(fleet: readonly T[], lastWritten: ReadonlySet<string> | undefined): T[] {
  const indexed = fleet.map((vps, index) => ({ vps, index, kept: lastWritten?.has(identity(vps)) === true }));
  indexed.sort((a, b) => (a.kept !== b.kept ? (a.kept ? -1 : 1) : byStreamId(a.vps.streamId, b.vps.streamId) || a.index - b.index));
  return indexed.map((i) => i.vps);
}

/** The identities of a mapping, to order the next cut by. */
export function mappedIdentities(mapped: readonly FleetMember[]): Set<string> {
  return new Set(mapped.map(identity));
}

/**
 * The largest n such that `fits(ordered.slice(0, n))`, knowing the whole does not fit; 0 when
 * not even one does. `fits` is monotone (a prefix of a mapping that fits is smaller in bytes
 * and in every expression). `guess` (from the size measured against the limit) is tried first,
 * so a fleet a little over its limit takes a few renders; the event loop is given back between
 * renders, each of which can take tens of milliseconds for a fleet of thousands.
 */
export async function largestFittingPrefix<T>(ordered: readonly T[], fits: (prefix: readonly T[]) => boolean, guess: number): Promise<number> {
  let fitting = 0; // known to fit
  let over = ordered.length; // known not to fit
  let probe = Math.min(over - 1, Math.max(1, Math.floor(guess)));
  while (over - fitting > 1) {
    await new Promise((resolve) => setImmediate(resolve));
    if (fits(ordered.slice(0, probe))) fitting = probe;
    else over = probe;
    probe = Math.floor((fitting + over) / 2);
  }
  return fitting;
}
