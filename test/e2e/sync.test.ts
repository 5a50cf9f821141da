/**
 * The sync daemon against a real redis-server and the real kube-apiserver, with the webhook
 * registered (every write goes through the one guarded path).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import type { SyncConfig } from '../../src/config/sync.ts';
import { loadKubeConfig } from '../../src/kube/client.ts';
import { DEFAULT_POLICY } from '../../src/policy/policy-file.ts';
import { planBackfill } from '../../src/sync/backfill.ts';
import { EntryWriter } from '../../src/sync/entry-writer.ts';
import { planRegister } from '../../src/sync/planner.ts';
import { EventProcessor } from '../../src/sync/processor.ts';
import { orderingKeys } from '../../src/sync/ordering.ts';
import { Resyncer } from '../../src/sync/resync.ts';
import { KeyedQueue } from '../../src/util/keyed-queue.ts';
import { publish, publishMany } from '../../src/sync/publisher.ts';
import { daemonKeys, deadLetterStream } from '../../src/redis/keys.ts';
import { runSync, type RunningSync } from '../../src/sync/run.ts';
import { StateStore } from '../../src/sync/state-store.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import { ensureRedisServer, startRedis, type RunningRedis } from '../harness/redis-server.ts';
import { kubeconfigThroughProxy } from '../harness/tcp-proxy.ts';
import { STREAM, deadLetters, pendingCount, publishRegister, publishRetire, settled as settledStream, startSyncTestBed, startTestSync, stopSyncTestBed, testSyncConfig, unacknowledged } from './sync-support.ts';
import { NAMESPACE, applyUnmanagedEntry, deleteAllEntries, kubectl, mustKubectl, startRegisteredWebhook, waitFor, type E2EWebhook } from './support.ts';
import { defaultedSpecLabels } from '../fixtures/entries.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The daemon's keys for the test stream and namespace. */
const KEYS = daemonKeys(STREAM, NAMESPACE);
let redisServer: RunningRedis;
let redis: Redis;
let hook: E2EWebhook;
let dataDir: string;
let running: RunningSync[] = [];

async function startSync(overrides: Partial<SyncConfig> = {}): Promise<RunningSync> {
  const sync = await startTestSync(testSyncConfig(kubeconfigFor(inject('cluster'), 'sync'), redisServer.url, overrides));
  running.push(sync);
  return sync;
}

const register = (vpsId: string, name: string, address: string, country = 'jp', extra: Record<string, string> = {}): Promise<string> =>
  publishRegister(redis, vpsId, name, address, country, extra);
const retire = (vpsId: string, name?: string): Promise<string> => publishRetire(redis, vpsId, name);
const pending = (): Promise<number> => pendingCount(redis);
const settled = (timeoutMs?: number): Promise<void> => settledStream(redis, timeoutMs);
const dlq = (): Promise<Record<string, string>[]> => deadLetters(redis);

/** One series' value from a sync daemon's /metrics (0 when absent). */
async function metric(port: number, series: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.split(' ')[1]);
}

