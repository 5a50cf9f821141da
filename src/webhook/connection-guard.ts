/**
 * How many connections the webhook keeps, from whom, and for how long. With failurePolicy Fail
 * the webhook's availability is the availability of every WorkloadEntry write in the namespace,
 * and a connection costs memory whether or not it ever sends a request: a pod on the network
 * that opens thousands and sends nothing took the process past its memory limit (Node bounds
 * neither the number of connections nor, before the first request byte, their time).
 *
 * - In total: at most `maxConnections` (Node's server.maxConnections drops the rest at accept).
 * - Per peer (remote address): at most `perPeer`, unless the peer has sent a real review
 *   (`trusted`: the API server), which may open `perTrustedPeer`; the API server opens a
 *   connection per concurrent call.
 * - A TLS handshake must finish within `handshakeTimeoutMs` (the server's option; Node's default
 *   is 120 s), and a connection must start a request within `firstRequestMs` of it.
 * - Between requests, only a trusted peer's connection is kept alive for the server's
 *   keep-alive (longer than the API server's idle timeout); anyone else's is closed after
 *   `untrustedIdleMs`.
 *
 * - Untrusted peers together hold at most `untrustedTotal`: the rest is the API server's, so
 *   many attacking addresses of 32 connections each cannot leave it no room.
 *
 * Who is trusted: with `trustedNetworks` (the API server's addresses, the same the chart's
 * NetworkPolicy admits), a peer in them, from its first byte, and nobody else. Without them,
 * trust is earned per address by a request that decoded as an AdmissionReview (the caller says
 * so), kept for `trustTtlMs` after the last one, and the set is bounded. Earned trust can be
 * forged by anyone who can reach the port and write an AdmissionReview, which is why the chart
 * passes the addresses it knows.
 */
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import ipaddr from 'ipaddr.js';

export interface ConnectionLimits {
  maxConnections: number;
  perPeer: number;
  perTrustedPeer: number;
  /** Connections all untrusted peers together may hold. */
  untrustedTotal: number;
  handshakeTimeoutMs: number;
  firstRequestMs: number;
  untrustedIdleMs: number;
  trustTtlMs: number;
}

/** The most addresses remembered as trusted (the API servers of a cluster are a handful). */
const MAX_TRUSTED = 256;

/** Why a connection was closed by the guard (a metric label). */
export type ConnectionClosure = 'total' | 'per-peer' | 'untrusted-total' | 'handshake-timeout' | 'no-request' | 'idle-untrusted';

export class ConnectionGuard {
  readonly #limits: ConnectionLimits;
  readonly #now: () => number;
  readonly #onClose: (why: ConnectionClosure) => void;
  /** Open connections per remote address. */
  readonly #perPeer = new Map<string, number>();
  /** Trusted addresses and when their trust lapses. */
  readonly #trusted = new Map<string, number>();
  /** A connection's timer: the first request's deadline, or an untrusted peer's idle one. */
  readonly #timers = new WeakMap<Socket, NodeJS.Timeout>();
  /** The API server's networks; empty: trust is earned by reviews. */
  readonly #trustedNetworks: [ipaddr.IPv4 | ipaddr.IPv6, number][];
  #untrustedOpen = 0;

  constructor(limits: ConnectionLimits, options: { trustedNetworks?: readonly string[]; now?: () => number; onClose?: (why: ConnectionClosure) => void } = {}) {
    this.#limits = limits;
    this.#trustedNetworks = (options.trustedNetworks ?? []).map((cidr) => ipaddr.parseCIDR(cidr));
    this.#now = options.now ?? Date.now;
    this.#onClose = options.onClose ?? (() => undefined);
  }

  get limits(): ConnectionLimits {
    return this.#limits;
  }

  /** Open connections of untrusted peers now. */
  get untrustedOpen(): number {
    return this.#untrustedOpen;
  }

  /** Open connections from `peer` now (for tests and metrics). */
  connectionsFrom(peer: string): number {
    return this.#perPeer.get(peer) ?? 0;
  }

  isTrusted(peer: string | undefined): boolean {
    if (peer === undefined) return false;
    if (this.#trustedNetworks.length > 0) return this.#inTrustedNetworks(peer);
    const until = this.#trusted.get(peer);
    if (until === undefined) return false;
    if (until < this.#now()) {
      this.#trusted.delete(peer);
      return false;
    }
    return true;
  }

  #inTrustedNetworks(peer: string): boolean {
    if (!ipaddr.isValid(peer)) return false;
    // A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d.
    const address = ipaddr.process(peer);
    return this.#trustedNetworks.some(([network, bits]) => network.kind() === address.kind() && address.match(network, bits));
  }

