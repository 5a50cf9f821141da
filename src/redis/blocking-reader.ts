/**
 * Blocking XREADGROUP reads on a connection of their own that never outlives a read it could
 * not finish.
 *
 * ioredis re-sends, after a reconnect, every command that was written but not answered
 * (autoResendUnfulfilledCommands), a blocked XREADGROUP included: a read issued in one
 * leadership term would then take deliveries after the term ended, for a consumer that no
 * longer applies them. With re-sending off, ioredis 5 drops such commands without settling
 * their promises (redis/ioredis#2193). So this connection does not reconnect at all: when it
 * closes, ioredis rejects what is in flight ("Connection is closed.") and this reader makes a
 * new connection for the next read. `close()` ends the connection at once (the socket is
 * destroyed locally, whether or not the server answers), which cuts the read in flight.
 *
 * A read that does not return within its block time plus a grace is cut by a watchdog: blocked
 * reads have been seen to hang after reconnects (ioredis #1888, BullMQ #4479).
 *
 * On Redis Cluster the connection goes straight to the node that serves the stream's slot
 * (`locate`), not through ioredis's Cluster client, which re-sends commands after failovers
 * and redirections. While the slot migrates, the source node answers ASK for a stream it has
 * handed over: the read is sent again at once to the node the ASK names, preceded by ASKING,
 * as Redis Cluster clients do, and further reads go there (each with ASKING) until that node
 * owns the slot or redirects back. Nothing was delivered by the ASK reply, so this is no cut.
 * Any other redirection (MOVED after a failover or a completed migration, TRYAGAIN,
 * CLUSTERDOWN) is cut like a closed connection: nothing was delivered, and the next read
 * connects to the slot's new owner.
 */
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import { connectWithin } from './connection.ts';

export type StreamEntry = [id: string, fields: string[] | null];

export type ReadResult =
  | { kind: 'entries'; entries: StreamEntry[] }
  /** Nothing the reader can vouch for: the watchdog fired, or the connection closed under the read. */
  | { kind: 'cut'; reason: string };

export interface BlockingReaderOptions {
  /** The connection's options (address, credentials, TLS, Sentinel); what makes it non-resending is set here. */
  redisOptions: RedisOptions;
  /** Redis Cluster: where the stream's slot is served now, asked before every new connection; 'stale' after a redirection or a failed connect (refresh the slot map first). */
  locate?: (knowledge: 'current' | 'stale') => Promise<{ host: string; port: number }>;
  stream: string;
  group: string;
  consumer: string;
  batchSize: number;
  blockMs: number;
  /** How long past blockMs a read may take before the watchdog cuts it. */
  watchdogGraceMs: number;
  logger: Logger;
}

const CONNECTION_CLOSED = 'Connection is closed.';
/**
 * Replies with which a cluster node says the slot is served elsewhere, or not right now; and
 * Redis 7's UNBLOCKED, with which it ends a blocked read when the stream's key leaves it (a
 * reshard's MIGRATE) or the node is demoted to a replica.
 */
const REDIRECTION = /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN|UNBLOCKED) /;
/** ASK <slot> <host>:<port>: the slot is migrating, and the key is at that node now. */
const ASK = /^ASK \d+ (.+):(\d+)$/;
/** A redirected read waits this long before the next, so a slot in the middle of a move is not asked in a tight loop. */
const REDIRECTED_PAUSE_MS = 100;
/** A connect (TCP, TLS, AUTH, the ready check) that takes longer than this is given up. */
const CONNECT_DEADLINE_MS = 10_000;

export class BlockingReader {
  readonly #options: BlockingReaderOptions;
  #connection: Redis | undefined;
  /** Connections made so far (the first, and one after each cut). */
  #connections = 0;
  /** The last read was redirected: the next connection asks for the slot's owner afresh. */
  #redirected = false;
  /** The slot is migrating and the stream is at this node: reads go there, each after ASKING. */
  #asked: { host: string; port: number } | undefined;

  constructor(options: BlockingReaderOptions) {
    this.#options = options;
  }

  get connections(): number {
    return this.#connections;
  }

