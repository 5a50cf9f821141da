/**
 * Shared pieces of the sync daemon's e2e tests: the test configuration (short leases and
 * backoffs), producers for the two event types, and "everything consumed" as the group
 * reports it.
 */
import { deadLetterStream } from '../../src/redis/keys.ts';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, inject } from 'vitest';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import { ensureRedisServer, startRedis, type RunningRedis } from '../harness/redis-server.ts';
import { unacknowledgedEvents } from '../harness/stream-group.ts';
import { FAST_SYNC_TIMINGS } from '../harness/sync-timings.ts';
import { syncConfig, type SyncConfig } from '../../src/config/sync.ts';
import { eventFields, publish } from '../../src/sync/publisher.ts';
import { runSync, type RunningSync } from '../../src/sync/run.ts';
import { createLogger } from '../../src/observability/logger.ts';
import type { K8sObject } from './helm-support.ts';
import { deleteAllEntries, ensureBase, kubectl, startRegisteredWebhook, waitFor, type E2EWebhook } from './support.ts';

export const STREAM = 'sigma:vps-events';
export const GROUP = 'edge-registrar';

export function testSyncConfig(kubeconfig: string, redisUrl: string, overrides: Partial<SyncConfig> = {}): SyncConfig {
  return {
    ...syncConfig({ kubeconfig, redisUrl, port: '0', consumer: 'test-a' }, {}, 'unused'),
    ...FAST_SYNC_TIMINGS,
    ...overrides,
  };
}

export function startTestSync(config: SyncConfig): Promise<RunningSync> {
  return runSync(config, createLogger(process.env.E2E_LOG_LEVEL === undefined ? 'silent' : process.env.E2E_LOG_LEVEL === 'debug' ? 'debug' : 'info', `sync-${config.consumer}`));
}

export function publishRegister(redis: Redis, vpsId: string, name: string, address: string, country = 'jp', extra: Record<string, string> = {}): Promise<string> {
  const fields = eventFields({ event: 'register', vps_id: vpsId, name, address, country, ...extra });
  if (!fields.ok) throw new Error(fields.message);
  return publish(redis, STREAM, fields.fields);
}

export function publishRetire(redis: Redis, vpsId: string, name?: string): Promise<string> {
  return publish(redis, STREAM, ['event', 'retire', 'vps_id', vpsId, ...(name ? ['name', name] : [])]);
}

export async function pendingCount(redis: Redis): Promise<number> {
  const info = (await redis.xpending(STREAM, GROUP)) as [number, ...unknown[]];
  return info[0];
}

export function unacknowledged(redis: Redis): Promise<number | undefined> {
  return unacknowledgedEvents(redis, STREAM, GROUP);
}

/** Waits until everything published is delivered and acknowledged. */
/** The managed Telemetry (istio-system/edge-registrar-vps) once it maps `vpsCount` VPSs. */
export async function telemetryMapping(vpsCount: number): Promise<K8sObject> {
  let written: K8sObject | undefined;
  await waitFor(async () => {
    const res = await kubectl('admin', ['-n', 'istio-system', 'get', 'telemetry', 'edge-registrar-vps', '-o', 'json']);
    written = res.code === 0 ? (JSON.parse(res.stdout) as K8sObject) : undefined;
    return written?.metadata.annotations?.['edge-registrar.io/vps-count'] === String(vpsCount);
  }, `the Telemetry to map ${vpsCount} VPSs`);
  return written!;
}

export async function settled(redis: Redis, timeoutMs = 60_000): Promise<void> {
  await waitFor(async () => (await unacknowledged(redis)) === 0, 'the stream to be consumed', timeoutMs);
}

export async function deadLetters(redis: Redis): Promise<Record<string, string>[]> {
  const rows = (await redis.xrange(deadLetterStream(STREAM), '-', '+')) as [string, string[]][];
  return rows.map(([, f]) => Object.fromEntries(f.flatMap((_, i) => (i % 2 === 0 ? [[f[i], f[i + 1]]] : []))) as Record<string, string>);
}

/** What the sync daemon's e2e files run against: a real redis-server (AOF in its own directory), a client, the registered webhook. */
export interface SyncTestBed {
  dataDir: string;
  redisServer: RunningRedis;
  redis: Redis;
  hook: E2EWebhook;
}

export async function startSyncTestBed(name: string): Promise<SyncTestBed> {
  await ensureBase();
  const dataDir = await mkdtemp(join(tmpdir(), `edge-registrar-${name}-`));
  const redisServer = await startRedis({ binary: await ensureRedisServer(), dataDir });
  const redis = new Redis(redisServer.url, { maxRetriesPerRequest: null });
  return { dataDir, redisServer, redis, hook: await startRegisteredWebhook() };
}

/** Stops what the bed holds now (a test may have restarted the server or the webhook). */
export async function stopSyncTestBed(bed: SyncTestBed): Promise<void> {
  await deleteAllEntries();
  await bed.hook.stop();
  bed.redis.disconnect();
  await bed.redisServer.stop();
  await rm(bed.dataDir, { recursive: true, force: true });
}

/**
 * A test file's own bed, handed to `onStart` once it runs, emptied (Redis and the managed
 * entries) before each test; returns how the file starts a sync daemon, every one of which is
 * stopped after its test.
 */
export function useSyncTestBed(name: string, onStart: (bed: SyncTestBed) => void): (overrides?: Parameters<typeof testSyncConfig>[2]) => Promise<RunningSync> {
  let bed: SyncTestBed | undefined;
  let running: RunningSync[] = [];
  beforeAll(async () => {
    bed = await startSyncTestBed(name);
    onStart(bed);
  });
  afterAll(async () => {
    if (bed !== undefined) await stopSyncTestBed(bed);
  });
  beforeEach(async () => {
    await bed?.redis.flushall();
    await deleteAllEntries();
  });
  afterEach(async () => {
    await Promise.all(running.map((s) => s.stop()));
    running = [];
  });
  return async (overrides = {}) => {
    if (bed === undefined) throw new Error('the sync test bed has not started');
    const sync = await startTestSync(testSyncConfig(kubeconfigFor(inject('cluster'), 'sync'), bed.redisServer.url, overrides));
    running.push(sync);
    return sync;
  };
}