  /** `peer` sent a real AdmissionReview (ignored when the trusted networks are given). */
  trust(peer: string | undefined): void {
    if (peer === undefined || this.#trustedNetworks.length > 0) return;
    this.#trusted.delete(peer);
    this.#trusted.set(peer, this.#now() + this.#limits.trustTtlMs);
    while (this.#trusted.size > MAX_TRUSTED) {
      const oldest = this.#trusted.keys().next();
      if (oldest.done === true) break;
      this.#trusted.delete(oldest.value);
    }
  }

  /** Limits the server's connections (call once, before it listens). */
  attach(server: HttpsServer): void {
    server.maxConnections = this.#limits.maxConnections;
    server.on('drop', () => { this.#onClose('total'); });
    // The raw TCP connection, before TLS: counted per peer, refused past the peer's limit.
    server.on('connection', (socket: Socket) => {
      const peer = socket.remoteAddress ?? '';
      const open = (this.#perPeer.get(peer) ?? 0) + 1;
      const trusted = this.isTrusted(peer);
      if (open > (trusted ? this.#limits.perTrustedPeer : this.#limits.perPeer)) {
        this.#onClose('per-peer');
        socket.destroy();
        return;
      }
      if (!trusted && this.#untrustedOpen >= this.#limits.untrustedTotal) {
        this.#onClose('untrusted-total');
        socket.destroy();
        return;
      }
      this.#perPeer.set(peer, open);
      if (!trusted) this.#untrustedOpen += 1;
      socket.once('close', () => {
        const left = (this.#perPeer.get(peer) ?? 1) - 1;
        if (left <= 0) this.#perPeer.delete(peer);
        else this.#perPeer.set(peer, left);
        if (!trusted) this.#untrustedOpen -= 1;
      });
    });
    // The server closes a handshake that does not finish in time (its handshakeTimeout option): counted here.
    server.on('tlsClientError', (error: Error & { code?: string }) => {
      if (error.code === 'ERR_TLS_HANDSHAKE_TIMEOUT') this.#onClose('handshake-timeout');
    });
    // A finished handshake must be followed by a request.
    server.on('secureConnection', (socket: Socket) => {
      this.#arm(socket, this.#limits.firstRequestMs, 'no-request');
      socket.once('close', () => { this.#disarm(socket); });
    });
  }

  /** The application, with each request clearing its connection's timer and each response starting the next. */
  wrap(app: RequestListener): RequestListener {
    return (req: IncomingMessage, res: ServerResponse) => {
      const socket = req.socket;
      this.#disarm(socket);
      res.once('finish', () => {
        // A trusted peer's idle connection is the server's to keep alive; anyone else's is not kept.
        if (!this.isTrusted(socket.remoteAddress) && !socket.destroyed) this.#arm(socket, this.#limits.untrustedIdleMs, 'idle-untrusted');
      });
      app(req, res);
    };
  }

  #arm(socket: Socket, ms: number, why: ConnectionClosure): void {
    this.#disarm(socket);
    const timer = setTimeout(() => {
      this.#onClose(why);
      socket.destroy();
    }, ms);
    timer.unref();
    this.#timers.set(socket, timer);
  }

  #disarm(socket: Socket): void {
    const timer = this.#timers.get(socket);
    if (timer !== undefined) clearTimeout(timer);
    this.#timers.delete(socket);
  }
}

/**
 * What one open connection costs the process, measured (docs/benchmarks.md, npm run
 * bench:webhook-connections): 18 KiB before a handshake, 56-59 KiB with a TLS session, 75 KiB
 * after a request has been answered on it (TLS and HTTP buffers); rounded up from the largest.
 */
export const CONNECTION_COST_BYTES = 80 * 1024;

/**
 * The limits for a pod with `memoryLimitBytes` (0 when unknown): connections may take an eighth
 * of the limit (as request bodies may take another eighth), at CONNECTION_COST_BYTES each, at
 * least 256 and at most 4,096; an untrusted peer 32 of them and untrusted peers together three
 * quarters, a trusted one half.
 */
export function connectionLimitsFor(memoryLimitBytes: number, given?: number): ConnectionLimits {
  const byMemory = memoryLimitBytes > 0 ? Math.floor(memoryLimitBytes / 8 / CONNECTION_COST_BYTES) : 1024;
  const maxConnections = given ?? Math.min(4096, Math.max(256, byMemory));
  return {
    maxConnections,
    perPeer: 32,
    perTrustedPeer: Math.floor(maxConnections / 2),
    untrustedTotal: Math.floor((maxConnections * 3) / 4),
    handshakeTimeoutMs: 5_000,
    firstRequestMs: 10_000,
    untrustedIdleMs: 5_000,
    trustTtlMs: 10 * 60_000,
  };
}
