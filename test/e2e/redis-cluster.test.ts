/**
 * The sync daemon on a real Redis Cluster of 3 primaries and 3 replicas that the suite starts
 * itself (`redis-server --cluster-enabled yes`, joined by `redis-cli --cluster create`):
 * events applied, dead-lettered, replayed and given outcomes with every key in the stream's
 * slot; and nothing lost or wrong while the stream's primary fails over (CLUSTER FAILOVER on
 * its replica, and a SIGKILL), or while its slot moves to another primary (`redis-cli
 * --cluster reshard`, so the daemon meets MOVED and ASK).
 *
 * The producer here does what the event contract asks of sigma-api on a cluster: it waits
 * for a replica to have each XADD (WAIT 1) before counting it published, so an event it
 * publishes survives the failover of its primary. The daemon needs no such wait: what a
 * failover loses of its own writes (a commit, an acknowledgement) is a suffix of them, and
 * the events behind it are delivered again and settled again.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Cluster, type Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { hashSlot } from '../../src/redis/cluster-slot.ts';
import { daemonKeys } from '../../src/redis/keys.ts';
import { unacknowledgedEvents } from '../harness/stream-group.ts';
import { fieldsToRecord } from '../../src/sync/event.ts';
import type { RunningSync } from '../../src/sync/run.ts';
import { capture } from '../harness/capture.ts';
import { documentedCommand } from '../harness/doc-snippets.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import { RunningRedisCluster, primaryConnection } from '../harness/redis-cluster.ts';
import { runRustProducer, type ProducerRun } from '../harness/rust-producer.ts';
import { distinctFreePorts, ensureRedisServer, spawnUntilReady, stopServer } from '../harness/redis-server.ts';
import { GROUP, STREAM, startTestSync, testSyncConfig } from './sync-support.ts';
import { runSync } from '../../src/sync/run.ts';
import type { SyncConfig } from '../../src/config/sync.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { NAMESPACE, deleteAllEntries, ensureBase, kubectl, startRegisteredWebhook, waitFor, type E2EWebhook } from './support.ts';

const KEYS = daemonKeys(STREAM, NAMESPACE);
const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));
let dir: string;
let redisCluster: RunningRedisCluster;
let client: Cluster;
let hook: E2EWebhook;
let running: RunningSync[] = [];

beforeAll(async () => {
  await ensureBase();
  dir = await mkdtemp(join(tmpdir(), 'edge-registrar-redis-cluster-'));
  redisCluster = await RunningRedisCluster.start({ binary: await ensureRedisServer(), dir, nodeTimeoutMs: 2_000 });
  client = new Cluster(redisCluster.seeds, { retryDelayOnFailover: 200, retryDelayOnClusterDown: 200, retryDelayOnTryAgain: 100, slotsRefreshInterval: 1_000 });
  hook = await startRegisteredWebhook();
}, 120_000);

afterAll(async () => {
  client.disconnect();
  // Entries first: deleting them goes through the webhook.
  await deleteAllEntries();
  await hook.stop();
  await redisCluster.stop();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  await Promise.all(client.nodes('master').map((node) => node.flushall()));
  await deleteAllEntries();
});

afterEach(async () => {
  await Promise.all(running.map((s) => s.stop()));
  running = [];
});

async function startSync(credentials: { username?: string; password?: string } = {}, overrides: Partial<SyncConfig> = {}): Promise<RunningSync> {
  const base = testSyncConfig(kubeconfigFor(inject('cluster'), 'sync'), 'redis://127.0.0.1:1');
  const sync = await startTestSync({ ...base, redis: { ...base.redis, ...credentials, clusterNodes: redisCluster.seeds }, kubeEvents: { ...base.kubeEvents, enabled: false }, ...overrides });
  running.push(sync);
  return sync;
}

/** Settles within `ms` or fails: a client call during a failover must not stall the producer. */
function within<T>(ms: number, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([work, new Promise<never>((_, reject) => (timer = setTimeout(() => { reject(new Error(`no answer within ${ms} ms`)); }, ms)))]).finally(() => { clearTimeout(timer); });
}

