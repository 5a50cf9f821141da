/**
 * Leader election with a coordination.k8s.io Lease, with client-go's leaderelection
 * semantics:
 *
 * - Expiry is judged by *local observation*: a candidate remembers when it last saw the Lease
 *   record change (any write bumps its resourceVersion) and takes the Lease only once
 *   `durationMs` of its own monotonic clock has passed since then. The holder's renewTime is
 *   never compared with the local clock, so clock skew between nodes cannot make two leaders.
 * - The holder counts its term from *before* it sent the renewal (the others can only have
 *   seen the write later), and it stops acting as leader once `renewDeadlineMs` has passed
 *   since its last successful renewal; renewDeadline < duration, so it has stepped down
 *   before any candidate may take over.
 * - Every call has a deadline, so a hung request cannot stop the renewal loop.
 *
 * Every write carries the resourceVersion read, so two candidates never both win one round.
 */
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { leaderToken } from '../policy/markers.ts';
import { DEFAULT_REQUEST_TIMEOUT_MS, makeApiClient } from './client.ts';

/**
 * MicroTime must carry six fractional digits ("2006-01-02T15:04:05.000000Z07:00"); client-node
 * serialises a Date with three, which the API server rejects. A string passes through as is.
 */
export function microTime(value: Date | string | undefined): k8s.V1MicroTime {
  const date = value === undefined ? new Date() : new Date(value);
  return date.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z') as unknown as k8s.V1MicroTime;
}

export interface LeaseOptions {
  kubeConfig: k8s.KubeConfig;
  namespace: string;
  name: string;
  identity: string;
  /** How long a candidate waits after last seeing the Lease change before taking it. */
  durationMs: number;
  /** How long the holder keeps acting as leader without a successful renewal; < durationMs. */
  renewDeadlineMs: number;
  /** Time between attempts to acquire or renew. */
  retryPeriodMs: number;
  logger: Logger;
  onChange?: (leader: boolean) => void;
  /** A monotonic clock in milliseconds; injectable for tests. */
  now?: () => number;
}

/** The options' invariants, as client-go checks them; violated ones are named. */
export function leaseTimingProblems(o: Pick<LeaseOptions, 'durationMs' | 'renewDeadlineMs' | 'retryPeriodMs'>): string[] {
  const problems: string[] = [];
  if (!(o.renewDeadlineMs < o.durationMs)) problems.push(`renew deadline (${o.renewDeadlineMs} ms) must be shorter than the lease duration (${o.durationMs} ms)`);
  if (!(o.retryPeriodMs < o.renewDeadlineMs)) problems.push(`retry period (${o.retryPeriodMs} ms) must be shorter than the renew deadline (${o.renewDeadlineMs} ms)`);
  return problems;
}

