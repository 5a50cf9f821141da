/**
 * How many request-body bytes the webhook holds at once. Each admission body is buffered
 * whole before it is parsed, for as long as its client takes to send it; without a bound,
 * a few dozen slow clients sending bodies near the size limit exhaust the pod's memory, the
 * pod is OOM-killed, and with failurePolicy Fail every WorkloadEntry write is refused.
 *
 * A request reserves its announced size (Content-Length) before a byte of its body is read,
 * and gives it back when the body is done with; one that announces none (chunked) reserves
 * as its bytes arrive. A request that does not fit is shed at once, with 429 and
 * Retry-After, which the API server's client honours by retrying the call within its
 * timeout.
 *
 * Real AdmissionReviews of WorkloadEntries are a few KiB. So that large bodies, however many,
 * cannot crowd them out, large requests may fill the budget only up to what is kept back for
 * small ones.
 */

export interface BodyBudgetOptions {
  /** Bytes of bodies held at once, at most. */
  totalBytes: number;
  /** A request announcing at most this many bytes is small. */
  smallRequestBytes: number;
  /** Bytes only small requests may use. */
  reservedForSmallBytes: number;
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

  /** Whether `more` bytes fit beside what is in use, for a request that would then hold `size`. */
  #fits(more: number, size: number): boolean {
    const { totalBytes, smallRequestBytes, reservedForSmallBytes } = this.#options;
    const ceiling = size <= smallRequestBytes ? totalBytes : totalBytes - reservedForSmallBytes;
    return this.#inUse + more <= ceiling;
  }

  /** A reservation for `bytes`, or undefined when the request must be shed. */
  tryReserve(bytes: number): BodyReservation | undefined {
    if (!this.#fits(bytes, bytes)) return undefined;
    this.#inUse += bytes;
    let held = bytes;
    let released = false;
    return {
      get bytes() {
        return held;
      },
      growTo: (size: number) => {
        if (released) return false;
        if (size <= held) return true;
        if (!this.#fits(size - held, size)) return false;
        this.#inUse += size - held;
        held = size;
        return true;
      },
      release: () => {
        if (released) return;
        released = true;
        this.#inUse -= held;
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
 * buffers) and the parse of the body being decoded; 64 MiB where no limit is known (npm run
 * local, a plain process). An eighth of the budget is kept for small requests.
 */
export function bodyBudgetFor(memoryLimitBytes: number, totalBytes?: number): BodyBudgetOptions {
  const total = totalBytes ?? (memoryLimitBytes > 0 ? Math.floor(memoryLimitBytes / 8) : 64 * 1024 * 1024);
  return { totalBytes: total, smallRequestBytes: SMALL_REVIEW_BYTES, reservedForSmallBytes: Math.floor(total / 8) };
}
