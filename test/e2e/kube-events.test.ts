/**
 * Kubernetes Events, as a kubectl user finds them, against the real stack (the API server with
 * Istio's CRDs and RBAC, the registered webhook, redis-server, the sync daemon under its own
 * identity, which may only create and patch Events): an entry applied, repaired, refused and
 * removed each tells why with the stream id behind it, `kubectl describe` shows it, the Lease
 * tells who leads, and a flood is bounded.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { daemonKeys } from '../../src/redis/keys.ts';
import type { RunningSync } from '../../src/sync/run.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import { publishRegister, publishRetire, settled, startSyncTestBed, startTestSync, stopSyncTestBed, STREAM, testSyncConfig, type SyncTestBed } from './sync-support.ts';
import { NAMESPACE, applyUnmanagedEntry, deleteAllEntries, mustKubectl, waitFor } from './support.ts';

const KEYS = daemonKeys(STREAM, NAMESPACE);
let bed: SyncTestBed;
let running: RunningSync[] = [];

interface KubeEvent {
  metadata: { name: string };
  reason: string;
  action: string;
  type: string;
  note: string;
  reportingController: string;
  reportingInstance: string;
  regarding: { kind: string; name: string; uid?: string };
  series?: { count: number };
}

beforeAll(async () => {
  bed = await startSyncTestBed('kube-events');
});

afterAll(async () => {
  await stopSyncTestBed(bed);
});

beforeEach(async () => {
  await bed.redis.flushall();
  await deleteAllEntries();
  // One DELETE of the collection: `kubectl delete --all` deletes one Event per call, and the
  // files before this one leave thousands (each daemon they start writes up to its burst).
  await mustKubectl('admin', ['delete', '--raw', `/apis/events.k8s.io/v1/namespaces/${NAMESPACE}/events`]);
});

afterEach(async () => {
  await Promise.all(running.map((s) => s.stop()));
  running = [];
});

async function startSync(overrides: Parameters<typeof testSyncConfig>[2] = {}): Promise<RunningSync> {
  const sync = await startTestSync(testSyncConfig(kubeconfigFor(inject('cluster'), 'sync'), bed.redisServer.url, { kubeEvents: { enabled: true, burst: 100, perMinute: 60, objectBurst: 25, objectRefillSeconds: 300, tickMs: 200 }, ...overrides }));
  running.push(sync);
  return sync;
}

/** Every Event the daemon wrote in the namespace (read as an admin: the daemon itself may not). */
async function events(): Promise<KubeEvent[]> {
  const list = JSON.parse(await mustKubectl('admin', ['-n', NAMESPACE, 'get', 'events.events.k8s.io', '-o', 'json'])) as { items: KubeEvent[] };
  return list.items.filter((e) => e.reportingController === 'edge-registrar.io/sync');
}

async function eventAbout(name: string, reason: string): Promise<KubeEvent> {
  let found: KubeEvent | undefined;
  await waitFor(async () => (found = (await events()).find((e) => e.regarding.name === name && e.reason === reason)) !== undefined, `a ${reason} Event about ${name}`).catch(async (error: unknown) => {
    throw new Error(`${String(error)}; Events: ${JSON.stringify((await events()).map((e) => [e.regarding.name, e.reason, e.note]))}`);
  });
  return found!;
}

