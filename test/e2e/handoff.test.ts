/**
 * Addresses and names handed from one VPS to another, the most ordinary day in the fleet (a
 * provider recycles an IP, sigma-api reuses a name): the event that frees a value and the
 * later one that claims it apply in stream order, whatever the timing, and the claim is not
 * dead-lettered because the webhook's cache still shows the entry the daemon just removed.
 * The real sync daemon, the real redis-server and the real API server with the webhook.
 *
 * Each scenario publishes its events in one pipeline, so they arrive in one read batch:
 * the hardest case for ordering (all of them dispatched at once), and it repeats the handoff
 * several times so a pass is not luck.
 */
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { ClusterIndex } from '../../src/kube/cluster-index.ts';
import { daemonKeys } from '../../src/redis/keys.ts';
import { publishMany } from '../../src/sync/publisher.ts';
import type { RunningSync } from '../../src/sync/run.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import type { RunningRedis } from '../harness/redis-server.ts';
import { STREAM, deadLetters, settled, startSyncTestBed, startTestSync, stopSyncTestBed, testSyncConfig } from './sync-support.ts';
import { NAMESPACE, deleteAllEntries, kubectl, mustKubectl, startRegisteredWebhook, waitFor, type E2EWebhook } from './support.ts';

let redisServer: RunningRedis;
let redis: Redis;
let hook: E2EWebhook;
let dataDir: string;
let sync: RunningSync | undefined;

const register = (vps: string, name: string, address: string): string[] => ['event', 'register', 'vps_id', vps, 'name', name, 'address', address, 'country', 'jp'];
const retire = (vps: string): string[] => ['event', 'retire', 'vps_id', vps];

/** name → [address, vps id] of every entry in the namespace. */
async function entries(): Promise<Map<string, [string, string]>> {
  const list = JSON.parse(await mustKubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentries', '-o', 'json'])) as {
    items: { metadata: { name: string; annotations: Record<string, string> }; spec: { address: string } }[];
  };
  return new Map(list.items.map((i) => [i.metadata.name, [i.spec.address, i.metadata.annotations['edge-registrar.io/vps-id'] ?? '']]));
}

/** Publishes the events in one pipeline and waits until all are acknowledged. */
async function run(events: string[][]): Promise<void> {
  await publishMany(redis, STREAM, events);
  await settled(redis, 90_000);
}

beforeAll(async () => {
  ({ dataDir, redisServer, redis, hook } = await startSyncTestBed('handoff'));
});

afterAll(async () => {
  await sync?.stop();
  await stopSyncTestBed({ dataDir, redisServer, redis, hook });
});

beforeEach(async () => {
  await sync?.stop();
  await redis.flushall();
  await deleteAllEntries();
  await kubectl('admin', ['-n', NAMESPACE, 'delete', 'lease', 'edge-registrar-sync', '--ignore-not-found']);
  // Concurrency well above the number of VPSs in a scenario: nothing but ordering keeps them apart.
  sync = await startTestSync(testSyncConfig(kubeconfigFor(inject('cluster'), 'sync'), redisServer.url, { concurrency: 32 }));
});

const ROUNDS = 5;

