/**
 * The stream id of the last state this process committed for each VPS, bounded, newest kept.
 *
 * Redis replicates asynchronously: a failover of its primary (Sentinel or Cluster) can lose a
 * commit the old primary had acknowledged, and the daemon goes on with a desired state that is
 * behind what it applied. A handoff then goes wrong: a retire that freed an address is lost, and
 * the claim behind it finds the address still held and would be dead-lettered, though the retire
 * is about to be delivered again. Comparing the holder's state with what this process committed
 * for it tells a lost commit from a real conflict. Pure, in memory.
 */
import { compareStreamIds } from '../util/stream-id.ts';

export class CommitMemory {
  readonly #latest = new Map<string, string>();
  /** When each lost commit was first reported (key `<vps>@<stream id>`). */
  readonly #lostSince = new Map<string, number>();
  readonly #capacity: number;
  readonly #patienceMs: number;

  /**
   * `patienceMs`: how long a lost commit is waited for. Past it the event is taken to be gone
   * for good (the stream entry itself lost with the primary, say): it is forgotten, and the
   * claim behind it is judged on the state as it stands.
   */
  constructor(options: { capacity?: number; patienceMs?: number } = {}) {
    this.#capacity = options.capacity ?? 50_000;
    this.#patienceMs = options.patienceMs ?? 120_000;
  }

  remember(vpsId: string, streamId: string): void {
    const known = this.#latest.get(vpsId);
    if (known !== undefined && compareStreamIds(known, streamId) >= 0) return;
    // Re-inserted, so the Map's order is the order of the latest commits: the oldest go first.
    this.#latest.delete(vpsId);
    this.#latest.set(vpsId, streamId);
    if (this.#latest.size > this.#capacity) {
      const oldest = this.#latest.keys().next();
      if (oldest.done !== true) this.#latest.delete(oldest.value);
    }
  }

  /**
   * The event this process committed for `vpsId` that the state read back (`storedStreamId`,
   * undefined for none) does not have, if any: the desired state lost it.
   */
  lostCommit(vpsId: string, storedStreamId: string | undefined, now: number): string | undefined {
    const known = this.#latest.get(vpsId);
    if (known === undefined) return undefined;
    if (storedStreamId !== undefined && compareStreamIds(storedStreamId, known) >= 0) return undefined;
    const key = `${vpsId}@${known}`;
    const since = this.#lostSince.get(key) ?? now;
    if (now - since > this.#patienceMs) {
      this.#latest.delete(vpsId);
      this.#lostSince.delete(key);
      return undefined;
    }
    this.#lostSince.set(key, since);
    return known;
  }
}