async function entries(): Promise<Map<string, any>> {
  const list = JSON.parse(await mustKubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentries', '-o', 'json'])) as { items: any[] };
  return new Map(list.items.map((i) => [i.metadata.name as string, i]));
}

beforeAll(async () => {
  ({ dataDir, redisServer, redis, hook } = await startSyncTestBed('redis'));
});

afterAll(async () => {
  await stopSyncTestBed({ dataDir, redisServer, redis, hook });
});

beforeEach(async () => {
  await redis.flushall();
  await deleteAllEntries();
  await kubectl('admin', ['-n', NAMESPACE, 'delete', 'lease', 'edge-registrar-sync', '--ignore-not-found']);
});

afterEach(async () => {
  await Promise.all(running.map((s) => s.stop()));
  running = [];
});

describe('register, re-register, retire', () => {
  it('a register becomes an entry in the fleet shape, with our markers and the stream id', async () => {
    await startSync();
    const id = await register('vps-1001', 'vps-jp-01', '103.21.244.10');
    await settled();
    const e = (await entries()).get('vps-jp-01');
    expect(e.metadata.labels).toEqual({ app: 'xrayr', country: 'jp', 'app.kubernetes.io/managed-by': 'edge-registrar' });
    expect(e.metadata.annotations).toMatchObject({ 'edge-registrar.io/vps-id': 'vps-1001', 'edge-registrar.io/stream-id': id });
    expect(e.spec).toEqual({
      address: '103.21.244.10',
      serviceAccount: 'xrayr-vm',
      labels: defaultedSpecLabels(),
    });
    const withFields = JSON.parse(await mustKubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentry', 'vps-jp-01', '-o', 'json', '--show-managed-fields']));
    expect(withFields.metadata.managedFields.map((m: { manager: string }) => m.manager)).toContain('edge-registrar-sync');
  });

  it('a re-register with a new IP updates the entry; retire removes it; retire of an unknown VPS is a no-op', async () => {
    await startSync();
    await register('vps-1001', 'vps-jp-01', '103.21.244.10');
    await register('vps-1001', 'vps-jp-01', '2606:4700:0:0:0:0:0:1111');
    await settled();
    expect((await entries()).get('vps-jp-01').spec.address).toBe('2606:4700::1111');
    await retire('vps-1001');
    await retire('vps-never-seen');
    await settled();
    expect((await entries()).size).toBe(0);
    expect(await dlq()).toEqual([]);
  });

  it('duplicate events change nothing the second time', async () => {
    await startSync();
    await register('vps-1001', 'vps-jp-01', '103.21.244.10');
    await settled();
    const before = (await entries()).get('vps-jp-01');
    await register('vps-1001', 'vps-jp-01', '103.21.244.10');
    await settled();
    const after = (await entries()).get('vps-jp-01');
    expect(after.metadata.generation).toBe(before.metadata.generation);
  });
});

/** The daemon's parts, built in the test process against the real servers, so a test can drive the timing. */
function daemonParts(): { kubeConfig: ReturnType<typeof loadKubeConfig>; storeOptions: ConstructorParameters<typeof StateStore>[1]; processor: EventProcessor } {
  const kubeConfig = loadKubeConfig(kubeconfigFor(inject('cluster'), 'sync'));
  const storeOptions = { keys: KEYS, group: 'edge-registrar', tombstoneTtlSeconds: 60, outcomeMaxLength: 1_000 };
  const processor = new EventProcessor({
    redis,
    store: new StateStore(redis, storeOptions),
    writer: new EntryWriter(kubeConfig, NAMESPACE, 'v1'),
    policy: () => DEFAULT_POLICY,
    namespace: NAMESPACE,
    istioApiVersion: 'v1',
    deadLetterMaxLength: 1_000,
    logger: createLogger('silent', 't'),
  });
  return { kubeConfig, storeOptions, processor };
}

/** A resync over the given parts, removing orphans at once unless given a grace. */
function testResyncer(store: StateStore, writer: EntryWriter, queue: KeyedQueue, orphanGraceMs = 0): Resyncer {
  return new Resyncer({ store, writer, queue, policy: () => DEFAULT_POLICY, namespace: NAMESPACE, istioApiVersion: 'v1', orphanPolicy: 'sync', orphanGraceMs, dryRun: false, logger: createLogger('silent', 't') });
}

const V9 = { event: 'register' as const, vps_id: 'v9', name: 'vps-jp-09', address: '103.21.244.9', country: 'jp' };

/** The entry another replica wrote to the cluster for event `streamId`, with nothing committed to Redis (yet). */
async function writtenByAnotherReplica(kubeConfig: ReturnType<typeof loadKubeConfig>, event: typeof V9, streamId: string): Promise<void> {
  const plan = planRegister(event, streamId, { policy: DEFAULT_POLICY, namespace: NAMESPACE, istioApiVersion: 'v1' });
  if (!plan.ok) throw new Error(plan.reason);
  await new EntryWriter(kubeConfig, NAMESPACE, 'v1').apply(plan.entry);
}

/** v9 applied at event 200-0; then the new leader wrote event 300-0 (address .30) to the cluster, its commit still to come. */
async function newLeaderWroteOver200(): Promise<EventProcessor> {
  await redis.xgroup('CREATE', STREAM, 'edge-registrar', '0', 'MKSTREAM');
  const { kubeConfig, processor } = daemonParts();
  expect((await processor.process('200-0', V9)).outcome).toBe('applied');
  await writtenByAnotherReplica(kubeConfig, { ...V9, address: '103.21.244.30' }, '300-0');
  return processor;
}

async function expectEntryAt300(): Promise<void> {
  const entry = (await entries()).get('vps-jp-09');
  expect([entry?.spec.address, entry?.metadata.annotations['edge-registrar.io/stream-id']]).toEqual(['103.21.244.30', '300-0']);
}

describe('order per VPS', () => {
  it('a redelivered older event never overwrites newer state; a stale register does not resurrect a retired VPS', async () => {
    await redis.xgroup('CREATE', STREAM, 'edge-registrar', '0', 'MKSTREAM');
    const { processor } = daemonParts();
    const first = { event: 'register', vps_id: 'v9', name: 'vps-jp-09', address: '103.21.244.9', country: 'jp' };
    const second = { ...first, address: '103.21.244.99' };
    expect((await processor.process('100-0', second)).outcome).toBe('applied');
    expect((await processor.process('99-0', first)).outcome).toBe('superseded');
    expect((await entries()).get('vps-jp-09').spec.address).toBe('103.21.244.99');
    expect((await processor.process('101-0', { event: 'retire', vps_id: 'v9' })).outcome).toBe('deleted');
    expect((await processor.process('100-5', second)).outcome).toBe('superseded');
    expect((await entries()).has('vps-jp-09')).toBe(false);
    // A genuinely newer register (the VPS came back) is applied.
    expect((await processor.process('102-0', first)).outcome).toBe('applied');
  });
});

describe('a deposed leader', () => {
  it("cannot land a late write of an older event over the entry's newer state: the webhook fences it, and the event is dropped as stale", async () => {
    const processor = await newLeaderWroteOver200();
    // The old leader's late event 250-0: Redis alone (still at 200-0) would let it through.
    expect((await processor.process('250-0', { ...V9, address: '103.21.244.25' })).outcome).toBe('superseded');
    await expectEntryAt300();
    expect(await dlq()).toEqual([]);
  });

  it("cannot delete an entry a newer event re-registered: the delete is fenced by the entry's stream id", async () => {
    const processor = await newLeaderWroteOver200();
    // The old leader's late retire 250-0.
    expect((await processor.process('250-0', { event: 'retire', vps_id: 'v9' })).outcome).toBe('superseded');
    await expectEntryAt300();
  });

  it('a late create after the retire is removed by the next resync at once, without waiting for the orphan grace', async () => {
    await redis.xgroup('CREATE', STREAM, 'edge-registrar', '0', 'MKSTREAM');
    const { kubeConfig, storeOptions, processor } = daemonParts();
    expect((await processor.process('100-0', V9)).outcome).toBe('applied');
    expect((await processor.process('300-0', { event: 'retire', vps_id: 'v9' })).outcome).toBe('deleted');
    // The deposed leader's register 200-0 lands after the retire: a create, nothing to fence.
    await writtenByAnotherReplica(kubeConfig, { ...V9, address: '103.21.244.20' }, '200-0');
    const report = await testResyncer(new StateStore(redis, storeOptions), new EntryWriter(kubeConfig, NAMESPACE, 'v1'), new KeyedQueue(), 600_000).run();
    expect([report.tombstoned, report.orphansWaiting]).toEqual([['vps-jp-09'], []]);
    expect((await entries()).has('vps-jp-09')).toBe(false);
  });

  it('an orphan with no newer tombstone still waits for the grace', async () => {
    await redis.xgroup('CREATE', STREAM, 'edge-registrar', '0', 'MKSTREAM');
    const { kubeConfig, storeOptions } = daemonParts();
    await writtenByAnotherReplica(kubeConfig, { ...V9, vps_id: 'v8', name: 'vps-jp-08', address: '103.21.244.8' }, '200-0');
    const report = await testResyncer(new StateStore(redis, storeOptions), new EntryWriter(kubeConfig, NAMESPACE, 'v1'), new KeyedQueue(), 600_000).run();
    expect([report.tombstoned, report.orphansWaiting]).toEqual([[], ['vps-jp-08']]);
  });
});

describe('bad events go to the dead-letter stream with the reason, and are acknowledged', () => {
  it.each([
    ['an unknown event type', ['event', 'reboot', 'vps_id', 'v1'], 'event.type', 'event: "reboot" is not a known event type; expected "register" or "retire"'],
    ['a missing field', ['event', 'register', 'vps_id', 'v1', 'name', 'vps-jp-01', 'country', 'jp'], 'event.schema', "address: is missing; expected the VPS's public IP address"],
    ['malformed labels', ['event', 'register', 'vps_id', 'v1', 'name', 'vps-jp-01', 'address', '103.21.244.1', 'country', 'jp', 'labels', '{oops'], 'event.schema', 'labels: "{oops" is not JSON; expected a JSON object of string values'],
    ['a private IP', ['event', 'register', 'vps_id', 'v1', 'name', 'vps-jp-01', 'address', '192.168.1.1', 'country', 'jp'], 'address.public-unicast', '192.168.0.0/16'],
    ['a bad country', ['event', 'register', 'vps_id', 'v1', 'name', 'vps-uk-01', 'address', '103.21.244.1', 'country', 'uk'], 'labels.country', 'did you mean "gb"'],
  ])('%s', async (_name, fields, rule, reason) => {
    await startSync();
    await publish(redis, STREAM, fields);
    await settled();
    const [letter] = await dlq();
    expect(letter).toMatchObject({ ...Object.fromEntries(fields.flatMap((_, i) => (i % 2 === 0 ? [[fields[i], fields[i + 1]]] : []))), dlq_rule: rule });
    expect(letter?.dlq_reason).toContain(reason);
    expect(letter?.dlq_at).toMatch(/^\d{4}-\d{2}-\d{2}T/);
    expect(await pending()).toBe(0);
    expect((await entries()).size).toBe(0);
  });

  it('an address another VPS holds, then replayed from the DLQ once the holder retired', async () => {
    await startSync();
    await register('v1', 'vps-jp-01', '103.21.244.10');
    await register('v2', 'vps-jp-02', '103.21.244.10');
    await settled();
    const [letter] = await dlq();
    expect(letter).toMatchObject({ vps_id: 'v2', dlq_rule: 'address.unique' });
    await retire('v1');
    await settled();
    const replay = spawn(process.execPath, [join(ROOT, 'src/cli.ts'), 'dlq', 'replay', '--all', '--redis-url', redisServer.url], { stdio: 'pipe' });
    expect(await new Promise((r) => replay.on('exit', r))).toBe(0);
    await settled();
    expect([...(await entries()).keys()]).toEqual(['vps-jp-02']);
    expect(await dlq()).toEqual([]);
  });

  it('the webhook refusing a write (an unmanaged entry holds the address) dead-letters with its message', async () => {
    await applyUnmanagedEntry('vps-jp-50', '103.21.244.50');
    await startSync();
    await register('v51', 'vps-jp-51', '103.21.244.50');
    await settled();
    const [letter] = await dlq();
    expect(letter?.dlq_rule).toBe('webhook.denied');
    expect(letter?.dlq_reason).toContain('[address.unique]');
  });

  it('a 2 MB name gets a bounded reason, and the original field stays whole in the dead letter', async () => {
    await startSync();
    const huge = `vps-jp-${'9'.repeat(2 * 1024 * 1024)}`;
    await publish(redis, STREAM, ['event', 'register', 'vps_id', 'v1', 'name', huge, 'address', '103.21.244.1', 'country', 'jp']);
    await settled();
    const [letter] = await dlq();
    expect(letter?.dlq_rule).toBe('event.schema');
    expect(letter?.dlq_reason?.length).toBeLessThanOrEqual(1_024);
    expect(letter?.dlq_reason).toContain('name: "vps-jp-999');
    expect(letter?.name).toBe(huge);
  });

  it('the dead-letter stream is capped, and its length exported', async () => {
    const sync = await startSync({ deadLetterMaxLength: 100, metricsRefreshMs: 200 });
    await publishMany(redis, STREAM, Array.from({ length: 1_000 }, (_, i) => ['event', 'reboot', 'vps_id', `v${i}`]));
    await settled();
    const length = await redis.xlen(deadLetterStream(STREAM));
    // MAXLEN ~ trims whole stream nodes (100 entries each by default): about the cap, never the 1,000.
    expect(length).toBeGreaterThanOrEqual(100);
    expect(length).toBeLessThan(300);
    await waitFor(async () => (await metric(sync.port, 'edge_registrar_sync_dead_letter_entries')) === length, 'the exported length to match XLEN');
  });

  it('an event that fails for no transient reason (a corrupt state record) is dead-lettered after --max-attempts with the error, not retried for ever', async () => {
    await redis.hset(KEYS.vps('v1'), 'state', 'registered', 'name', 'vps-jp-01', 'address', '103.21.244.1', 'labels', '{not json', 'stream_id', '1-0');
    await redis.sadd(KEYS.registered, 'v1');
    const sync = await startSync({ maxAttempts: 3, retryMaxMs: 100, resyncIntervalMs: 300, orphanGraceMs: 0 });
    await register('v1', 'vps-jp-01', '103.21.244.10');
    await register('v2', 'vps-jp-02', '103.21.244.20');
    await settled();
    const letters = await dlq();
    expect(letters.map((l) => [l.vps_id, l.dlq_rule])).toEqual([['v1', 'event.retries-exhausted']]);
    expect(letters[0]?.dlq_reason).toMatch(/^failed 3 times without a transient cause; last error: .*JSON/);
    expect(await metric(sync.port, 'edge_registrar_sync_retries_total{reason="unexpected"}')).toBe(2);
    expect(await metric(sync.port, 'edge_registrar_sync_dead_letters_total{rule="event.retries-exhausted"}')).toBe(1);
    expect((await entries()).has('vps-jp-02')).toBe(true);
    // The resync goes on around the corrupt record (it reports it), repairs the others, and
    // does not take the corrupt VPS's entry for an orphan.
    await mustKubectl('sync', ['apply', '-f', '-'], {
      apiVersion: 'networking.istio.io/v1',
      kind: 'WorkloadEntry',
      metadata: { name: 'vps-jp-01', namespace: NAMESPACE, labels: { app: 'xrayr', country: 'jp', 'app.kubernetes.io/managed-by': 'edge-registrar' }, annotations: { 'edge-registrar.io/vps-id': 'v1' } },
      spec: { address: '103.21.244.1', labels: { app: 'xrayr', country: 'jp' } },
    });
    await mustKubectl('breakglass', ['-n', NAMESPACE, 'delete', 'workloadentry', 'vps-jp-02']);
    await waitFor(async () => (await entries()).has('vps-jp-02'), 'the resync to restore the other VPS', 20_000);
    const corruptRuns = await metric(sync.port, 'edge_registrar_sync_resync_changes_total{action="corrupt_record"}');
    expect(corruptRuns).toBeGreaterThanOrEqual(1);
    await waitFor(async () => (await metric(sync.port, 'edge_registrar_sync_resync_changes_total{action="corrupt_record"}')) >= corruptRuns + 2, 'two more resyncs');
    expect((await entries()).has('vps-jp-01')).toBe(true);
  });
});

describe('failures', () => {
  it('webhook unavailable: retried with backoff, not acknowledged, not dead-lettered; applied when it is back', async () => {
    await startSync();
    await hook.stop();
    await register('v1', 'vps-jp-01', '103.21.244.10');
    await new Promise((r) => setTimeout(r, 1500));
    expect(await pending()).toBe(1);
    expect(await dlq()).toEqual([]);
    hook = await startRegisteredWebhook();
    await settled();
    expect((await entries()).has('vps-jp-01')).toBe(true);
  });

  it('liveness fails while a Kubernetes write hangs past the stall limit, and passes again once it is through', async () => {
    const { kubeconfig, proxy } = await kubeconfigThroughProxy(kubeconfigFor(inject('cluster'), 'sync'));
    try {
      const sync = await startSync({ kubeconfig, stallMs: 1_500 });
      const healthz = async (): Promise<[number, string]> => {
        const res = await fetch(`http://127.0.0.1:${sync.port}/healthz`);
        return [res.status, await res.text()];
      };
      await register('v1', 'vps-jp-01', '103.21.244.10');
      await settled();
      expect(await healthz()).toEqual([200, 'ok']);
      proxy.freeze();
      await register('v2', 'vps-jp-02', '103.21.244.11');
      await waitFor(async () => (await healthz())[0] === 503, 'liveness to fail', 15_000);
      expect((await healthz())[1]).toMatch(/^not alive: the consumer has made no progress for \d+ s \(1 events in flight\)/);
      // The hung write is cut by its deadline (10 s) and counted as a Kubernetes failure.
      await waitFor(async () => (await metric(sync.port, 'edge_registrar_sync_retries_total{reason="kubernetes"}')) >= 1, 'the hung write to time out', 20_000);
      proxy.thaw();
      await settled();
      expect((await entries()).has('vps-jp-02')).toBe(true);
      await waitFor(async () => (await healthz())[0] === 200, 'liveness to pass again');
    } finally {
      proxy.thaw();
      await proxy.stop();
    }
  });

  it('a scrape of /metrics is served from memory: no Redis read per VPS, and the fleet is current without a resync', async () => {
    const sync = await startSync();
    for (let i = 0; i < 20; i++) await register(`v${i}`, `vps-jp-${i + 10}`, `45.76.2.${i + 1}`);
    await settled();
    const vpsSeries = async (): Promise<number> => (await (await fetch(`http://127.0.0.1:${sync.port}/metrics`)).text()).split('\n').filter((l) => l.startsWith('edge_registrar_vps_info{')).length;
    await waitFor(async () => (await vpsSeries()) === 20, 'the 20 registered VPSs in edge_registrar_vps_info');
    const calls = async (): Promise<Record<string, number>> => {
      const stats = await redis.info('commandstats');
      const count = (command: string): number => Number(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(stats)?.[1] ?? 0);
      return { hgetall: count('hgetall'), smembers: count('smembers') };
    };
    const before = await calls();
    for (let i = 0; i < 10; i++) expect(await vpsSeries()).toBe(20);
    expect(await calls()).toEqual(before);
    await retire('v0');
    await settled();
    await waitFor(async () => (await vpsSeries()) === 19, 'the retired VPS to leave edge_registrar_vps_info');
  });

  it('Redis restarted: the daemon reconnects and carries on', async () => {
    await startSync();
    await register('v1', 'vps-jp-01', '103.21.244.10');
    await settled();
    const port = redisServer.port;
    await redisServer.stop();
    redisServer = await startRedis({ binary: await ensureRedisServer(), dataDir, port });
    await waitFor(async () => (await redis.ping().catch(() => '')) === 'PONG', 'the test client to reconnect');
    await register('v2', 'vps-jp-02', '103.21.244.11');
    await settled();
    expect([...(await entries()).keys()].sort()).toEqual(['vps-jp-01', 'vps-jp-02']);
  });

  it('killed with SIGKILL in the middle of a batch and restarted: final state exact, nothing lost, nothing twice', async () => {
    const events: string[][] = [];
    const expected = new Map<string, string>();
    for (let i = 0; i < 300; i++) {
      const vps = `v${i % 120}`;
      const name = `vps-jp-${String(i % 120).padStart(3, '0')}`;
      if (i % 7 === 3 && expected.has(name)) {
        events.push(['event', 'retire', 'vps_id', vps]);
        expected.delete(name);
      } else {
        const address = `45.76.${Math.floor(i / 200)}.${(i % 200) + 1}`;
        events.push(['event', 'register', 'vps_id', vps, 'name', name, 'address', address, 'country', 'jp']);
        expected.set(name, address);
      }
    }
    await publishMany(redis, STREAM, events);
    const start = (): ChildProcess =>
      spawn(process.execPath, [join(ROOT, 'src/cli.ts'), 'sync', '--kubeconfig', kubeconfigFor(inject('cluster'), 'sync'), '--redis-url', redisServer.url, '--port', '0', '--consumer', 'killed', '--log-level', 'silent'], { stdio: 'ignore' });
    const first = start();
    await waitFor(async () => (await entries()).size >= 20, 'some progress', 60_000);
    first.kill('SIGKILL');
    await new Promise((r) => first.on('exit', r));
    // Killed mid-way: events are left unacknowledged (pending, or not yet delivered).
    expect(await unacknowledged(redis)).toBeGreaterThan(0);
    const second = start();
    try {
      await settled(120_000);
      const actual = await entries();
      expect(new Map([...actual].map(([name, e]) => [name, e.spec.address]))).toEqual(expected);
      expect(await dlq()).toEqual([]);
    } finally {
      second.kill('SIGTERM');
      await new Promise((r) => second.on('exit', r));
    }
  }, 240_000);
});

describe('several replicas', () => {
  it('only the Lease holder applies; when it stops, the other continues', async () => {
    const a = await startSync({ consumer: 'replica-a' });
    await waitFor(async () => (await kubectl('admin', ['-n', NAMESPACE, 'get', 'lease', 'edge-registrar-sync', '-o', 'jsonpath={.spec.holderIdentity}'])).stdout === 'replica-a', 'replica-a to lead');
    await startSync({ consumer: 'replica-b' });
    for (let i = 0; i < 20; i++) await register(`v${i}`, `vps-jp-${i + 10}`, `45.76.1.${i + 1}`);
    await settled();
    const consumers = (await redis.xinfo('CONSUMERS', STREAM, 'edge-registrar')) as unknown[][];
    const seen = Object.fromEntries(consumers.map((c) => [String(c[1]), c]));
    expect(Object.keys(seen)).toEqual(['replica-a']);
    await a.stop();
    await waitFor(async () => (await kubectl('admin', ['-n', NAMESPACE, 'get', 'lease', 'edge-registrar-sync', '-o', 'jsonpath={.spec.holderIdentity}'])).stdout === 'replica-b', 'replica-b to take over');
    await register('v99', 'vps-jp-99', '45.76.1.99');
    await settled();
    expect((await entries()).size).toBe(21);
  });
});

describe('a new leader continues where the old one stopped', () => {
  it("the old leader's unfinished events are applied before newer ones, so a contested address goes by stream order", async () => {
    await redis.xgroup('CREATE', STREAM, 'edge-registrar', '0', 'MKSTREAM');
    // The old leader read these and died before acknowledging them.
    await register('v1', 'vps-jp-01', '103.21.244.10');
    await register('v2', 'vps-jp-02', '103.21.244.20');
    await redis.xreadgroup('GROUP', 'edge-registrar', 'old-leader', 'COUNT', 10, 'STREAMS', STREAM, '>');
    // Newer events: another VPS wants v1's address.
    await register('v3', 'vps-jp-03', '103.21.244.10');
    await retire('v2');
    // Stray checks are far away: only the takeover can pick the old leader's events up first.
    await startSync({ consumer: 'new-leader', strayCheckMs: 600_000 });
    await settled(20_000);
    expect(new Map([...(await entries())].map(([name, e]) => [name, e.spec.address]))).toEqual(new Map([['vps-jp-01', '103.21.244.10']]));
    const letters = await dlq();
    expect(letters.map((l) => [l.vps_id, l.dlq_rule])).toEqual([['v3', 'address.unique']]);
  });
});

describe('a restarted consumer', () => {
  it('reads all its pending pages before any new event, so a contested address goes by stream order', async () => {
    await redis.xgroup('CREATE', STREAM, 'edge-registrar', '0', 'MKSTREAM');
    // Five events this consumer read before it died; the last one is on its third page of two.
    for (let i = 1; i <= 4; i++) await register(`v${i}`, `vps-jp-0${i}`, `103.21.244.${i}`);
    await register('v5', 'vps-jp-05', '103.21.244.50');
    await redis.xreadgroup('GROUP', 'edge-registrar', 'restarted', 'COUNT', 10, 'STREAMS', STREAM, '>');
    // A newer event wants v5's address.
    await register('v6', 'vps-jp-06', '103.21.244.50');
    // Stray checks are far away: the pending pages must be read, not claimed later.
    await startSync({ consumer: 'restarted', batchSize: 2, strayCheckMs: 600_000 });
    await settled(20_000);
    expect((await entries()).get('vps-jp-05')?.spec.address).toBe('103.21.244.50');
    expect((await entries()).has('vps-jp-06')).toBe(false);
    expect((await dlq()).map((l) => [l.vps_id, l.dlq_rule])).toEqual([['v6', 'address.unique']]);
  });
});

describe('the consumer group', () => {
  it('forgets the consumers of replicas that are gone, once they hold nothing and stay silent', async () => {
    await redis.xgroup('CREATE', STREAM, 'edge-registrar', '0', 'MKSTREAM');
    await register('v1', 'vps-jp-01', '103.21.244.10');
    // Two earlier pods: one died holding an event, one never read anything.
    await redis.xreadgroup('GROUP', 'edge-registrar', 'sync-7d9f-old', 'COUNT', 10, 'STREAMS', STREAM, '>');
    await redis.xgroup('CREATECONSUMER', STREAM, 'edge-registrar', 'sync-7d9f-older');
    await startSync({ consumer: 'sync-5b2c-new', strayCheckMs: 1_000, consumerRetentionMs: 300 });
    await settled();
    expect((await entries()).has('vps-jp-01')).toBe(true);
    const names = async (): Promise<string[]> => ((await redis.xinfo('CONSUMERS', STREAM, 'edge-registrar')) as unknown[][]).map((c) => String(c[1]));
    await waitFor(async () => (await names()).join() === 'sync-5b2c-new', 'the gone consumers to be removed', 10_000);
  });
});

describe('drift repair', () => {
  it('restores a deleted or edited managed entry and removes an orphan', async () => {
    await startSync({ resyncIntervalMs: 500, orphanGraceMs: 0 });
    await register('v1', 'vps-jp-01', '103.21.244.10');
    await register('v2', 'vps-jp-02', '103.21.244.11');
    await settled();
    await mustKubectl('breakglass', ['-n', NAMESPACE, 'delete', 'workloadentry', 'vps-jp-01']);
    await mustKubectl('breakglass', ['-n', NAMESPACE, 'patch', 'workloadentry', 'vps-jp-02', '--type=merge', '-p', '{"spec":{"address":"103.21.244.12"}}']);
    await mustKubectl('sync', ['apply', '-f', '-'], {
      apiVersion: 'networking.istio.io/v1',
      kind: 'WorkloadEntry',
      metadata: { name: 'vps-jp-77', namespace: NAMESPACE, labels: { app: 'xrayr', country: 'jp', 'app.kubernetes.io/managed-by': 'edge-registrar' }, annotations: { 'edge-registrar.io/vps-id': 'gone' } },
      spec: { address: '103.21.244.77', labels: { app: 'xrayr', country: 'jp' } },
    });
    await waitFor(async () => {
      const e = await entries();
      return e.has('vps-jp-01') && e.get('vps-jp-02')?.spec.address === '103.21.244.11' && !e.has('vps-jp-77');
    }, 'resync to repair drift', 30_000);
  });

  it('a repair never overwrites an event that overtook its snapshot, nor deletes an entry registered meanwhile', async () => {
    // Found by the SIGKILL test: the resync read the desired state, the consumer then applied
    // two newer registers, and the resync wrote the old address back from its snapshot.
    await redis.xgroup('CREATE', STREAM, 'edge-registrar', '0', 'MKSTREAM');
    const { kubeConfig, storeOptions, processor } = daemonParts();
    const queue = new KeyedQueue();
    const consume = (id: string, fields: Record<string, string>): Promise<unknown> =>
      queue.run(orderingKeys({ vpsId: fields.vps_id ?? id, name: fields.name, address: fields.address }), () => processor.process(id, fields));
    const v9 = { event: 'register', vps_id: 'v9', name: 'vps-jp-09', address: '103.21.244.9', country: 'jp' };
    await consume('100-0', v9);
    // Events arrive between the resync's read of the desired state and its list of entries.
    const { promise: eventsApplied, resolve: eventsDone } = Promise.withResolvers<unknown>();
    class SnapshotThenEvents extends StateStore {
      override async registered(): ReturnType<StateStore['registered']> {
        const snapshot = await super.registered();
        eventsDone(
          Promise.all([
            consume('101-0', { ...v9, address: '103.21.244.99' }),
            consume('102-0', { event: 'register', vps_id: 'v10', name: 'vps-jp-10', address: '103.21.244.10', country: 'jp' }),
          ]),
        );
        return snapshot;
      }
    }
    class ListAfterEvents extends EntryWriter {
      override async listManaged(): ReturnType<EntryWriter['listManaged']> {
        await eventsApplied;
        return super.listManaged();
      }
    }
    const report = await testResyncer(new SnapshotThenEvents(redis, storeOptions), new ListAfterEvents(kubeConfig, NAMESPACE, 'v1'), queue).run();
    expect(report.restored).toEqual([]);
    expect(report.orphansDeleted).toEqual([]);
    expect(report.overtaken.sort()).toEqual(['vps-jp-09', 'vps-jp-10']);
    const actual = await entries();
    expect(actual.get('vps-jp-09')?.spec.address).toBe('103.21.244.99');
    expect(actual.has('vps-jp-10')).toBe(true);
    // The next resync compares against the new state and finds nothing to do.
    const again = await testResyncer(new StateStore(redis, storeOptions), new EntryWriter(kubeConfig, NAMESPACE, 'v1'), queue).run();
    expect([again.restored, again.orphansDeleted, again.overtaken]).toEqual([[], [], []]);
  });

  it('a repair the webhook refuses is reported, and the others still happen', async () => {
    await redis.xgroup('CREATE', STREAM, 'edge-registrar', '0', 'MKSTREAM');
    const { kubeConfig, storeOptions, processor } = daemonParts();
    await processor.process('100-0', { event: 'register', vps_id: 'v1', name: 'vps-jp-01', address: '103.21.244.10', country: 'jp' });
    await processor.process('101-0', { event: 'register', vps_id: 'v2', name: 'vps-jp-02', address: '103.21.244.11', country: 'jp' });
    await mustKubectl('breakglass', ['-n', NAMESPACE, 'delete', 'workloadentry', 'vps-jp-01', 'vps-jp-02']);
    // Someone's unmanaged entry now holds v1's address (once the webhook has seen it freed):
    // restoring v1 is refused (address.unique).
    const manual = {
      apiVersion: 'networking.istio.io/v1',
      kind: 'WorkloadEntry',
      metadata: { name: 'vps-jp-91', namespace: NAMESPACE, labels: { app: 'xrayr', country: 'jp' } },
      spec: { address: '103.21.244.10', labels: { app: 'xrayr', country: 'jp' } },
    };
    await waitFor(async () => (await kubectl('alice', ['apply', '-f', '-'], manual)).code === 0, 'the unmanaged entry to be admitted');
    const report = await testResyncer(new StateStore(redis, storeOptions), new EntryWriter(kubeConfig, NAMESPACE, 'v1'), new KeyedQueue()).run();
    expect(report.refused).toEqual(['vps-jp-01']);
    expect(report.restored).toEqual(['vps-jp-02']);
    const actual = await entries();
    expect([actual.has('vps-jp-01'), actual.get('vps-jp-02')?.spec.address]).toEqual([false, '103.21.244.11']);
  });

  // Under upsert-only the resync skipped even an orphan a tombstone says is gone (a deposed
  // leader's create after the VPS's retire): it stayed for good, routing to an address that
  // may since have gone to someone else.
  it('upsert-only still removes an entry its tombstone says is gone', async () => {
    const tombstoned = (await register('v79', 'vps-jp-79', '103.21.244.79'));
    await startSync({ resyncIntervalMs: 300, orphanGraceMs: 3_600_000, orphanPolicy: 'upsert-only' });
    await settled();
    await retire('v79');
    await settled();
    // A deposed leader's late create of the entry, after the retire (its stream id is older).
    await mustKubectl('sync', ['apply', '-f', '-'], {
      apiVersion: 'networking.istio.io/v1',
      kind: 'WorkloadEntry',
      metadata: { name: 'vps-jp-79', namespace: NAMESPACE, labels: { app: 'xrayr', country: 'jp', 'app.kubernetes.io/managed-by': 'edge-registrar' }, annotations: { 'edge-registrar.io/vps-id': 'v79', 'edge-registrar.io/stream-id': tombstoned } },
      spec: { address: '103.21.244.79', labels: { app: 'xrayr', country: 'jp' } },
    });
    await waitFor(async () => !(await entries()).has('vps-jp-79'), 'the tombstoned stray to be removed', 20_000);
  });

  it('upsert-only never removes orphans', async () => {
    await mustKubectl('sync', ['apply', '-f', '-'], {
      apiVersion: 'networking.istio.io/v1',
      kind: 'WorkloadEntry',
      metadata: { name: 'vps-jp-78', namespace: NAMESPACE, labels: { app: 'xrayr', country: 'jp', 'app.kubernetes.io/managed-by': 'edge-registrar' } },
      spec: { address: '103.21.244.78', labels: { app: 'xrayr', country: 'jp' } },
    });
    const sync = await startSync({ resyncIntervalMs: 300, orphanGraceMs: 0, orphanPolicy: 'upsert-only' });
    // Several resyncs have compared the cluster with the desired state and seen the orphan...
    await waitFor(async () => (await metric(sync.port, 'edge_registrar_sync_resyncs_total{outcome="completed"}')) >= 3, 'three resyncs to run');
    // ...and the orphan is still there, and no resync counted a deletion.
    expect((await entries()).has('vps-jp-78')).toBe(true);
    expect(await metric(sync.port, 'edge_registrar_sync_resync_changes_total{action="orphan_deleted"}')).toBe(0);
  });
});

describe('a failing resync', () => {
  // A failed resync was tried again every second: SMEMBERS, one HGETALL per VPS and a full
  // LIST each time, against a Redis or an API server that is already struggling.
  it('is tried again with back-off, not every second', async () => {
    // The registered set is not a set: every resync fails (WRONGTYPE) while the Lease is fine.
    await redis.set(KEYS.registered, 'not a set');
    const failures: number[] = [];
    const destination = { write: (line: string): void => { if (line.includes('resync failed; will try again')) failures.push(Date.now()); } };
    const sync = await runSync({ ...testSyncConfig(kubeconfigFor(inject('cluster'), 'sync'), redisServer.url, { resyncRetryBaseMs: 500, resyncIntervalMs: 60_000 }) }, createLogger('warn', 'sync-failing-resync', destination));
    running.push(sync);
    await waitFor(() => Promise.resolve(failures.length >= 1), 'the first resync to fail');
    const first = failures[0] ?? 0;
    await new Promise((r) => setTimeout(r, 8_000));
    const within = failures.filter((t) => t - first <= 8_000).length;
    console.error(`[resync] ${within} failed resyncs in the 8 s after the first: ${failures.map((t) => t - first).join(', ')} ms`);
    // Back-off from 0.5 s, doubling, checked once a second: at most 6 in 8 s (0, 1, 2, 3, 5, 7 s at the
    // shortest jitter); one a second would be 9.
    expect(within).toBeLessThanOrEqual(6);
    // The counter agrees with the log: read after the window, it has every failure logged up to then
    // (one more may have come since the window closed, so it is bounded by what is logged after reading).
    const counted = await metric(sync.port, 'edge_registrar_sync_resyncs_total{outcome="failed"}');
    expect(counted).toBeGreaterThanOrEqual(within);
    expect(counted).toBeLessThanOrEqual(failures.length);
  });
});

describe('backfill', () => {
  it('a few thousand VPSs go through the same path', async () => {
    const rows = Array.from({ length: 2000 }, (_, i) => ({ vps_id: `b${i}`, name: `vps-us-${i}`, address: `45.${77 + Math.floor(i / 250)}.${i % 250}.1`, country: 'us' }));
    const plan = planBackfill(JSON.stringify(rows), 'json');
    expect(plan.errors).toEqual([]);
    await startSync({ concurrency: 32 });
    const started = Date.now();
    await publishMany(redis, STREAM, plan.events);
    await settled(180_000);
    const seconds = (Date.now() - started) / 1000;
    console.error(`[backfill] 2000 VPSs applied in ${seconds.toFixed(1)}s (${(2000 / seconds).toFixed(0)} events/s)`);
    expect((await entries()).size).toBe(2000);
  }, 240_000);
});
