/**
 * How many request-body bytes the webhook holds at once. Each admission body is buffered
 * whole before it is parsed, for as long as its client takes to send it; without a bound,
 * a few dozen slow clients sending bodies near the size limit exhaust the pod's memory, the
 * pod is OOM-killed, and with failurePolicy Fail every WorkloadEntry write is refused.
 *
 * A request reserves its body's bytes as they arrive, never what it announces: 700 requests
 * announcing 64 KiB each and sending nothing held the whole budget "in flight", and every
 * real review was shed. A request whose bytes do not fit is shed at once, with 429 and
 * Retry-After, which the API server's client honours by retrying the call within its timeout.
 *
 * Real AdmissionReviews of WorkloadEntries are a few KiB. So that large bodies, however many,
 * cannot crowd them out, a request announced (or grown) past the small size may fill the budget
 * only up to what is kept back for small ones; no one peer (remote address) may hold more
 * than its share; and untrusted peers together (anyone but the API server, connection-guard.ts)
 * may not touch what is kept back for trusted ones, so many attacking addresses cannot take
 * what the API server needs.
 */

export interface BodyBudgetOptions {
  /** Bytes of bodies held at once, at most. */
  totalBytes: number;
  /** A request announcing at most this many bytes is small. */
  smallRequestBytes: number;
  /** Bytes only small requests may use. */
  reservedForSmallBytes: number;
  /** Bytes one peer may hold at once (all its requests together); unset: no per-peer cap. */
  perPeerBytes?: number;
  /** Bytes only trusted peers may use; unset: none kept back. */
  reservedForTrustedBytes?: number;
}

/** What is known of a request when it reserves: its peer, and the size it announced (Content-Length). */
export interface ReservationContext {
  peer?: string | undefined;
  announcedBytes?: number | undefined;
  /** The peer is the API server (connection-guard.ts): it may use what is kept back for it. */
  trusted?: boolean | undefined;
}

export interface BodyReservation {
  /** Bytes reserved now. */
  readonly bytes: number;
  /** Grows the reservation to `bytes` (a body sent without Content-Length, as it arrives); false when that does not fit. */
  growTo(bytes: number): boolean;
  release(): void;
}

export class BodyBudget {
  readonly #options: BodyBudgetOptions;
  #inUse = 0;
  /** Bytes held by untrusted peers together. */
  #untrustedInUse = 0;
  /** Bytes held per peer, for those holding any. */
  readonly #byPeer = new Map<string, number>();

  constructor(options: BodyBudgetOptions) {
    if (options.reservedForSmallBytes >= options.totalBytes) throw new Error('the small-request reserve must be less than the whole budget');
    this.#options = options;
  }

  get inUseBytes(): number {
    return this.#inUse;
  }

  get totalBytes(): number {
    return this.#options.totalBytes;
  }

  /** Bytes `peer` holds now. */
  heldBy(peer: string): number {
    return this.#byPeer.get(peer) ?? 0;
  }

  /** Whether `more` bytes fit beside what is in use, for a request of `peer` that would then be `size` (of at least `announced`). */
  #fits(more: number, size: number, context: ReservationContext): boolean {
    const { totalBytes, smallRequestBytes, reservedForSmallBytes, perPeerBytes, reservedForTrustedBytes = 0 } = this.#options;
    const large = Math.max(size, context.announcedBytes ?? 0) > smallRequestBytes;
    const ceiling = large ? totalBytes - reservedForSmallBytes : totalBytes;
    if (this.#inUse + more > ceiling) return false;
    if (context.trusted !== true && this.#untrustedInUse + more > totalBytes - reservedForTrustedBytes) return false;
    return perPeerBytes === undefined || context.peer === undefined || this.heldBy(context.peer) + more <= perPeerBytes;
  }

  #hold(delta: number, context: ReservationContext): void {
    this.#inUse += delta;
    if (context.trusted !== true) this.#untrustedInUse += delta;
    const { peer } = context;
    if (peer === undefined) return;
    const held = this.heldBy(peer) + delta;
    if (held > 0) this.#byPeer.set(peer, held);
    else this.#byPeer.delete(peer);
  }

  /** A reservation of `bytes` now (0: a body yet to arrive, grown as it does), or undefined when the request must be shed. */
  tryReserve(bytes: number, context: ReservationContext = {}): BodyReservation | undefined {
    if (!this.#fits(bytes, bytes, context)) return undefined;
    this.#hold(bytes, context);
    let held = bytes;
    let released = false;
    return {
      get bytes() {
        return held;
      },
      growTo: (size: number) => {
        if (released) return false;
        if (size <= held) return true;
        if (!this.#fits(size - held, size, context)) return false;
        this.#hold(size - held, context);
        held = size;
        return true;
      },
      release: () => {
        if (released) return;
        released = true;
        this.#hold(-held, context);
      },
    };
  }
}

/** An AdmissionReview is small when it is at most this: a WorkloadEntry and its old version are a few KiB. */
export const SMALL_REVIEW_BYTES = 64 * 1024;

/**
 * The budget for a pod with `memoryLimitBytes` (0 when unknown), unless `totalBytes` is
 * given: an eighth of the limit (40 MiB of the chart's 320 Mi), leaving the rest for what the
 * webhook measured under saturating valid load (about 213 MiB resident: heap, code, TLS
 * buffers), its connections (another eighth, connection-guard.ts) and the parse of the body
 * being decoded; 64 MiB where no limit is known (npm run local, a plain process). An eighth of
 * the budget is kept for small requests, a quarter for trusted peers (the API server), and one
 * peer may hold a quarter of it.
 */
export function bodyBudgetFor(memoryLimitBytes: number, totalBytes?: number): BodyBudgetOptions {
  const total = totalBytes ?? (memoryLimitBytes > 0 ? Math.floor(memoryLimitBytes / 8) : 64 * 1024 * 1024);
  // One peer a quarter: at least four clients at their cap before the budget is full, and the
  // largest review (two etcd objects) still fits one peer's share of the chart's 40 MiB.
  return { totalBytes: total, smallRequestBytes: SMALL_REVIEW_BYTES, reservedForSmallBytes: Math.floor(total / 8), perPeerBytes: Math.floor(total / 4), reservedForTrustedBytes: Math.floor(total / 4) };
}