describe('an address or a name handed from one VPS to another applies in stream order, with no dead letter', () => {
  it('a retired VPS\'s address, taken at once by another VPS (in the same read batch)', async () => {
    // Settled first, so the retire frees an address the desired state holds (not one in flight).
    await run(Array.from({ length: ROUNDS }, (_, i) => register(`a${i}`, `vps-jp-1${i}`, `45.76.10.${i + 1}`)));
    await run(Array.from({ length: ROUNDS }, (_, i) => [retire(`a${i}`), register(`b${i}`, `vps-jp-2${i}`, `45.76.10.${i + 1}`)]).flat());
    expect(await deadLetters(redis)).toEqual([]);
    expect(await entries()).toEqual(new Map(Array.from({ length: ROUNDS }, (_, i) => [`vps-jp-2${i}`, [`45.76.10.${i + 1}`, `b${i}`]])));
  });

  it('a retire and the register reusing its address, both in flight in one batch with the first register', async () => {
    await run(Array.from({ length: ROUNDS }, (_, i) => [register(`a${i}`, `vps-jp-1${i}`, `45.76.11.${i + 1}`), retire(`a${i}`), register(`b${i}`, `vps-jp-2${i}`, `45.76.11.${i + 1}`)]).flat());
    expect(await deadLetters(redis)).toEqual([]);
    expect(await entries()).toEqual(new Map(Array.from({ length: ROUNDS }, (_, i) => [`vps-jp-2${i}`, [`45.76.11.${i + 1}`, `b${i}`]])));
  });

  it("a moved VPS's old address, taken by another VPS right after the move", async () => {
    await run(Array.from({ length: ROUNDS }, (_, i) => register(`a${i}`, `vps-jp-1${i}`, `45.76.12.${i + 1}`)));
    await run(Array.from({ length: ROUNDS }, (_, i) => [register(`a${i}`, `vps-jp-1${i}`, `45.76.13.${i + 1}`), register(`b${i}`, `vps-jp-2${i}`, `45.76.12.${i + 1}`)]).flat());
    expect(await deadLetters(redis)).toEqual([]);
    const expected = new Map<string, [string, string]>();
    for (let i = 0; i < ROUNDS; i++) {
      expected.set(`vps-jp-1${i}`, [`45.76.13.${i + 1}`, `a${i}`]);
      expected.set(`vps-jp-2${i}`, [`45.76.12.${i + 1}`, `b${i}`]);
    }
    expect(await entries()).toEqual(expected);
  });

  it("a renamed VPS's old name, taken by another VPS right after the rename", async () => {
    await run(Array.from({ length: ROUNDS }, (_, i) => register(`a${i}`, `vps-jp-3${i}`, `45.76.14.${i + 1}`)));
    await run(Array.from({ length: ROUNDS }, (_, i) => [register(`a${i}`, `vps-jp-4${i}`, `45.76.14.${i + 1}`), register(`b${i}`, `vps-jp-3${i}`, `45.76.15.${i + 1}`)]).flat());
    expect(await deadLetters(redis)).toEqual([]);
    const expected = new Map<string, [string, string]>();
    for (let i = 0; i < ROUNDS; i++) {
      expected.set(`vps-jp-4${i}`, [`45.76.14.${i + 1}`, `a${i}`]);
      expected.set(`vps-jp-3${i}`, [`45.76.15.${i + 1}`, `b${i}`]);
    }
    expect(await entries()).toEqual(expected);
  });

  it("a retired VPS's name, reused by another VPS", async () => {
    await run(Array.from({ length: ROUNDS }, (_, i) => register(`a${i}`, `vps-jp-5${i}`, `45.76.16.${i + 1}`)));
    await run(Array.from({ length: ROUNDS }, (_, i) => [retire(`a${i}`), register(`b${i}`, `vps-jp-5${i}`, `45.76.17.${i + 1}`)]).flat());
    expect(await deadLetters(redis)).toEqual([]);
    expect(await entries()).toEqual(new Map(Array.from({ length: ROUNDS }, (_, i) => [`vps-jp-5${i}`, [`45.76.17.${i + 1}`, `b${i}`]])));
  });

  it('a chain: A frees X, B takes X and frees Y, C takes Y', async () => {
    await run([register('a', 'vps-jp-601', '45.76.18.1'), register('b', 'vps-jp-602', '45.76.18.2')]);
    await run([retire('a'), register('b', 'vps-jp-602', '45.76.18.1'), register('c', 'vps-jp-603', '45.76.18.2')]);
    expect(await deadLetters(redis)).toEqual([]);
    expect(await entries()).toEqual(new Map([['vps-jp-602', ['45.76.18.1', 'b']], ['vps-jp-603', ['45.76.18.2', 'c']]]));
  });

  it('two VPSs swap addresses through a free one', async () => {
    await run([register('a', 'vps-jp-601', '45.76.19.1'), register('b', 'vps-jp-602', '45.76.19.2')]);
    // A: X→Z (free), B: Y→X, A: Z→Y.
    await run([register('a', 'vps-jp-601', '45.76.19.3'), register('b', 'vps-jp-602', '45.76.19.1'), register('a', 'vps-jp-601', '45.76.19.2')]);
    expect(await deadLetters(redis)).toEqual([]);
    expect(await entries()).toEqual(new Map([['vps-jp-601', ['45.76.19.2', 'a']], ['vps-jp-602', ['45.76.19.1', 'b']]]));
  });
});

describe('the opposite still holds', () => {
  it('a claim of an address still held at that point in the stream is dead-lettered, even when it is freed later', async () => {
    await run([register('a', 'vps-jp-601', '45.76.20.1')]);
    await run([register('b', 'vps-jp-602', '45.76.20.1'), retire('a'), register('c', 'vps-jp-603', '45.76.20.1')]);
    expect((await deadLetters(redis)).map((l) => [l.vps_id, l.dlq_rule])).toEqual([['b', 'address.unique']]);
    expect(await entries()).toEqual(new Map([['vps-jp-603', ['45.76.20.1', 'c']]]));
  });

  it('a claim of a name still held at that point in the stream is dead-lettered', async () => {
    await run([register('a', 'vps-jp-601', '45.76.21.1')]);
    await run([register('b', 'vps-jp-601', '45.76.21.2'), retire('a')]);
    expect((await deadLetters(redis)).map((l) => [l.vps_id, l.dlq_rule])).toEqual([['b', 'name.unique']]);
    expect(await entries()).toEqual(new Map());
  });
});

