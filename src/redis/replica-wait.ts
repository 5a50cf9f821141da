/**
 * Waiting for a replica to have what this daemon wrote (WAIT), so that a failover of the
 * primary cannot take a settled event back without the daemon knowing.
 *
 * Redis replicates asynchronously. A commit (the state, the XACK and the outcome, in one
 * script) that the primary ran but had not yet sent to a replica is lost when that replica is
 * promoted: the event is pending again, is applied again, and gets a second outcome. WAIT after
 * the commit does not make the first outcome invisible until replicated (a reader of the primary
 * can see it at once); what it does is keep the daemon from counting the event done, releasing
 * its place in the order, and going on to the next ones while replication is behind. So a
 * failover that loses unreplicated writes loses at most the commits in flight (one per
 * concurrent write, `--concurrency`), not everything committed since replication stalled.
 *
 * WAIT counts the writes of the connection it is sent on: the commands connection, or on a
 * Redis Cluster that client's connection to the primary serving the stream's slot.
 *
 * `auto` waits for one replica when the primary reports any connected (INFO replication,
 * looked at again every half minute), and for none on a primary without replicas.
 */
import type { Cluster, Redis } from 'ioredis';
import { slotOwner } from './cluster-slot.ts';

/** Fewer replicas than asked for had this connection's writes when WAIT gave up. */
export class ReplicationBehindError extends Error {
  override name = 'ReplicationBehindError';
}

export interface ReplicaWaitOptions {
  /** How many replicas must have each commit; `auto`: one where the primary has any. */
  replicas: number | 'auto';
  timeoutMs: number;
  /** Redis Cluster: the key whose slot's primary took the writes. */
  clusterKey?: string;
  /** How long a primary's replica count (for `auto`) is trusted. */
  refreshMs?: number;
  now?: () => number;
  onWait?: (result: 'replicated' | 'behind', seconds: number) => void;
}

export class ReplicaWait {
  readonly #commands: Redis;
  readonly #options: ReplicaWaitOptions;
  readonly #now: () => number;
  #known: { replicas: number; at: number } | undefined;

  constructor(commands: Redis, options: ReplicaWaitOptions) {
    this.#commands = commands;
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /** The connection the writes went through (on a cluster, its connection to the slot's primary). */
  async #connection(): Promise<Redis> {
    if (this.#options.clusterKey === undefined) return this.#commands;
    const owner = await slotOwner(this.#commands, this.#options.clusterKey, 'current');
    const node = (this.#commands as unknown as Cluster).nodes('master').find((n) => n.options.port === owner.port && n.options.host === owner.host);
    if (node === undefined) throw new ReplicationBehindError(`no connection to the primary of the stream's slot (${owner.host}:${owner.port}) to WAIT on`);
    return node;
  }

  /** How many replicas to wait for now. */
  async #wanted(connection: Redis): Promise<number> {
    if (this.#options.replicas !== 'auto') return this.#options.replicas;
    const now = this.#now();
    if (this.#known === undefined || now - this.#known.at > (this.#options.refreshMs ?? 30_000)) {
      const info = await connection.info('replication');
      const connected = Number(/^connected_slaves:(\d+)/m.exec(info)?.[1] ?? '0');
      this.#known = { replicas: connected > 0 ? 1 : 0, at: now };
    }
    return this.#known.replicas;
  }

  /** Returns once enough replicas have every write made so far on the connection; throws ReplicationBehindError when they do not within the timeout. */
  async replicated(): Promise<void> {
    const connection = await this.#connection();
    const wanted = await this.#wanted(connection);
    if (wanted === 0) return;
    const started = this.#now();
    const acknowledged = await connection.wait(wanted, this.#options.timeoutMs);
    const seconds = (this.#now() - started) / 1000;
    if (acknowledged >= wanted) {
      this.#options.onWait?.('replicated', seconds);
      return;
    }
    this.#options.onWait?.('behind', seconds);
    // Looked at again next time: a replica that left is not waited for forever under `auto`.
    this.#known = undefined;
    throw new ReplicationBehindError(`${acknowledged} of ${wanted} replica(s) had the daemon's writes after ${this.#options.timeoutMs} ms (WAIT); the event is held until one has`);
  }
}
