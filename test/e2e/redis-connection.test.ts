/**
 * The Redis deployments the daemon supports, each against a real redis-server: an ACL user
 * with only the documented permissions, TLS trusting one CA, and Sentinel. Each runs the whole
 * daemon (consume, commit, dead-letter, resync, metrics) and checks an entry comes out.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { createCertificateAuthority, createServingCertificate } from '../../src/certs/authority.ts';
import type { RedisConfig } from '../../src/config/redis.ts';
import { daemonKeys } from '../../src/redis/keys.ts';
import { publish } from '../../src/sync/publisher.ts';
import type { RunningSync } from '../../src/sync/run.ts';
import { documentedCommand } from '../harness/doc-snippets.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import { ensureRedisServer, startRedis, startSentinel, type RunningRedis, type StartRedisOptions } from '../harness/redis-server.ts';
import { STREAM, deadLetters, publishRegister, settled, startTestSync, testSyncConfig } from './sync-support.ts';
import { NAMESPACE, deleteAllEntries, ensureBase, kubectl, mustKubectl, startRegisteredWebhook, type E2EWebhook } from './support.ts';

/** The ACL commands exactly as the docs print them (the daemon's user, sigma-api's producer), run with `redis-cli` semantics. */
const OPERATING = fileURLToPath(new URL('../../docs/operating.md', import.meta.url));
const EVENT_CONTRACT = fileURLToPath(new URL('../../docs/event-contract.md', import.meta.url));
function documentedAcl(file: string, user: string, password: string): string[] {
  const words = documentedCommand(file, `redis-cli ACL SETUSER ${user} `);
  return words.slice(1).map((w) => (w === '>PASSWORD' ? `>${password}` : w));
}

let hook: E2EWebhook;
let dir: string;
let stops: (() => Promise<void>)[] = [];

beforeAll(async () => {
  await ensureBase();
  dir = await mkdtemp(join(tmpdir(), 'edge-registrar-redis-modes-'));
  hook = await startRegisteredWebhook();
});

afterAll(async () => {
  await deleteAllEntries();
  await hook.stop();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  await deleteAllEntries();
  await kubectl('admin', ['-n', NAMESPACE, 'delete', 'lease', 'edge-registrar-sync', '--ignore-not-found']);
});

afterEach(async () => {
  for (const stop of stops.reverse()) await stop();
  stops = [];
});

async function redisServer(options: Omit<StartRedisOptions, 'binary'>): Promise<RunningRedis> {
  const server = await startRedis({ binary: await ensureRedisServer(), ...options });
  stops.push(() => server.stop());
  return server;
}

function client(redis: Redis): Redis {
  stops.push(() => {
    redis.disconnect();
    return Promise.resolve();
  });
  return redis;
}