describe('a commit Redis lost in a failover', () => {
  // Redis replicates asynchronously: a failover of its primary can lose a commit the old
  // primary acknowledged. The retire that freed an address is then missing from the desired
  // state, and the claim behind it was dead-lettered address.unique, though the retire comes
  // again. Simulated here by putting the holder's state back as it was before its retire.
  it('a claim of an address whose release Redis lost is left pending until the release is applied again, then applied; not dead-lettered', async () => {
    const keys = daemonKeys(STREAM, NAMESPACE);
    await run([register('a', 'vps-jp-801', '45.76.30.1')]);
    const before = await redis.hgetall(keys.vps('a'));
    await run([retire('a')]);
    // The failover: the retire's commit is gone, a holds the address and the name again.
    await redis.del(keys.vps('a'));
    await redis.hset(keys.vps('a'), before);
    await redis.hset(keys.addresses, '45.76.30.1', 'a');
    await redis.hset(keys.names, 'vps-jp-801', 'a');
    await redis.sadd(keys.registered, 'a');
    await publishMany(redis, STREAM, [register('b', 'vps-jp-802', '45.76.30.1')]);
    const port = sync?.port ?? 0;
    await waitFor(async () => (await counter(port, 'edge_registrar_sync_retries_total{reason="redis"}')) >= 1, 'the claim to be left pending behind the lost retire');
    expect(await deadLetters(redis)).toEqual([]);
    // The retire delivered again (here as a copy of it, published once more).
    await publishMany(redis, STREAM, [retire('a')]);
    await settled(redis, 60_000);
    expect(await deadLetters(redis)).toEqual([]);
    expect(await entries()).toEqual(new Map([['vps-jp-802', ['45.76.30.1', 'b']]]));
  });
});

/** The sync daemon's counters, read from its /metrics. */
async function counter(port: number, series: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.split(' ')[1]);
}

/**
 * A webhook cache that still shows `vps-jp-701` at the address, whatever the API server says.
 * It holds the sync Lease as it stands once the daemon leads, so the leader fence passes and the
 * only thing behind is the entry.
 */
async function frozenView(address: string): Promise<{ index: ClusterIndex; stale: unknown }> {
  const lease = async (): Promise<{ spec?: { holderIdentity?: string } } | undefined> => {
    const res = await kubectl('admin', ['-n', NAMESPACE, 'get', 'lease', 'edge-registrar-sync', '-o', 'json']);
    return res.code === 0 ? (JSON.parse(res.stdout) as { spec?: { holderIdentity?: string } }) : undefined;
  };
  await waitFor(async () => ((await lease())?.spec?.holderIdentity ?? '') !== '', 'the daemon to hold the sync Lease');
  const index = new ClusterIndex(NAMESPACE);
  const stale = { metadata: { name: 'vps-jp-701', namespace: NAMESPACE }, spec: { address } };
  index.replace('WorkloadEntry', NAMESPACE, [stale]);
  index.replace('Service', NAMESPACE, []);
  index.replace('ServiceAccount', NAMESPACE, [{ metadata: { name: 'xrayr-vm', namespace: NAMESPACE } }]);
  index.replace('Lease', NAMESPACE, [await lease()]);
  return { index, stale };
}

describe("the webhook's cache behind the API server", () => {
  it('a claim it denies as taken, while no entry in the API server holds the address, is retried, not dead-lettered', async () => {
    const { index, stale } = await frozenView('45.76.22.1');
    const frozen = await startRegisteredWebhook(inject('cluster'), { view: index });
    try {
      await publishMany(redis, STREAM, [register('b', 'vps-jp-702', '45.76.22.1')]);
      const port = sync?.port ?? 0;
      await waitFor(async () => (await counter(port, 'edge_registrar_sync_retries_total{reason="unexpected"}')) >= 2, 'the claim to be retried');
      // Still pending: neither applied nor dead-lettered while the cache is behind.
      expect([await deadLetters(redis), (await entries()).has('vps-jp-702')]).toEqual([[], false]);
      index.remove('WorkloadEntry', stale);
      await settled(redis, 30_000);
      expect(await deadLetters(redis)).toEqual([]);
      expect(await entries()).toEqual(new Map([['vps-jp-702', ['45.76.22.1', 'b']]]));
    } finally {
      await frozen.stop();
      await hook.register();
    }
  });

  it('a cache that never catches up is given up on after --max-attempts, with the reason', async () => {
    await sync?.stop();
    sync = await startTestSync(testSyncConfig(kubeconfigFor(inject('cluster'), 'sync'), redisServer.url, { maxAttempts: 3, retryMaxMs: 200 }));
    const frozen = await startRegisteredWebhook(inject('cluster'), { view: (await frozenView('45.76.23.1')).index });
    try {
      await publishMany(redis, STREAM, [register('b', 'vps-jp-703', '45.76.23.1')]);
      await settled(redis, 30_000);
      const letters = await deadLetters(redis);
      expect(letters.map((l) => [l.vps_id, l.dlq_rule])).toEqual([['b', 'event.retries-exhausted']]);
      expect(letters[0]?.dlq_reason).toContain('failed 3 times');
      expect(letters[0]?.dlq_reason).toContain('its cache is behind');
      expect(await counter(sync.port, 'edge_registrar_sync_dead_letters_total{rule="event.retries-exhausted"}')).toBe(1);
    } finally {
      await frozen.stop();
      await hook.register();
    }
  });
});