export class LeaderElector {
  readonly #options: LeaseOptions;
  readonly #api: k8s.CoordinationV1Api;
  readonly #log: Logger;
  readonly #now: () => number;
  #leader = false;
  /** The Lease's leaseTransitions when this replica last won or renewed it. */
  #transitions = 0;
  /** The Lease object's uid, once seen (Events about the election name it). */
  #leaseUid: string | undefined;
  /** The Lease's acquireTime as last won: a new one for each acquisition, ours or not. */
  #acquireTime: unknown;
  /** Counts the times leadership was gained; see term(). */
  #term = 0;
  /** Local time at which the last successful renewal was *sent*. */
  #renewedAt = Number.NEGATIVE_INFINITY;
  /** The Lease record last seen (its resourceVersion), and the local time it was first seen. */
  #observedVersion: string | undefined;
  #observedAt = Number.NEGATIVE_INFINITY;
  #timer: NodeJS.Timeout | undefined;
  #deadlineTimer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(options: LeaseOptions) {
    const problems = leaseTimingProblems(options);
    if (problems.length > 0) throw new Error(`lease timing: ${problems.join('; ')}`);
    this.#options = options;
    this.#now = options.now ?? (() => performance.now());
    // No call may outlive the renew deadline: a late success could not be trusted anyway.
    this.#api = makeApiClient(options.kubeConfig, k8s.CoordinationV1Api, Math.min(options.renewDeadlineMs, DEFAULT_REQUEST_TIMEOUT_MS));
    this.#log = options.logger.child({ component: 'lease', lease: `${options.namespace}/${options.name}`, identity: options.identity });
  }

  isLeader(): boolean {
    // Trust leadership only until the renew deadline, even if a renewal is in flight.
    return this.#leader && this.#now() - this.#renewedAt < this.#options.renewDeadlineMs;
  }

  /**
   * The current term while leading, undefined otherwise. Each time leadership is gained,
   * including after a lapse that a late renewal ended before anyone looked, the number is
   * new: work started in one term can tell that leadership was lost since, even when it is
   * held again now.
   */
  term(): number | undefined {
    return this.isLeader() ? this.#term : undefined;
  }

  /**
   * The term as anyone reading the Lease sees it, `<identity>@<leaseTransitions>@<acquireTime>`, while
   * leading: the sync daemon stamps it on every entry it writes, and the webhook refuses a
   * write whose token is not the Lease's now (a fencing token for creates, which carry no
   * resourceVersion to conflict on).
   */
  fencingToken(): string | undefined {
    return this.isLeader() ? leaderToken(this.#options.identity, this.#transitions, this.#acquireTime) : undefined;
  }

  /** The Lease as last won: its uid and leaseTransitions (for the Event about a new leader). */
  won(): { uid: string | undefined; transitions: number } {
    return { uid: this.#leaseUid, transitions: this.#transitions };
  }

  #set(leader: boolean): void {
    if (leader === this.#leader) return;
    this.#leader = leader;
    this.#log.info({ leader }, leader ? 'became leader' : 'lost leadership');
    this.#options.onChange?.(leader);
  }

  /**
   * Steps down the moment the renew deadline passes, whatever the renewal loop is doing.
   * A timer can fire before the deadline by our clock: Node starts a timer from the event
   * loop's cached time, which lags performance.now() by however long the current callback has
   * run, and an injected clock may run at its own pace. So a timer that finds the deadline
   * still ahead arms itself again for what is left, rather than leaving the step-down to the
   * next failed renewal.
   */
  #armDeadline(): void {
    if (this.#deadlineTimer) clearTimeout(this.#deadlineTimer);
    const remaining = this.#renewedAt + this.#options.renewDeadlineMs - this.#now();
    this.#deadlineTimer = setTimeout(() => {
      if (this.isLeader()) this.#armDeadline();
      else this.#stepDownIfLapsed();
    }, Math.max(0, remaining) + 1);
    this.#deadlineTimer.unref();
  }

  /** Leadership whose renew deadline has passed ends here, with the reason logged once. */
  #stepDownIfLapsed(): void {
    if (!this.#leader || this.isLeader()) return;
    this.#log.warn({ renewDeadlineMs: this.#options.renewDeadlineMs }, 'renew deadline passed without a successful renewal; stepping down');
    this.#set(false);
  }

  #observe(lease: k8s.V1Lease | undefined): void {
    const version = lease?.metadata?.resourceVersion;
    if (version !== this.#observedVersion) {
      this.#observedVersion = version;
      this.#observedAt = this.#now();
    }
  }

  async #tryAcquireOrRenew(): Promise<void> {
    const { namespace, name, identity, durationMs } = this.#options;
    let lease: k8s.V1Lease | undefined;
    try {
      lease = await this.#api.readNamespacedLease({ name, namespace });
    } catch (error) {
      if (!(error instanceof k8s.ApiException && error.code === 404)) throw error;
    }
    this.#observe(lease);
    const sentAt = this.#now();
    const spec = { holderIdentity: identity, leaseDurationSeconds: Math.ceil(durationMs / 1000), renewTime: microTime(new Date()) };
    if (lease === undefined) {
      const created = await this.#api.createNamespacedLease({
        namespace,
        body: { metadata: { name, namespace }, spec: { ...spec, acquireTime: microTime(new Date()), leaseTransitions: 0 } },
      });
      this.#won(created, sentAt);
      return;
    }
    const holder = lease.spec?.holderIdentity ?? '';
    // The holder's own word for how long its term lasts; ours when it gave none.
    const holderDurationMs = (lease.spec?.leaseDurationSeconds ?? Math.ceil(durationMs / 1000)) * 1000;
    if (holder !== identity && holder !== '' && this.#now() - this.#observedAt < holderDurationMs) {
      this.#set(false);
      return;
    }
    const transitions = (lease.spec?.leaseTransitions ?? 0) + (holder === identity ? 0 : 1);
    // Only a renewal keeps acquireTime. Taking the Lease back after our own term lapsed (the
    // deadline passed, or this process restarted under the same identity) is an acquisition:
    // a new acquireTime, so the writes of the lapsed term carry a token that is no longer the Lease's.
    const renewing = holder === identity && this.isLeader();
    const replaced = await this.#api.replaceNamespacedLease({
      name,
      namespace,
      body: {
        metadata: { ...lease.metadata, name, namespace },
        spec: { ...spec, acquireTime: microTime(renewing ? lease.spec?.acquireTime : new Date()), leaseTransitions: transitions },
      },
    });
    this.#won(replaced, sentAt);
  }

  #won(lease: k8s.V1Lease, sentAt: number): void {
    // Judged before the renewal counts: leadership that lapsed (the deadline passed, even if
    // the step-down timer has not fired yet) and is now regained is a new term.
    const continuing = this.isLeader();
    this.#observe(lease);
    this.#transitions = lease.spec?.leaseTransitions ?? 0;
    this.#leaseUid = lease.metadata?.uid;
    this.#acquireTime = lease.spec?.acquireTime;
    this.#renewedAt = sentAt;
    this.#armDeadline();
    // A renewal that returned after its own deadline does not make us leader again this round.
    if (this.#now() - sentAt < this.#options.renewDeadlineMs) {
      if (!continuing) this.#term++;
      this.#set(true);
    }
  }

  async #tick(): Promise<void> {
    try {
      await this.#tryAcquireOrRenew();
    } catch (error) {
      // A conflict means someone else wrote the Lease first: not ours this round.
      const conflict = error instanceof k8s.ApiException && (error.code === 409 || error.code === 422);
      if (!conflict) this.#log.warn({ err: error }, 'lease read or update failed');
      this.#stepDownIfLapsed();
    }
    if (!this.#stopped) this.#timer = setTimeout(() => void this.#tick(), this.#options.retryPeriodMs);
  }

  start(): void {
    void this.#tick();
  }

  /** Stops renewing and, when leading, releases the Lease so a standby takes over at once. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#deadlineTimer) clearTimeout(this.#deadlineTimer);
    if (!this.#leader) return;
    this.#set(false);
    try {
      const lease = await this.#api.readNamespacedLease({ name: this.#options.name, namespace: this.#options.namespace });
      if (lease.spec?.holderIdentity === this.#options.identity) {
        await this.#api.replaceNamespacedLease({
          name: this.#options.name,
          namespace: this.#options.namespace,
          body: {
            ...lease,
            spec: { ...lease.spec, holderIdentity: '', acquireTime: microTime(lease.spec.acquireTime), renewTime: microTime(new Date(0)) },
          },
        });
      }
    } catch (error) {
      this.#log.warn({ err: error }, 'releasing the lease failed; it expires on its own');
    }
  }
}
