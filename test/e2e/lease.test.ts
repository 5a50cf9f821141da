/**
 * Leader election against the real API server, with client-go's semantics: expiry judged by
 * the local time the Lease was last seen to change (never the holder's clock), the holder
 * stepping down at its renew deadline, and every call with a deadline, so an API server that
 * hangs cannot keep a leader leading or stop the renewal loop.
 */
import { Writable } from 'node:stream';
import * as k8s from '@kubernetes/client-node';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadKubeConfig, makeApiClient } from '../../src/kube/client.ts';
import { LeaderElector, microTime } from '../../src/kube/lease.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { leaderToken } from '../../src/policy/markers.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import { kubeconfigThroughProxy, type TcpProxy } from '../harness/tcp-proxy.ts';
import { NAMESPACE, ensureBase, kubectl, waitFor } from './support.ts';

const LEASE = 'lease-test';
const TIMING = { durationMs: 2_000, renewDeadlineMs: 1_500, retryPeriodMs: 300 };

interface Recorded {
  elector: LeaderElector;
  /** [leader, performance.now()] for every change. */
  changes: [boolean, number][];
  /** Warnings the elector logged (failed calls, stepping down). */
  warnings: string[];
  /** performance.now() at which each warning was logged, in the same order. */
  warnedAt: number[];
}

let electors: LeaderElector[] = [];
let proxy: TcpProxy | undefined;

function elect(identity: string, kubeconfig: string, now?: () => number): Recorded {
  const warnings: string[] = [];
  const warnedAt: number[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      const line = JSON.parse(chunk.toString()) as { level: string; msg: string };
      if (line.level === 'warn') {
        warnings.push(line.msg);
        warnedAt.push(performance.now());
      }
      done();
    },
  });
  const changes: [boolean, number][] = [];
  const elector = new LeaderElector({
    kubeConfig: loadKubeConfig(kubeconfig),
    namespace: NAMESPACE,
    name: LEASE,
    identity,
    ...TIMING,
    logger: createLogger('warn', `lease-${identity}`, sink),
    onChange: (leader) => changes.push([leader, performance.now()]),
    ...(now ? { now } : {}),
  });
  electors.push(elector);
  elector.start();
  return { elector, changes, warnings, warnedAt };
}

/** The sync user's kubeconfig, pointed at a proxy in front of the API server. */
async function proxiedKubeconfig(): Promise<string> {
  const through = await kubeconfigThroughProxy(kubeconfigFor(inject('cluster'), 'sync'));
  proxy = through.proxy;
  return through.kubeconfig;
}

beforeAll(async () => {
  await ensureBase();
});

afterEach(async () => {
  proxy?.thaw();
  await Promise.all(electors.map((e) => e.stop()));
  electors = [];
  await proxy?.stop();
  proxy = undefined;
  await kubectl('admin', ['-n', NAMESPACE, 'delete', 'lease', LEASE, '--ignore-not-found']);
});

afterAll(async () => {
  await kubectl('admin', ['-n', NAMESPACE, 'delete', 'lease', LEASE, '--ignore-not-found']);
});