async function uidOf(name: string): Promise<string> {
  return (await mustKubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentry', name, '-o', 'jsonpath={.metadata.uid}'])).trim();
}

describe('Kubernetes Events on managed WorkloadEntries', () => {
  // Described as an admin: a kubectl user needs to list events to see them (the view role has it; the test's alice does not).
  it('applied, from its stream id: kubectl describe shows it on the entry', async () => {
    await startSync();
    const id = await publishRegister(bed.redis, 'v1', 'vps-jp-01', '103.21.244.10');
    await settled(bed.redis);
    const event = await eventAbout('vps-jp-01', 'Applied');
    expect(event).toMatchObject({ type: 'Normal', action: 'Apply', reportingInstance: 'test-a', regarding: { kind: 'WorkloadEntry', uid: await uidOf('vps-jp-01') } });
    expect(event.note).toBe(`register of VPS v1 from stream id ${id} applied: address 103.21.244.10, country jp`);
    const described = await mustKubectl('admin', ['-n', NAMESPACE, 'describe', 'workloadentry', 'vps-jp-01']);
    expect(described).toMatch(/Events:[\s\S]*Normal\s+Applied\s+.*edge-registrar\.io\/sync/);
    expect(described).toContain(`from stream id ${id}`);
  });

  it('drift repaired: an entry deleted behind the daemon\'s back comes back with an Event on the new object', async () => {
    await startSync({ resyncIntervalMs: 300 });
    const id = await publishRegister(bed.redis, 'v2', 'vps-jp-02', '103.21.244.20');
    await settled(bed.redis);
    const before = await uidOf('vps-jp-02');
    await mustKubectl('breakglass', ['-n', NAMESPACE, 'delete', 'workloadentry', 'vps-jp-02']);
    const event = await eventAbout('vps-jp-02', 'DriftRepaired');
    const after = await uidOf('vps-jp-02');
    expect(after).not.toBe(before);
    expect(event).toMatchObject({ action: 'Repair', regarding: { uid: after } });
    expect(event.note).toBe(`the entry was missing; restored to the state of stream id ${id}`);
    expect(await mustKubectl('admin', ['-n', NAMESPACE, 'describe', 'workloadentry', 'vps-jp-02'])).toMatch(/Normal\s+DriftRepaired/);
  });

  it('write refused by the webhook, with its rule: a Warning on the entry name', async () => {
    await applyUnmanagedEntry('vps-jp-50', '103.21.244.50');
    await startSync();
    const id = await publishRegister(bed.redis, 'v51', 'vps-jp-51', '103.21.244.50');
    await settled(bed.redis);
    const event = await eventAbout('vps-jp-51', 'WriteRefused');
    expect(event.type).toBe('Warning');
    expect(event.note).toContain(`event ${id} not applied, rule address.unique:`);
    expect(event.note).toContain('the event is dead-lettered');
    // kubectl events finds it by name, though no such entry exists.
    expect(await mustKubectl('admin', ['-n', NAMESPACE, 'events', '--for', 'workloadentry/vps-jp-51'])).toContain('WriteRefused');
  });

  it('retired and orphan entries removed: Events on the removed objects, found with kubectl events', async () => {
    await startSync({ resyncIntervalMs: 300, orphanGraceMs: 0 });
    const retire = await publishRegister(bed.redis, 'v3', 'vps-jp-03', '103.21.244.30').then(async () => {
      await settled(bed.redis);
      return publishRetire(bed.redis, 'v3');
    });
    await publishRegister(bed.redis, 'v4', 'vps-jp-04', '103.21.244.40');
    await settled(bed.redis);
    expect((await eventAbout('vps-jp-03', 'Retired')).note).toBe(`retire of VPS v3 from stream id ${retire}: entry removed`);
    // v4's desired state lost (as if Redis were restored from an old backup): its entry is an orphan.
    await bed.redis.del(KEYS.vps('v4'));
    await bed.redis.srem(KEYS.registered, 'v4');
    await bed.redis.hdel(KEYS.names, 'vps-jp-04');
    await bed.redis.hdel(KEYS.addresses, '103.21.244.40');
    const orphan = await eventAbout('vps-jp-04', 'OrphanRemoved');
    expect(orphan.note).toMatch(/^no registered VPS has this entry \(for \d+ s, past the grace period\): removed$/);
    expect(await mustKubectl('admin', ['-n', NAMESPACE, 'events', '--for', 'workloadentry/vps-jp-04'])).toContain('OrphanRemoved');
  });

  it('the Lease tells who became the leader', async () => {
    await startSync();
    const event = await eventAbout('edge-registrar-sync', 'LeaderElection');
    expect(event).toMatchObject({ regarding: { kind: 'Lease' }, action: 'Acquire' });
    expect(event.note).toMatch(/^test-a became the leader \(lease transitions \d+\)/);
  });

  it('a repeat is a series, not a new Event: the same refusal three times is one Event with count 3', async () => {
    await applyUnmanagedEntry('vps-jp-60', '103.21.244.60');
    await startSync({ resyncIntervalMs: 300 });
    // A registered VPS whose entry the webhook will not take back: every resync's repair is refused alike.
    await bed.redis.hset(KEYS.vps('v61'), 'state', 'registered', 'name', 'vps-jp-61', 'address', '103.21.244.60', 'country', 'jp', 'labels', '{}', 'stream_id', '5-0', 'updated_at', new Date().toISOString());
    await bed.redis.sadd(KEYS.registered, 'v61');
    await waitFor(async () => ((await events()).find((e) => e.reason === 'RepairRefused')?.series?.count ?? 0) >= 2, 'the repeated refusal to become a series');
    // Running on: later repeats are counted locally and written when the daemon stops.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    await running[0]?.stop();
    const refusals = (await events()).filter((e) => e.reason === 'RepairRefused');
    expect(refusals).toHaveLength(1);
    expect(refusals[0]?.series?.count).toBeGreaterThanOrEqual(3);
  });

  it('a flood is bounded: 200 new entries with a burst of 10 and no refill write 10 Events and one drop notice that counts the rest', async () => {
    const sync = await startSync({ kubeEvents: { enabled: true, burst: 10, perMinute: 0, objectBurst: 25, objectRefillSeconds: 300, tickMs: 200 } });
    await eventAbout('edge-registrar-sync', 'LeaderElection');
    for (let i = 0; i < 200; i++) await publishRegister(bed.redis, `f${i}`, `vps-jp-${1000 + i}`, `103.21.${Math.floor(i / 200) + 245}.${(i % 200) + 1}`);
    await settled(bed.redis, 120_000);
    await sync.stop();
    const all = await events();
    const applied = all.filter((e) => e.reason === 'Applied');
    const notice = all.filter((e) => e.reason === 'EventsRateLimited');
    // The Lease's own Event took one of the ten.
    expect(applied).toHaveLength(9);
    expect(notice).toHaveLength(1);
    expect(notice[0]).toMatchObject({ type: 'Warning', regarding: { kind: 'Lease', name: 'edge-registrar-sync' }, series: { count: 191 } });
  });
});
