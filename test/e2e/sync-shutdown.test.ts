/**
 * Stopping the sync daemon the way Kubernetes does (SIGTERM, then SIGKILL at the grace
 * period): it stops writing, releases the Lease and exits well inside the grace period,
 * whether or not Redis and the API server answer. The daemon runs as its own process (the
 * test harness's sync-process.ts: the CLI's wiring with test timings), against the suite's
 * real API server and a redis-server of this file's own.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { daemonKeys } from '../../src/redis/keys.ts';
import { StateStore } from '../../src/sync/state-store.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import { spawnNode } from '../harness/processes.ts';
import { ensureRedisServer, freePort, startRedis, type RunningRedis } from '../harness/redis-server.ts';
import { NAMESPACE, deleteAllEntries, kubectl, startRegisteredWebhook, waitFor, type E2EWebhook } from './support.ts';

const SYNC_PROCESS = fileURLToPath(new URL('../harness/sync-process.ts', import.meta.url));
const STREAM = 'sigma:vps-events';
const GROUP = 'edge-registrar';
/** The Lease the webhook's leader fence watches: a write stamped with any other Lease's term is refused (ownership.leader). */
const LEASE = 'edge-registrar-sync';
/** The daemon's own bound on stopping; the pod's grace period is 30 s. */
const SHUTDOWN_TIMEOUT_MS = 10_000;

let redisServer: RunningRedis;
let redis: Redis;
let hook: E2EWebhook;
let dir: string;

beforeAll(async () => {
  redisServer = await startRedis({ binary: await ensureRedisServer() });
  redis = new Redis(redisServer.url, { maxRetriesPerRequest: null });
  hook = await startRegisteredWebhook();
  dir = await mkdtemp(join(tmpdir(), 'edge-registrar-shutdown-'));
});

afterAll(async () => {
  redis.disconnect();
  await redisServer.stop();
  await hook.stop();
  await deleteAllEntries();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  await redis.flushall();
  await deleteAllEntries();
});

/** `n` registered VPSs in the desired state whose entries the cluster does not have: the first resync restores them all. */
async function registeredWithoutEntries(n: number): Promise<void> {
  const store = new StateStore(redis, { keys: daemonKeys(STREAM, NAMESPACE), group: GROUP, tombstoneTtlSeconds: 3600, outcomeMaxLength: 1_000 });
  for (let i = 0; i < n; i++) {
    await store.commit({ vpsId: `v${i}`, state: 'registered', name: `vps-jp-${1000 + i}`, address: `45.${77 + Math.floor(i / 60_000)}.${Math.floor(i / 250) % 240}.${1 + (i % 250)}`, country: 'jp', labels: {}, streamId: `1-${i + 1}`, updatedAt: new Date().toISOString() }, { source_id: '0-0', outcome: 'applied', at: new Date().toISOString() });
  }
}

interface Daemon {
  child: ChildProcess;
  port: number;
  log: () => Promise<string[]>;
  exited: Promise<number>;
}

async function startDaemon(name: string): Promise<Daemon> {
  const port = await freePort();
  const logFile = join(dir, `${name}.log`);
  const flags = { kubeconfig: kubeconfigFor(inject('cluster'), 'sync'), redisUrl: redisServer.url, consumer: name, port: String(port), logLevel: 'info' };
  const overrides = { leaseName: LEASE, shutdownTimeoutMs: SHUTDOWN_TIMEOUT_MS, concurrency: 4 };
  const child = spawnNode(SYNC_PROCESS, [], logFile, { env: { ...process.env, SYNC_FLAGS: JSON.stringify(flags), SYNC_OVERRIDES: JSON.stringify(overrides) } });
  const exited = new Promise<number>((resolve) => child.once('exit', (code, signal) => { resolve(signal === null ? (code ?? -1) : -1); }));
  const log = async (): Promise<string[]> => (await readFile(logFile, 'utf8').catch(() => '')).split('\n').filter((l) => l.startsWith('{'));
  return { child, port, log, exited };
}

const messages = (lines: string[]): string[] => lines.map((l) => (JSON.parse(l) as { msg: string }).msg);

async function leaseHolder(): Promise<string> {
  return (await kubectl('admin', ['-n', NAMESPACE, 'get', 'lease', LEASE, '-o', 'jsonpath={.spec.holderIdentity}'])).stdout;
}

describe('stopping the sync daemon', () => {
  it(`SIGTERM in the middle of a resync of 1,500 entries: no repair is written after it, the Lease is released, and the process exits within ${SHUTDOWN_TIMEOUT_MS / 1000} s`, async () => {
    await registeredWithoutEntries(1_500);
    const daemon = await startDaemon('resyncing');
    try {
      await waitFor(async () => messages(await daemon.log()).filter((m) => m === 'drift: entry restored').length >= 30, 'the resync to be restoring entries', 60_000).catch(async (error: unknown) => {
        throw new Error(`${String(error)}; the daemon's last log lines:\n${(await daemon.log()).slice(-15).join('\n')}`);
      });
      const sent = Date.now();
      daemon.child.kill('SIGTERM');
      const code = await Promise.race([daemon.exited, new Promise<number>((resolve) => setTimeout(() => { resolve(-2); }, 60_000))]);
      const tookMs = Date.now() - sent;
      const lines = messages(await daemon.log());
      const stopAt = lines.indexOf('stop requested');
      const restoredAfterStop = lines.slice(stopAt).filter((m) => m === 'drift: entry restored').length;
      console.error(`[shutdown] exit code ${code} after ${tookMs} ms; ${lines.slice(0, stopAt).filter((m) => m === 'drift: entry restored').length} entries restored before the stop, ${restoredAfterStop} after`);
      expect(code).toBe(0);
      expect(tookMs).toBeLessThan(SHUTDOWN_TIMEOUT_MS + 2_000);
      // A repair whose write was already sent may finish; none is started after the stop.
      expect(restoredAfterStop).toBeLessThanOrEqual(1);
      expect(lines.slice(stopAt)).toContain('sync stopped');
      expect(await leaseHolder()).toBe('');
    } finally {
      daemon.child.kill('SIGKILL');
    }
  });

  it(`SIGTERM while Redis does not answer (SIGSTOP): the process still exits within ${SHUTDOWN_TIMEOUT_MS / 1000} s`, async () => {
    const daemon = await startDaemon('redis-frozen');
    try {
      await waitFor(async () => /^edge_registrar_sync_leader 1$/m.test(await fetch(`http://127.0.0.1:${daemon.port}/metrics`).then((r) => r.text(), () => '')), 'the daemon to lead', 30_000);
      redisServer.process.kill('SIGSTOP');
      const sent = Date.now();
      daemon.child.kill('SIGTERM');
      const code = await Promise.race([daemon.exited, new Promise<number>((resolve) => setTimeout(() => { resolve(-2); }, 60_000))]);
      const tookMs = Date.now() - sent;
      console.error(`[shutdown] with Redis frozen: exit code ${code} after ${tookMs} ms`);
      expect(code).toBe(0);
      expect(tookMs).toBeLessThan(SHUTDOWN_TIMEOUT_MS + 2_000);
      expect(await leaseHolder()).toBe('');
    } finally {
      redisServer.process.kill('SIGCONT');
      daemon.child.kill('SIGKILL');
    }
  });
});