/** Runs the daemon on `redis`, feeds it a register and a poison event through `producer`, and checks both outcomes. */
async function flowsThrough(redis: RedisConfig, producer: Redis): Promise<void> {
  const sync: RunningSync = await startTestSync(testSyncConfig(kubeconfigFor(inject('cluster'), 'sync'), redis.url, { redis, strayCheckMs: 1_000 }));
  stops.push(() => sync.stop());
  await publishRegister(producer, 'v1', 'vps-jp-01', '103.21.244.10');
  await publish(producer, STREAM, ['event', 'reboot', 'vps_id', 'v2']);
  await settled(producer, 30_000);
  const entry = JSON.parse(await mustKubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentry', 'vps-jp-01', '-o', 'json'])) as { spec: { address: string } };
  expect(entry.spec.address).toBe('103.21.244.10');
  expect((await deadLetters(producer)).map((l) => l.dlq_rule)).toEqual(['event.type']);
  // The gauges read with XINFO on scrape: present only if the user may run it.
  const metrics = await (await fetch(`http://127.0.0.1:${sync.port}/metrics`)).text();
  expect(metrics).toMatch(/^edge_registrar_sync_pending 0$/m);
  expect(metrics).toContain('edge_registrar_vps_info{name="vps-jp-01",address="103.21.244.10",country="jp",vps_id="v1"} 1');
}

describe('Redis deployments', () => {
  it('an ACL user with only the documented permissions and a password', async () => {
    const server = await redisServer({});
    const admin = client(new Redis(server.url));
    await admin.call(...(documentedAcl(OPERATING, 'edge-registrar', 's3cret-pass') as [string, ...string[]]));
    // Refused outside its keys: the permissions are real.
    const limited = client(new Redis({ port: server.port, host: '127.0.0.1', username: 'edge-registrar', password: 's3cret-pass' }));
    await expect(limited.get('other-key')).rejects.toThrow(/NOPERM/);
    await flowsThrough({ url: server.url, username: 'edge-registrar', password: 's3cret-pass', tls: false, sentinelName: 'mymaster' }, admin);
  });

  it("sigma-api's producer user, as documented: publishes events and reads outcomes, and nothing else", async () => {
    const server = await redisServer({});
    const admin = client(new Redis(server.url));
    await admin.call(...(documentedAcl(EVENT_CONTRACT, 'sigma-api', 'producer-pass') as [string, ...string[]]));
    const producer = client(new Redis({ port: server.port, host: '127.0.0.1', username: 'sigma-api', password: 'producer-pass' }));
    const keys = daemonKeys('sigma:vps-events', 'airport-prod');
    const id = await producer.xadd('sigma:vps-events', '*', 'event', 'retire', 'vps_id', 'v1');
    expect(id).toMatch(/^\d+-\d+$/);
    await admin.xadd(keys.outcomes, '*', 'source_id', id ?? '', 'outcome', 'unchanged', 'at', new Date().toISOString());
    expect(await producer.xread('COUNT', 10, 'STREAMS', keys.outcomes, '0')).toHaveLength(1);
    expect(await producer.xrange(keys.outcomes, '-', '+')).toHaveLength(1);
    // Read-only on the outcomes, blind to the daemon's own keys.
    await expect(producer.xadd(keys.outcomes, '*', 'outcome', 'applied')).rejects.toThrow(/NOPERM/);
    await expect(producer.xrange(keys.deadLetters, '-', '+')).rejects.toThrow(/NOPERM/);
    await expect(producer.hgetall(keys.vps('v1'))).rejects.toThrow(/NOPERM/);
    await expect(producer.xreadgroup('GROUP', 'edge-registrar', 'x', 'STREAMS', 'sigma:vps-events', '>')).rejects.toThrow(/NOPERM/);
  });

  it('TLS, trusting only the CA given (rediss:// and REDIS_TLS_CA_FILE)', async () => {
    const ca = createCertificateAuthority('edge-registrar test redis CA', 1);
    const serving = createServingCertificate({ ca, hosts: ['localhost'], ips: ['127.0.0.1'], days: 1 });
    const files = { caFile: join(dir, 'ca.crt'), certFile: join(dir, 'redis.crt'), keyFile: join(dir, 'redis.key') };
    await Promise.all([writeFile(files.caFile, ca.cert), writeFile(files.certFile, serving.cert), writeFile(files.keyFile, serving.key, { mode: 0o600 })]);
    const server = await redisServer({ tls: files });
    expect(server.url.startsWith('rediss://')).toBe(true);
    const producer = client(new Redis(server.url, { tls: { ca: ca.cert } }));
    await flowsThrough({ url: server.url, tls: false, tlsCaFile: files.caFile, sentinelName: 'mymaster' }, producer);
  });

  it('Sentinel: the master is found by its name', async () => {
    const master = await redisServer({});
    const sentinel = await startSentinel({ binary: await ensureRedisServer(), dir, master: master.port, name: 'edge-master' });
    stops.push(() => sentinel.stop());
    const producer = client(new Redis(master.url));
    // The URL's host and port are not used in Sentinel mode; the sentinels are.
    await flowsThrough({ url: 'redis://unused.invalid:1', tls: false, sentinels: [{ host: '127.0.0.1', port: sentinel.port }], sentinelName: 'edge-master' }, producer);
  });
});
