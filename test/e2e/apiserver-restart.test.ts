/**
 * The API server really goes away and comes back. This file runs its own control plane
 * (the shared one must stay up for the other files), started with --resume so that the
 * second start has the same address, CA and etcd data: exactly what the sync daemon and
 * the webhook see when a real kube-apiserver restarts.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { inject } from 'vitest';
import type { RunningSync } from '../../src/sync/run.ts';
import { kubeconfigFor, startCluster, type StartedCluster } from '../harness/kube-cluster.ts';
import { ensureRedisServer, startRedis, type RunningRedis } from '../harness/redis-server.ts';
import { deadLetters, publishRegister, publishRetire, settled, startTestSync, testSyncConfig, unacknowledged } from './sync-support.ts';
import { NAMESPACE, startRegisteredWebhook, waitFor, type E2EWebhook } from './support.ts';

let dir: string;
let redisDir: string;
let cluster: StartedCluster;
let redisServer: RunningRedis;
let redis: Redis;
let hook: E2EWebhook | undefined;
let sync: RunningSync | undefined;

const start = (): Promise<StartedCluster> => startCluster({ binaries: inject('binaries'), dir, resume: true, withControllerManager: false });

async function entryAddresses(): Promise<Map<string, string>> {
  const res = await cluster.kubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentries', '-o', 'json']);
  if (res.code !== 0) throw new Error(res.stderr);
  const list = JSON.parse(res.stdout) as { items: { metadata: { name: string }; spec: { address: string } }[] };
  return new Map(list.items.map((i) => [i.metadata.name, i.spec.address]));
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'edge-registrar-kube-restart-'));
  redisDir = await mkdtemp(join(tmpdir(), 'edge-registrar-redis-'));
  cluster = await start();
  redisServer = await startRedis({ binary: await ensureRedisServer(), dataDir: redisDir });
  redis = new Redis(redisServer.url, { maxRetriesPerRequest: null });
  hook = await startRegisteredWebhook(cluster.state);
});

afterAll(async () => {
  await sync?.stop();
  await hook?.stop();
  redis.disconnect();
  await redisServer.stop();
  await cluster.stop();
  await rm(dir, { recursive: true, force: true });
  await rm(redisDir, { recursive: true, force: true });
});

it('API server stopped and restarted: events wait (not acknowledged, not dead-lettered) and apply once it is back', async () => {
  sync = await startTestSync(testSyncConfig(kubeconfigFor(cluster.state, 'sync'), redisServer.url, { consumer: 'restart' }));
  await publishRegister(redis, 'v1', 'vps-jp-01', '103.21.244.10');
  await publishRegister(redis, 'v2', 'vps-jp-02', '103.21.244.11');
  await settled(redis);
  expect(await entryAddresses()).toEqual(new Map([['vps-jp-01', '103.21.244.10'], ['vps-jp-02', '103.21.244.11']]));

  const server = cluster.state.server;
  await cluster.stop();
  // While it is down: a retire, a re-register with a new address and a new VPS.
  await publishRetire(redis, 'v1');
  await publishRegister(redis, 'v2', 'vps-jp-02', '103.21.244.12');
  await publishRegister(redis, 'v3', 'vps-jp-03', '103.21.244.13');
  await new Promise((r) => setTimeout(r, 3_000));
  // The leader cannot renew its Lease, so it stops reading; nothing is acknowledged.
  expect(await unacknowledged(redis)).toBe(3);
  expect(await deadLetters(redis)).toEqual([]);

  cluster = await start();
  expect(cluster.state.server).toBe(server);
  await settled(redis, 90_000);
  expect(await entryAddresses()).toEqual(new Map([['vps-jp-02', '103.21.244.12'], ['vps-jp-03', '103.21.244.13']]));
  expect(await deadLetters(redis)).toEqual([]);
  // The webhook's caches came back too: it still refuses a second holder of an address.
  await waitFor(async () => {
    const res = await cluster.kubectl('alice', ['apply', '--dry-run=server', '-f', '-'], JSON.stringify({
      apiVersion: 'networking.istio.io/v1',
      kind: 'WorkloadEntry',
      metadata: { name: 'vps-jp-40', namespace: NAMESPACE, labels: { app: 'xrayr', country: 'jp' } },
      spec: { address: '103.21.244.13', labels: { app: 'xrayr', country: 'jp' }, serviceAccount: 'xrayr-vm' },
    }));
    return res.stderr.includes('address.unique');
  }, 'the webhook to see entries written after the restart');
}, 240_000);