/**
 * XADD, counted published once a replica has it too (WAIT 1), as sigma-api should on a
 * cluster: both on the connection to the primary that serves the stream, since WAIT counts
 * that connection's writes. A failed XADD is sent again; one that succeeded is waited on again,
 * never re-sent, unless a failover lost it with the old primary.
 */
async function publishDurably(fields: Record<string, string>): Promise<string> {
  for (let attempt = 0; ; attempt++) {
    try {
      const node = await primaryConnection(client, STREAM, attempt === 0 ? 'current' : 'stale');
      const id = await within(3_000, node.xadd(STREAM, '*', ...Object.entries(fields).flat()));
      if (id === null) throw new Error('XADD returned no id');
      for (let wait = 0; wait < 10; wait++) {
        if ((await within(3_000, node.wait(1, 1_000))) >= 1) return id;
        if (((await within(3_000, node.xrange(STREAM, id, id))) as unknown[]).length === 0) break;
      }
    } catch {
      // The primary is failing over or the slot moving: ask again.
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function settled(timeoutMs = 90_000): Promise<void> {
  await waitFor(async () => (await unacknowledgedEvents(client as unknown as Redis, STREAM, GROUP).catch(() => -1)) === 0, 'the stream to be consumed', timeoutMs);
}

async function outcomes(): Promise<Record<string, string>[]> {
  const rows = (await client.xrange(KEYS.outcomes, '-', '+')) as [string, string[]][];
  return rows.map(([, fields]) => fieldsToRecord(fields));
}

async function entries(): Promise<Map<string, string>> {
  const list = JSON.parse((await kubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentries', '-o', 'json'])).stdout) as { items: { metadata: { name: string }; spec: { address: string } }[] };
  return new Map(list.items.map((e) => [e.metadata.name, e.spec.address]));
}

/**
 * 80 VPSs registered, then each moved to a second address, published durably while `fault`
 * runs a third of the way in. Then: every VPS's entry at its second address (lost 0, wrong 0)
 * and exactly one outcome per published event.
 */
async function flowThrough(fault: () => Promise<unknown>): Promise<void> {
  await startSync();
  const published: string[] = [];
  const events: Record<string, string>[] = [];
  for (let i = 0; i < 80; i++) events.push({ event: 'register', vps_id: `c${i}`, name: `vps-jp-${2000 + i}`, address: `103.22.1.${i + 1}`, country: 'jp' });
  for (let i = 0; i < 80; i++) events.push({ event: 'register', vps_id: `c${i}`, name: `vps-jp-${2000 + i}`, address: `103.22.2.${i + 1}`, country: 'jp' });
  let faulted: Promise<unknown> | undefined;
  for (const [i, fields] of events.entries()) {
    if (i === Math.floor(events.length / 3)) faulted = fault();
    published.push(await publishDurably(fields));
    await new Promise((r) => setTimeout(r, 20));
  }
  await faulted;
  await settled();
  const final = await entries();
  const lost = events.slice(80).filter((e) => !final.has(e.name ?? ''));
  const wrong = events.slice(80).filter((e) => final.has(e.name ?? '') && final.get(e.name ?? '') !== e.address);
  expect({ lost: lost.length, wrong: wrong.length }).toEqual({ lost: 0, wrong: 0 });
  const perEvent = new Map<string, number>();
  for (const o of await outcomes()) perEvent.set(o.source_id ?? '', (perEvent.get(o.source_id ?? '') ?? 0) + 1);
  // Retried publishes may add duplicates of an event (sigma-api's retry); each stream entry still has exactly one outcome.
  expect(published.filter((id) => perEvent.get(id) !== 1)).toEqual([]);
  expect([...perEvent.values()].filter((n) => n !== 1)).toEqual([]);
}

describe('the sync daemon on a Redis Cluster (3 primaries, 3 replicas)', { timeout: 240_000 }, () => {
  it('applies, dead-letters, replays and gives outcomes, with every key it writes in the stream\'s slot', async () => {
    await startSync();
    const applied = await publishDurably({ event: 'register', vps_id: 'v1', name: 'vps-jp-01', address: '103.21.244.10', country: 'jp' });
    // Claims v1's address: dead-lettered (address.unique) until v1 gives it up.
    const claim = await publishDurably({ event: 'register', vps_id: 'v2', name: 'vps-jp-02', address: '103.21.244.10', country: 'jp' });
    await settled();
    expect((await entries()).get('vps-jp-01')).toBe('103.21.244.10');
    const [letter] = ((await client.xrange(KEYS.deadLetters, '-', '+')) as [string, string[]][]).map(([, f]) => fieldsToRecord(f));
    expect(letter).toMatchObject({ dlq_rule: 'address.unique', dlq_source_id: claim });
    const retire = await publishDurably({ event: 'retire', vps_id: 'v1' });
    await settled();
    const replay = await capture(process.execPath, [CLI, 'dlq', 'replay', '--all', '--redis-cluster-nodes', redisCluster.seedList]);
    expect(replay.code, replay.stderr).toBe(0);
    await settled();
    expect(await entries()).toEqual(new Map([['vps-jp-02', '103.21.244.10']]));
    const recorded = (await outcomes()).map((o) => [o.source_id === applied ? 'register v1' : o.source_id === claim ? 'claim v2' : o.source_id === retire ? 'retire v1' : `replay ${o.vps_id ?? ''}`, o.outcome]);
    expect(recorded).toEqual([['register v1', 'applied'], ['claim v2', 'dead-lettered'], ['retire v1', 'deleted'], ['replay v2', 'applied']]);
    // Every key in the cluster is in the stream's slot: no script could have been refused with CROSSSLOT.
    const owner = await redisCluster.primaryFor(STREAM);
    const inSlot = Number(await redisCluster.cli(['-p', String(owner.port), 'cluster', 'countkeysinslot', String(hashSlot(STREAM))]));
    const total = (await Promise.all(client.nodes('master').map((n) => n.dbsize()))).reduce((a, b) => a + b, 0);
    expect(inSlot).toBeGreaterThanOrEqual(6);
    expect(total).toBe(inSlot);
    const status = await capture(process.execPath, [CLI, 'status', 'v2', '--redis-cluster-nodes', redisCluster.seedList, '--kubeconfig', kubeconfigFor(inject('cluster'), 'admin')]);
    expect(status.stdout).toMatch(/outcome: +applied/);
  });

  it("the Rust producer (the redis crate's cluster support, WAIT 1 on the stream's primary): register, move, retire, a refusal and its dead letter, a swap", async () => {
    await startSync();
    const urls = redisCluster.seeds.map((s) => `redis://${s.host}:${s.port}`);
    const producer = (...args: string[]): Promise<ProducerRun> => runRustProducer(inject('rustProducer'), urls, ['--replicas', '1', ...args]);
    const registered = await producer('register', 'k1', 'vps-jp-81', '103.21.244.81', 'jp');
    expect([registered.code, registered.outcomes.map((o) => o.outcome)], registered.stderr).toEqual([0, ['applied']]);
    const moved = await producer('register', 'k1', 'vps-jp-81', '103.21.244.82', 'jp');
    expect(moved.outcomes.map((o) => o.outcome)).toEqual(['applied']);
    expect((await entries()).get('vps-jp-81')).toBe('103.21.244.82');
    const refused = await producer('register', 'k2', 'vps-jp-82', '103.21.244.82', 'jp');
    expect(refused.code).toBe(3);
    const [letter] = (await client.xrange(KEYS.deadLetters, refused.outcomes[0]?.dlq_id ?? '-', refused.outcomes[0]?.dlq_id ?? '+')) as [string, string[]][];
    expect(fieldsToRecord(letter?.[1] ?? [])).toMatchObject({ dlq_rule: 'address.unique', dlq_source_id: refused.outcomes[0]?.source_id });
    expect((await producer('register', 'k3', 'vps-jp-83', '103.21.244.83', 'jp')).code).toBe(0);
    const swapped = await producer('swap', 'k1:vps-jp-81:103.21.244.82:jp', 'k3:vps-jp-83:103.21.244.83:jp', '103.21.244.89');
    expect([swapped.code, swapped.outcomes.map((o) => o.outcome)], swapped.stderr).toEqual([0, ['applied', 'applied', 'applied']]);
    const retired = await producer('retire', 'k3');
    expect(retired.outcomes.map((o) => o.outcome)).toEqual(['deleted']);
    expect(await entries()).toEqual(new Map([['vps-jp-81', '103.21.244.83']]));
    // Each printed outcome is the record the daemon wrote: one per event, the same kind.
    const byId = new Map((await outcomes()).map((o) => [o.source_id, o.outcome]));
    for (const printed of [registered, moved, refused, swapped, retired].flatMap((r) => r.outcomes)) expect([printed.source_id, byId.get(printed.source_id)]).toEqual([printed.source_id, printed.outcome]);
  });

  it('migrate-keys on a cluster has nothing to move and says so, instead of a cross-slot refusal', async () => {
    const migrated = await capture(process.execPath, [CLI, 'migrate-keys', '--redis-cluster-nodes', redisCluster.seedList]);
    expect(migrated.code, migrated.stderr).toBe(0);
    expect(migrated.stderr).toContain('moved 0 state record(s), 0 attempt count(s) and 0 dead letter(s)');
  });

  it('runs under the documented ACL user, set on every node (the cluster client also reads the slot map)', async () => {
    const acl = documentedCommand(fileURLToPath(new URL('../../docs/operating.md', import.meta.url)), 'redis-cli ACL SETUSER edge-registrar ').slice(1).map((w) => (w === '>PASSWORD' ? '>acl-pass' : w));
    for (const node of await redisCluster.view()) expect(await redisCluster.cli(['-p', String(node.port), ...acl])).toContain('OK');
    await startSync({ username: 'edge-registrar', password: 'acl-pass' });
    await publishDurably({ event: 'register', vps_id: 'v7', name: 'vps-jp-07', address: '103.21.244.17', country: 'jp' });
    await publishDurably({ event: 'reboot', vps_id: 'v8' });
    await settled();
    expect((await entries()).get('vps-jp-07')).toBe('103.21.244.17');
    const letters = ((await client.xrange(KEYS.deadLetters, '-', '+')) as [string, string[]][]).map(([, f]) => fieldsToRecord(f));
    expect(letters.map((l) => l.dlq_rule)).toEqual(['event.type']);
    expect((await outcomes()).map((o) => o.outcome).sort()).toEqual(['applied', 'dead-lettered']);
  });

  // ioredis's Cluster resolves connect() only on "ready"; when its ready check finds the cluster
  // down it reconnects with a new promise and drops the first, so a daemon started then waited
  // for good, unready and silent.
  it('a daemon started against a cluster that is down exits with the reason instead of waiting for good', async () => {
    const [port = 0, busPort = 0] = await distinctFreePorts(2);
    const binary = await ensureRedisServer();
    const cli = binary.replace(/redis-server$/, 'redis-cli');
    // A cluster node with no slots: CLUSTER INFO says cluster_state:fail.
    const lone = await spawnUntilReady(binary, ['--bind', '127.0.0.1', '--port', String(port), '--cluster-port', String(busPort), '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, `lone-${port}.conf`), '--save', '', '--appendonly', 'no'], 'the lone cluster node did not start', async () => (await capture(cli, ['-p', String(port), 'ping'])).stdout.trim() === 'PONG');
    try {
      const base = testSyncConfig(kubeconfigFor(inject('cluster'), 'sync'), 'redis://127.0.0.1:1');
      const started = Date.now();
      await expect(startTestSync({ ...base, redis: { ...base.redis, clusterNodes: [{ host: '127.0.0.1', port }] }, redisStartDeadlineMs: 2_000 })).rejects.toThrow(/Redis \(the commands connection\): not connected and ready within 2 s/);
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await stopServer(lone);
    }
  });

  it('CLUSTER FAILOVER of the stream\'s primary while events flow: lost 0, wrong 0, one outcome per event', async () => {
    let moved = 0;
    await flowThrough(async () => {
      const before = (await redisCluster.primaryFor(STREAM)).port;
      const after = await redisCluster.failover(STREAM);
      moved = Number(before !== after);
    });
    expect(moved).toBe(1);
  });

  it('SIGKILL of the stream\'s primary while events flow (its replica promoted): lost 0, wrong 0, one outcome per event', async () => {
    let killed = 0;
    await flowThrough(async () => {
      [killed] = await redisCluster.killPrimary(STREAM);
      // The killed node restarts, as its pod would, and comes back as a replica of the new
      // primary: until then the shard has no replica, and a producer that waits for one
      // (WAIT 1) cannot count anything published.
      await redisCluster.startNode(killed);
    });
    await redisCluster.waitHealthy(60_000);
    expect((await redisCluster.view()).find((n) => n.port === killed)?.role).toBe('slave');
  });

  it("the stream's slot held half-way through a migration (ASK): the daemon reads where the stream is, cuts no read, and applies what is published meanwhile", async () => {
    const lines: { level: string; msg: string; time: string }[] = [];
    const base = testSyncConfig(kubeconfigFor(inject('cluster'), 'sync'), 'redis://127.0.0.1:1');
    const sync = await runSync({ ...base, redis: { ...base.redis, clusterNodes: redisCluster.seeds }, kubeEvents: { ...base.kubeEvents, enabled: false } }, createLogger('info', 'sync-ask', { write: (line: string) => { lines.push(JSON.parse(line) as (typeof lines)[number]); } }));
    running.push(sync);
    // VPSs registered before: during a migration Redis refuses (TRYAGAIN) a script whose keys are
    // split between the nodes or not created yet, so what can be applied meanwhile is moves.
    for (let i = 1; i <= 30; i++) await publishDurably({ event: 'register', vps_id: `m${i}`, name: `vps-jp-${900 + i}`, address: `103.21.245.${i}`, country: 'jp' });
    await settled();
    let window = { from: 0, to: 0 };
    const published: string[] = [];
    await redisCluster.holdSlotMigrating(STREAM, async () => {
      window.from = Date.now();
      // A producer on a Cluster client follows ASK too: published straight to the node the stream is moving to.
      for (let i = 1; i <= 30; i++) published.push(String(await client.xadd(STREAM, '*', 'event', 'register', 'vps_id', `m${i}`, 'name', `vps-jp-${900 + i}`, 'address', `103.21.245.${100 + i}`, 'country', 'jp')));
      await waitFor(async () => (await outcomes()).filter((o) => published.includes(o.source_id ?? '')).length === published.length, 'every event published during the migration to be applied during it', 60_000).catch((error: unknown) => {
        throw new Error(`${String(error)}; the daemon said:\n${lines.filter((l) => l.level !== 'debug').slice(-40).map((l) => `${l.level} ${l.msg} ${JSON.stringify(l)}`.slice(0, 400)).join('\n')}`);
      });
      window = { ...window, to: Date.now() };
    });
    const during = lines.filter((l) => Date.parse(l.time) >= window.from && Date.parse(l.time) <= window.to);
    const seconds = (window.to - window.from) / 1000;
    const warned = during.filter((l) => ["warn", "error", "fatal"].includes(l.level)).map((l) => `${l.msg} ${JSON.stringify((l as { err?: unknown }).err ?? (l as { reason?: unknown }).reason ?? "")}`);
    console.error(`[redis-cluster] ASK window: ${published.length} events published and applied in ${seconds.toFixed(2)} s (${(published.length / seconds).toFixed(1)} events/s); log lines in the window: ${during.length}, warn or worse: ${warned.length} (${warned.join("; ")})`);
    // The read blocked on the source when the stream moved away is ended by Redis (UNBLOCKED):
    // that one is cut. None is cut by ASK: each is followed to where the stream is.
    const cuts = during.filter((l) => l.msg.startsWith('stream read cut')).map((l) => (l as { reason?: string }).reason ?? '');
    expect(cuts.filter((reason) => !reason.includes('UNBLOCKED'))).toEqual([]);
    expect(cuts.length).toBeLessThanOrEqual(1);
    expect(lines.filter((l) => l.msg.startsWith("the stream's slot is migrating"))).toHaveLength(1);
    const final = await entries();
    for (let i = 1; i <= 30; i++) expect(final.get(`vps-jp-${900 + i}`)).toBe(`103.21.245.${100 + i}`);
  });

  /**
   * A failover that loses what the primary had not replicated, with the daemon settling a
   * backlog on the primary alone (its replica paused): what was settled and lost is applied
   * again, so those events get a second outcome. Returns what came of the 40 events.
   */
  async function failoverLosingWrites(commitReplicas: SyncConfig['commitReplicas']): Promise<{ settledUnreplicated: number; duplicated: number; lost: number; wrong: number; untrue: string[] }> {
    await startSync({}, { commitReplicas, concurrency: 4 });
    // The webhook down (failurePolicy Fail): the daemon reads the events and retries their writes, settling none.
    await hook.stop();
    const published: { id: string; vpsId: string; name: string; address: string }[] = [];
    for (let i = 0; i < 40; i++) {
      const event = { event: 'register', vps_id: `f${i}`, name: `vps-jp-${1000 + i}`, address: `103.21.246.${i + 1}`, country: 'jp' };
      published.push({ id: await publishDurably(event), vpsId: event.vps_id, name: event.name, address: event.address });
    }
    let settledUnreplicated = 0;
    await redisCluster.failoverLosingWrites(STREAM, async (primaryPort) => {
      // The webhook back while the replica is paused: the daemon settles on the primary alone.
      hook = await startRegisteredWebhook();
      await new Promise((r) => setTimeout(r, 3_000));
      // What the primary holds now and its replica does not: the outcomes written meanwhile.
      settledUnreplicated = Number(await redisCluster.cli(['-p', String(primaryPort), 'xlen', KEYS.outcomes]));
    });
    await settled();
    const perEvent = new Map<string, string[]>();
    for (const o of await outcomes()) perEvent.set(o.source_id ?? '', [...(perEvent.get(o.source_id ?? '') ?? []), o.outcome ?? '']);
    const final = await entries();
    await Promise.all(running.map((r) => r.stop()));
    running = [];
    return {
      settledUnreplicated,
      duplicated: published.filter((e) => (perEvent.get(e.id) ?? []).length > 1).length,
      lost: published.filter((e) => !final.has(e.name)).length,
      wrong: published.filter((e) => final.has(e.name) && final.get(e.name) !== e.address).length,
      untrue: published.flatMap((e) => ((perEvent.get(e.id) ?? []).every((o) => o === 'applied') && (perEvent.get(e.id) ?? []).length > 0 ? [] : [`${e.id}: ${(perEvent.get(e.id) ?? ['none']).join(',')}`])),
    };
  }

  it('a failover that loses unreplicated writes: with WAIT (--commit-replicas auto) at most --concurrency events settle unreplicated and get a second outcome; nothing lost or wrong either way', async () => {
    const waiting = await failoverLosingWrites('auto');
    await Promise.all(client.nodes('master').map((node) => node.flushall()));
    await deleteAllEntries();
    const notWaiting = await failoverLosingWrites(0);
    console.error(`[redis-cluster] failover losing unreplicated writes, 40 events, concurrency 4: with --commit-replicas auto ${waiting.settledUnreplicated} settled unreplicated, ${waiting.duplicated} with a second outcome; with --commit-replicas 0 ${notWaiting.settledUnreplicated} and ${notWaiting.duplicated}`);
    for (const run of [waiting, notWaiting]) expect({ lost: run.lost, wrong: run.wrong, untrue: run.untrue }).toEqual({ lost: 0, wrong: 0, untrue: [] });
    expect(waiting.settledUnreplicated).toBeLessThanOrEqual(4);
    expect(waiting.duplicated).toBeLessThanOrEqual(4);
  });

  it('the stream\'s slot resharded to another primary while events flow (MOVED and ASK): lost 0, wrong 0, one outcome per event', async () => {
    let from = 0;
    let to = 0;
    await flowThrough(async () => {
      from = (await redisCluster.primaryFor(STREAM)).port;
      to = await redisCluster.reshard(STREAM);
    });
    expect(to).not.toBe(from);
    expect((await redisCluster.primaryFor(STREAM)).port).toBe(to);
  });
});
