/**
 * Leader election with a coordination.k8s.io Lease, as client-go does it: the holder renews
 * every `renewMs`; anyone may take the Lease once `durationMs` has passed since the last
 * renewal. Every write carries the resourceVersion read, so two candidates never both win.
 * A holder that cannot renew before its own deadline steps down first.
 */
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';

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
  durationMs: number;
  renewMs: number;
  logger: Logger;
  onChange?: (leader: boolean) => void;
}

export class LeaderElector {
  readonly #o: LeaseOptions;
  readonly #api: k8s.CoordinationV1Api;
  readonly #log: Logger;
  #leader = false;
  #lastRenew = 0;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(options: LeaseOptions) {
    this.#o = options;
    this.#api = options.kubeConfig.makeApiClient(k8s.CoordinationV1Api);
    this.#log = options.logger.child({ component: 'lease', lease: `${options.namespace}/${options.name}`, identity: options.identity });
  }

  isLeader(): boolean {
    // Trust leadership only until our own renewal deadline, even if a renew is in flight.
    return this.#leader && Date.now() - this.#lastRenew < this.#o.durationMs;
  }

  #set(leader: boolean): void {
    if (leader === this.#leader) return;
    this.#leader = leader;
    this.#log.info({ leader }, leader ? 'became leader' : 'lost leadership');
    this.#o.onChange?.(leader);
  }

  async #tryAcquireOrRenew(): Promise<void> {
    const { namespace, name, identity, durationMs } = this.#o;
    const now = new Date();
    let lease: k8s.V1Lease | undefined;
    try {
      lease = await this.#api.readNamespacedLease({ name, namespace });
    } catch (error) {
      if (!(error instanceof k8s.ApiException && error.code === 404)) throw error;
    }
    const spec = {
      holderIdentity: identity,
      leaseDurationSeconds: Math.ceil(durationMs / 1000),
      renewTime: microTime(now),
    };
    if (lease === undefined) {
      await this.#api.createNamespacedLease({
        namespace,
        body: { metadata: { name, namespace }, spec: { ...spec, acquireTime: microTime(now), leaseTransitions: 0 } },
      });
      this.#lastRenew = Date.now();
      this.#set(true);
      return;
    }
    const holder = lease.spec?.holderIdentity;
    const renewed = lease.spec?.renewTime ? new Date(lease.spec.renewTime).getTime() : 0;
    const duration = (lease.spec?.leaseDurationSeconds ?? Math.ceil(durationMs / 1000)) * 1000;
    const expired = now.getTime() - renewed > duration;
    if (holder !== identity && holder && !expired) {
      this.#set(false);
      return;
    }
    const transitions = (lease.spec?.leaseTransitions ?? 0) + (holder === identity ? 0 : 1);
    await this.#api.replaceNamespacedLease({
      name,
      namespace,
      body: {
        metadata: { ...lease.metadata, name, namespace },
        spec: {
          ...spec,
          acquireTime: microTime(holder === identity ? (lease.spec?.acquireTime) : now),
          leaseTransitions: transitions,
        },
      },
    });
    this.#lastRenew = Date.now();
    this.#set(true);
  }

  async #tick(): Promise<void> {
    try {
      await this.#tryAcquireOrRenew();
    } catch (error) {
      // A conflict means someone else wrote the Lease first: not ours this round.
      const conflict = error instanceof k8s.ApiException && (error.code === 409 || error.code === 422);
      if (!conflict) this.#log.warn({ err: error }, 'lease update failed');
      if (!this.isLeader()) this.#set(false);
    }
    if (!this.#stopped) this.#timer = setTimeout(() => void this.#tick(), this.#o.renewMs);
  }

  start(): void {
    void this.#tick();
  }

  /** Stops renewing and, when leading, releases the Lease so a standby takes over at once. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    if (!this.#leader) return;
    this.#set(false);
    try {
      const lease = await this.#api.readNamespacedLease({ name: this.#o.name, namespace: this.#o.namespace });
      if (lease.spec?.holderIdentity === this.#o.identity) {
        await this.#api.replaceNamespacedLease({
          name: this.#o.name,
          namespace: this.#o.namespace,
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