  async #connect(): Promise<Redis> {
    if (this.#connection !== undefined) return this.#connection;
    const where = this.#asked ?? (this.#options.locate === undefined ? {} : await this.#options.locate(this.#redirected ? 'stale' : 'current'));
    this.#redirected = false;
    const connection = new Redis({
      ...this.#options.redisOptions,
      ...where,
      lazyConnect: true,
      // No reconnect, no re-send, no offline queue: a closed connection rejects its read, and
      // the next read gets a new connection.
      retryStrategy: () => null,
      autoResendUnfulfilledCommands: false,
      enableOfflineQueue: false,
      maxRetriesPerRequest: null,
      // The socket is destroyed at once on close(), not after the default 2 s of waiting for the peer.
      disconnectTimeout: 1,
    });
    connection.on('error', (error: unknown) => { this.#options.logger.debug({ err: error }, 'blocking connection error'); });
    this.#connection = connection;
    this.#connections++;
    try {
      await connectWithin(connection, CONNECT_DEADLINE_MS, 'the blocking read\'s connection');
    } catch (error) {
      this.#drop(connection);
      // The node may be gone (a failed primary): ask for the slot's owner afresh next time.
      this.#redirected = this.#options.locate !== undefined;
      this.#asked = undefined;
      throw error;
    }
    return connection;
  }

  #drop(connection: Redis): void {
    if (this.#connection === connection) this.#connection = undefined;
    connection.disconnect();
  }

  /** Reads up to batchSize entries from `id` ('0'-style: this consumer's pending ones; '>': new ones). */
  async read(id: string): Promise<ReadResult> {
    const first = await this.#readOnce(id);
    // Followed once: the node an ASK names has the stream, or answers with a redirection of its own.
    return first === 'asked' ? this.#readOnce(id).then((second) => (second === 'asked' ? { kind: 'cut', reason: 'the read was redirected with ASK twice' } : second)) : first;
  }

  async #readOnce(id: string): Promise<ReadResult | 'asked'> {
    const { group, consumer, batchSize, blockMs, stream, watchdogGraceMs } = this.#options;
    const connection = await this.#connect();
    // ASKING holds for the next command only; sent on the same connection, so it precedes the read.
    if (this.#asked !== undefined) void connection.asking().catch(() => undefined);
    const read = connection.xreadgroup('GROUP', group, consumer, 'COUNT', batchSize, 'BLOCK', blockMs, 'STREAMS', stream, id) as Promise<[string, StreamEntry[]][] | null>;
    let timer: NodeJS.Timeout | undefined;
    const watchdog = new Promise<'hung'>((resolve) => (timer = setTimeout(() => { resolve('hung'); }, blockMs + watchdogGraceMs)));
    try {
      const result = await Promise.race([read, watchdog]);
      if (result === 'hung') {
        read.catch(() => undefined);
        this.#drop(connection);
        return { kind: 'cut', reason: `the read did not return within ${blockMs + watchdogGraceMs} ms` };
      }
      return { kind: 'entries', entries: result?.[0]?.[1] ?? [] };
    } catch (error) {
      if ((error instanceof Error && error.message === CONNECTION_CLOSED) || connection.status !== 'ready') {
        this.#drop(connection);
        return { kind: 'cut', reason: 'the connection closed during the read' };
      }
      const asked = error instanceof Error ? ASK.exec(error.message) : null;
      if (asked !== null) {
        this.#drop(connection);
        const target = { host: asked[1] ?? '', port: Number(asked[2]) };
        if (this.#asked?.host !== target.host || this.#asked.port !== target.port) this.#options.logger.info({ node: `${target.host}:${target.port}` }, "the stream's slot is migrating; reading from the node it is moving to (ASK)");
        this.#asked = target;
        return 'asked';
      }
      if (error instanceof Error && REDIRECTION.test(error.message)) {
        this.#drop(connection);
        this.#asked = undefined;
        this.#redirected = true;
        await new Promise((resolve) => setTimeout(resolve, REDIRECTED_PAUSE_MS));
        return { kind: 'cut', reason: `the node redirected the read (${error.message.split(' ')[0] ?? ''}): the stream's slot is served elsewhere` };
      }
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Ends the connection now; a read in flight is cut, and never re-sent. */
  close(): void {
    if (this.#connection !== undefined) this.#drop(this.#connection);
  }
}