describe('leader election', () => {
  it("a holder whose clock is an hour behind keeps the Lease while it renews: expiry is judged by when the Lease was last seen to change, not by the holder's renewTime", async () => {
    const api = makeApiClient(loadKubeConfig(kubeconfigFor(inject('cluster'), 'sync')), k8s.CoordinationV1Api);
    const skewed = (): k8s.V1MicroTime => microTime(new Date(Date.now() - 3_600_000));
    await api.createNamespacedLease({
      namespace: NAMESPACE,
      body: { metadata: { name: LEASE, namespace: NAMESPACE }, spec: { holderIdentity: 'skewed-node', leaseDurationSeconds: 2, renewTime: skewed(), acquireTime: skewed() } },
    });
    const candidate = elect('candidate', kubeconfigFor(inject('cluster'), 'sync'));
    // The skewed holder renews every 300 ms for 4 s (twice the lease duration), then dies.
    for (let i = 0; i < 13; i++) {
      const lease = await api.readNamespacedLease({ name: LEASE, namespace: NAMESPACE });
      await api.replaceNamespacedLease({ name: LEASE, namespace: NAMESPACE, body: { ...lease, spec: { ...lease.spec, renewTime: skewed(), acquireTime: microTime(lease.spec?.acquireTime) } } });
      await new Promise((r) => setTimeout(r, 300));
    }
    const died = performance.now();
    await waitFor(() => Promise.resolve(candidate.elector.isLeader()), 'the candidate to take the Lease once the holder stops renewing', 10_000);
    const [first] = candidate.changes;
    expect(first?.[0]).toBe(true);
    // Never while the holder renewed (the old elector took it at once: renewTime looked an hour
    // old), and only after a good part of a lease duration of silence.
    expect((first?.[1] ?? 0) - died).toBeGreaterThan(TIMING.durationMs / 2);
  });

  it('a leader cut off from a hanging API server steps down at its renew deadline, before anyone else takes over, and keeps trying', async () => {
    const cutOff = elect('cut-off', await proxiedKubeconfig());
    await waitFor(() => Promise.resolve(cutOff.elector.isLeader()), 'the first replica to lead');
    const standby = elect('standby', kubeconfigFor(inject('cluster'), 'sync'));

    const frozenAt = performance.now();
    proxy?.freeze();
    await waitFor(() => Promise.resolve(standby.elector.isLeader()), 'the standby to take over', 15_000);
    const stepped = cutOff.changes.find(([leader]) => !leader)?.[1];
    const took = standby.changes.find(([leader]) => leader)?.[1];
    expect(stepped).toBeDefined();
    // Stepped down by its renew deadline after its last renewal (with room for a loaded machine)...
    expect((stepped ?? Infinity) - frozenAt).toBeLessThan(TIMING.renewDeadlineMs + 1_000);
    // ...and before the other replica became leader: never two leaders.
    expect(stepped ?? Infinity).toBeLessThan(took ?? 0);
    // Its calls time out and its loop goes on trying while the API server hangs.
    await waitFor(() => Promise.resolve(cutOff.warnings.filter((m) => m === 'lease read or update failed').length >= 2), 'failed attempts to be logged', 10_000);
    expect(cutOff.warnings).toContain('renew deadline passed without a successful renewal; stepping down');
  });

  it("a leader whose deadline timer fires before the deadline by the elector's clock arms it again and steps down at the deadline, not at the next failed call", async () => {
    // A clock at half speed makes every deadline timer fire early by that clock, as Node's
    // timers do by a few milliseconds when they are started from a stale event-loop time
    // (the CI failure this test comes from). The renew deadline then falls, in real time,
    // 3 s after the last renewal; the frozen calls fail at about 1.8 s and 3.6 s.
    const start = performance.now();
    const halfSpeed = (): number => start + (performance.now() - start) / 2;
    const slow = elect('slow-clock', await proxiedKubeconfig(), halfSpeed);
    await waitFor(() => Promise.resolve(slow.elector.isLeader()), 'the replica to lead');
    proxy?.freeze();
    await waitFor(() => Promise.resolve(slow.changes.some(([leader]) => !leader)), 'the replica to step down', 15_000);
    await waitFor(() => Promise.resolve(slow.warnings.filter((m) => m === 'lease read or update failed').length >= 2), 'two failed calls', 15_000);
    const stepped = slow.changes.find(([leader]) => !leader)?.[1] ?? Infinity;
    const secondFailure = slow.warnedAt.filter((_, i) => slow.warnings[i] === 'lease read or update failed')[1] ?? 0;
    expect(slow.warnings).toContain('renew deadline passed without a successful renewal; stepping down');
    expect(stepped).toBeLessThan(secondFailure);
  });

  it('a leader whose renew deadline passes while the API server hangs, and who then renews its own Lease, leads in a new term', async () => {
    const paused = elect('paused', await proxiedKubeconfig());
    await waitFor(() => Promise.resolve(paused.elector.term() !== undefined), 'the replica to lead');
    const first = paused.elector.term();
    const firstToken = paused.elector.fencingToken();
    const leaseNow = async (): Promise<{ spec: { holderIdentity: string; leaseTransitions: number; acquireTime: string } }> => JSON.parse((await kubectl('admin', ['-n', NAMESPACE, 'get', 'lease', LEASE, '-o', 'json'])).stdout);
    const before = await leaseNow();
    proxy?.freeze();
    await waitFor(() => Promise.resolve(paused.elector.term() === undefined), 'the renew deadline to pass', 10_000);
    proxy?.thaw();
    await waitFor(() => Promise.resolve(paused.elector.term() !== undefined), 'the replica to renew its own Lease', 15_000);
    // The same Lease, the same holder, but work started before the lapse can tell.
    expect(paused.elector.term()).toBeGreaterThan(first ?? Infinity);
    // And so can the webhook: taking the Lease back is an acquisition, with an acquireTime of its
    // own (leaseTransitions stays: the holder did not change), so the lapsed term's token is not
    // the Lease's now, and the new one is exactly what the webhook reads from the Lease.
    const after = await leaseNow();
    expect(after.spec.leaseTransitions).toBe(before.spec.leaseTransitions);
    expect(after.spec.acquireTime).not.toBe(before.spec.acquireTime);
    expect(paused.elector.fencingToken()).not.toBe(firstToken);
    expect(firstToken).toBe(leaderToken(before.spec.holderIdentity, before.spec.leaseTransitions, before.spec.acquireTime));
    expect(paused.elector.fencingToken()).toBe(leaderToken(after.spec.holderIdentity, after.spec.leaseTransitions, after.spec.acquireTime));
  });
});
