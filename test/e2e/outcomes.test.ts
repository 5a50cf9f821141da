/**
 * The outcome stream, as sigma-api reads it, against the real stack (redis-server, the API
 * server with Istio's CRDs, the registered webhook, the sync daemon): one record per
 * acknowledged event, of each kind; exactly one across a daemon that dies between its
 * Kubernetes write and its acknowledgement, and across a dead-letter replay; and the cap.
 */
import { describe, expect, inject, it } from 'vitest';
import { loadKubeConfig } from '../../src/kube/client.ts';
import { DEFAULT_POLICY } from '../../src/policy/policy-file.ts';
import { daemonKeys } from '../../src/redis/keys.ts';
import { attemptCount } from '../../src/sync/attempt-log.ts';
import { EntryWriter } from '../../src/sync/entry-writer.ts';
import { fieldsToRecord } from '../../src/sync/event.ts';
import { outcomeRecordSchema } from '../../src/sync/outcome.ts';
import { EventProcessor } from '../../src/sync/processor.ts';
import { StateStore } from '../../src/sync/state-store.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import { GROUP, STREAM, publishRegister, publishRetire, settled, testSyncConfig, useSyncTestBed, type SyncTestBed } from './sync-support.ts';
import { NAMESPACE, kubectl, waitFor } from './support.ts';
import { capture } from '../harness/capture.ts';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';

const KEYS = daemonKeys(STREAM, NAMESPACE);
const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));
let bed: SyncTestBed;
const startSync = useSyncTestBed('outcomes', (started) => {
  bed = started;
});

/** Every outcome record, parsed with the published schema (a record that does not fit fails the test). */
async function outcomes(): Promise<ReturnType<typeof outcomeRecordSchema.parse>[]> {
  const rows = (await bed.redis.xrange(KEYS.outcomes, '-', '+')) as [string, string[]][];
  return rows.map(([, fields]) => outcomeRecordSchema.parse(fieldsToRecord(fields)));
}

describe('an outcome for every event', () => {
  it('records each kind, once, keyed by the source id: applied, deleted, unchanged, superseded, dead-lettered, trimmed', async () => {
    // trimmed: an entry a dead replica held, deleted from the stream before anyone applied it.
    await bed.redis.xgroup('CREATE', STREAM, GROUP, '0', 'MKSTREAM');
    const trimmed = String(await bed.redis.xadd(STREAM, '*', 'event', 'register', 'vps_id', 'v9', 'name', 'vps-jp-09', 'address', '103.21.244.9', 'country', 'jp'));
    await bed.redis.xreadgroup('GROUP', GROUP, 'dead-replica', 'COUNT', 10, 'STREAMS', STREAM, '>');
    await bed.redis.xdel(STREAM, trimmed);
    // superseded: the VPS's state is from a newer event than this one.
    await bed.redis.hset(KEYS.vps('v7'), 'state', 'retired', 'name', 'vps-jp-07', 'address', '', 'country', 'jp', 'labels', '{}', 'stream_id', '99999999999999-0');
    await startSync();
    const applied = await publishRegister(bed.redis, 'v1', 'vps-jp-01', '103.21.244.10');
    await settled(bed.redis);
    const deleted = await publishRetire(bed.redis, 'v1');
    const unchanged = await publishRetire(bed.redis, 'v2');
    const superseded = await publishRegister(bed.redis, 'v7', 'vps-jp-07', '103.21.244.70');
    const deadLettered = await publishRegister(bed.redis, 'v3', 'vps-jp-03', '10.0.0.3');
    await settled(bed.redis);
    await waitFor(async () => (await outcomes()).length >= 6, 'six outcomes').catch(async (error: unknown) => {
      throw new Error(`${String(error)}: ${JSON.stringify(await outcomes())}`);
    });
    const byId = new Map((await outcomes()).map((o) => [o.source_id, o]));
    expect(byId.size).toBe(6);
    expect(byId.get(applied)).toMatchObject({ outcome: 'applied', vps_id: 'v1', event: 'register', name: 'vps-jp-01' });
    expect(byId.get(deleted)).toMatchObject({ outcome: 'deleted', vps_id: 'v1', event: 'retire', name: 'vps-jp-01' });
    expect(byId.get(unchanged)).toMatchObject({ outcome: 'unchanged', vps_id: 'v2', event: 'retire', reason: 'no entry of VPS v2 to remove' });
    expect(byId.get(superseded)).toMatchObject({ outcome: 'superseded', vps_id: 'v7', reason: 'the state of a newer event (99999999999999-0) is applied' });
    expect(byId.get(deadLettered)).toMatchObject({ outcome: 'dead-lettered', vps_id: 'v3', rule: 'address.public-unicast', reason: expect.stringContaining('"10.0.0.3" is in the private (RFC 1918) range 10.0.0.0/8') });
    expect(byId.get(trimmed)).toMatchObject({ outcome: 'trimmed' });
    for (const record of byId.values()) expect(Date.parse(record.at)).toBeGreaterThan(Date.now() - 120_000);
  });

  // The outcome is written by the script that acknowledges, and only when that XACK
  // acknowledged: a daemon that dies after its Kubernetes write and before the commit leaves
  // the event pending with no outcome, and the next leader's commit records exactly one.
  it('exactly one outcome for an event whose daemon died between the write and the acknowledgement', async () => {
    await bed.redis.xgroup('CREATE', STREAM, GROUP, '0', 'MKSTREAM');
    const id = await publishRegister(bed.redis, 'v4', 'vps-jp-04', '103.21.244.40');
    await bed.redis.xreadgroup('GROUP', GROUP, 'dying', 'COUNT', 10, 'STREAMS', STREAM, '>');
    // The dying daemon: writes the entry, and dies before it commits (the commit never runs).
    const kubeConfig = loadKubeConfig(kubeconfigFor(inject('cluster'), 'sync'));
    const dies = new Error('SIGKILL');
    class DyingStore extends StateStore {
      override commit(): Promise<never> {
        return Promise.reject(dies);
      }
    }
    const store = new DyingStore(bed.redis, { keys: KEYS, group: GROUP, tombstoneTtlSeconds: 60, outcomeMaxLength: 1_000 });
    const writer = new EntryWriter(kubeConfig, NAMESPACE, 'v1');
    const dying = new EventProcessor({ redis: bed.redis, store, writer, policy: () => DEFAULT_POLICY, namespace: NAMESPACE, istioApiVersion: 'v1', deadLetterMaxLength: 1_000, logger: createLogger('silent', 't') });
    const [, fields] = ((await bed.redis.xrange(STREAM, id, id)) as [string, string[]][])[0] ?? ['', []];
    await expect(dying.process(id, fieldsToRecord(fields))).rejects.toBe(dies);
    expect((await kubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentry', 'vps-jp-04'])).code).toBe(0);
    expect(await outcomes()).toEqual([]);
    // The next leader takes it over and applies it again (idempotent): one outcome.
    await startSync();
    await settled(bed.redis);
    await waitFor(async () => (await outcomes()).length > 0, 'the outcome');
    const records = (await outcomes()).filter((o) => o.source_id === id);
    expect(records.map((o) => o.outcome)).toEqual(['applied']);
  });

  it('exactly one outcome per event across a dead-letter replay: the original dead-lettered, the replay applied', async () => {
    // Invalid as published (no country); replayed after the producer is fixed, here by hand.
    const original = String(await bed.redis.xadd(STREAM, '*', 'event', 'register', 'vps_id', 'v5', 'name', 'vps-jp-05', 'address', '103.21.244.50'));
    await startSync();
    await settled(bed.redis);
    const [[letterId, letter] = ['', []]] = (await bed.redis.xrange(KEYS.deadLetters, '-', '+')) as [string, string[]][];
    expect(fieldsToRecord(letter).dlq_rule).toBe('event.schema');
    await bed.redis.multi().xadd(KEYS.deadLetters, '*', ...letter, 'country', 'jp').xdel(KEYS.deadLetters, letterId).exec();
    const replay = await capture(process.execPath, [CLI, 'dlq', 'replay', '--all', '--redis-url', bed.redisServer.url]);
    expect(replay.code).toBe(0);
    await settled(bed.redis);
    await waitFor(async () => (await outcomes()).length >= 2, 'two outcomes');
    const all = await outcomes();
    expect(all.map((o) => [o.source_id === original ? 'original' : 'replay', o.outcome])).toEqual([['original', 'dead-lettered'], ['replay', 'applied']]);
  });

  it('is capped near --outcome-max-length, and its length is exported', async () => {
    const sync = await startSync({ outcomeMaxLength: 100, metricsRefreshMs: 200 });
    const pipeline = bed.redis.pipeline();
    for (let i = 0; i < 1_000; i++) pipeline.xadd(STREAM, '*', 'event', 'retire', 'vps_id', `gone-${i}`);
    await pipeline.exec();
    await settled(bed.redis, 120_000);
    const length = await bed.redis.xlen(KEYS.outcomes);
    // MAXLEN ~ trims whole stream nodes (100 entries each by default): at most one node over.
    expect(length).toBeGreaterThanOrEqual(100);
    expect(length).toBeLessThanOrEqual(200);
    await waitFor(async () => (await (await fetch(`http://127.0.0.1:${sync.port}/metrics`)).text()).includes(`edge_registrar_sync_outcome_entries ${length}`), 'the exported length to match XLEN');
  });

  it('edge-registrar status shows one VPS: desired state, entry, last outcome with its stream id, and whether the Telemetry attributes it', async () => {
    const sync = await startSync({ telemetry: { ...testSyncConfig('', '').telemetry, enabled: true, coalesceMs: 100 } });
    const id = await publishRegister(bed.redis, 'v6', 'vps-jp-06', '103.21.244.60');
    await settled(bed.redis);
    await waitFor(async () => (await (await fetch(`http://127.0.0.1:${sync.port}/metrics`)).text()).includes('edge_registrar_telemetry_vps 1'), 'the Telemetry to map the VPS');
    const args = [CLI, 'status', 'v6', '--redis-url', bed.redisServer.url, '--kubeconfig', kubeconfigFor(inject('cluster'), 'admin'), '--telemetry'];
    const json = await capture(process.execPath, [...args, '--output', 'json']);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({
      vpsId: 'v6',
      desired: { state: 'registered', name: 'vps-jp-06', address: '103.21.244.60', streamId: id },
      entry: { exists: true, name: 'vps-jp-06', address: '103.21.244.60', managed: true, streamId: id, inStep: true },
      lastOutcome: { source_id: id, outcome: 'applied' },
      telemetry: { checked: true, attributed: true, name: 'istio-system/edge-registrar-vps' },
    });
    const text = await capture(process.execPath, args);
    expect(text.stdout).toContain(`outcome:   applied (event ${id}, register`);
    expect(text.stdout).toContain('telemetry: attributed in istio-system/edge-registrar-vps: tag vps maps 103.21.244.60 to vps-jp-06');
    // A VPS nobody has heard of: said so, exit 1.
    const unknown = await capture(process.execPath, [CLI, 'status', 'v-none', '--redis-url', bed.redisServer.url, '--kubeconfig', kubeconfigFor(inject('cluster'), 'admin')]);
    expect([unknown.code, unknown.stdout]).toEqual([1, expect.stringContaining('desired:   unknown to edge-registrar')]);
    await kubectl('admin', ['-n', 'istio-system', 'delete', 'telemetry', 'edge-registrar-vps', '--ignore-not-found']);
  });
});

describe("a commit whose reply was lost is the event's own, not a newer one's", () => {
  // ioredis re-sends a commit it never heard back about after a reconnect, and after the 5 s
  // command timeout the daemon tries the event again: either way the commit has run, and the
  // event was reported superseded, its fleet update and its Applied Event skipped.
  it('the retry after a timed-out commit reports applied, updates the fleet and writes the Event; one outcome', async () => {
    await bed.redis.xgroup('CREATE', STREAM, GROUP, '0', 'MKSTREAM');
    const id = await publishRegister(bed.redis, 'v11', 'vps-jp-11', '103.21.244.111');
    await bed.redis.xreadgroup('GROUP', GROUP, 'test', 'COUNT', 10, 'STREAMS', STREAM, '>');
    let replyLost = true;
    class ReplyLostStore extends StateStore {
      override async commit(...args: Parameters<StateStore['commit']>): ReturnType<StateStore['commit']> {
        const result = await super.commit(...args);
        if (!replyLost) return result;
        replyLost = false;
        throw new Error('Command timed out');
      }
    }
    const store = new ReplyLostStore(bed.redis, { keys: KEYS, group: GROUP, tombstoneTtlSeconds: 60, outcomeMaxLength: 1_000 });
    const committed: string[] = [];
    const recorded: string[] = [];
    const processor = new EventProcessor({
      redis: bed.redis, store, writer: new EntryWriter(loadKubeConfig(kubeconfigFor(inject('cluster'), 'sync')), NAMESPACE, 'v1'),
      policy: () => DEFAULT_POLICY, namespace: NAMESPACE, istioApiVersion: 'v1', deadLetterMaxLength: 1_000, logger: createLogger('silent', 't'),
      onCommitted: (record) => { committed.push(`${record.vpsId} ${record.streamId}`); },
      events: { record: (occurrence) => { recorded.push(occurrence.reason); } },
    });
    const [, fields] = ((await bed.redis.xrange(STREAM, id, id)) as [string, string[]][])[0] ?? ['', []];
    await expect(processor.process(id, fieldsToRecord(fields))).rejects.toThrow(/timed out/);
    expect(await processor.process(id, fieldsToRecord(fields))).toMatchObject({ outcome: 'applied', vpsId: 'v11' });
    expect(committed).toEqual([`v11 ${id}`]);
    expect(recorded).toEqual(['Applied']);
    expect((await outcomes()).filter((o) => o.source_id === id).map((o) => o.outcome)).toEqual(['applied']);
  });

  it('the same commit run twice (re-sent after a reconnect) says so, not stale', async () => {
    const store = new StateStore(bed.redis, { keys: KEYS, group: GROUP, tombstoneTtlSeconds: 60, outcomeMaxLength: 1_000 });
    const record = { vpsId: 'v12', state: 'registered' as const, name: 'vps-jp-12', address: '103.21.244.112', country: 'jp', labels: {}, streamId: '1796378400000-0', updatedAt: new Date().toISOString() };
    const outcome = { source_id: '1796378400000-0', outcome: 'applied' as const, at: new Date().toISOString() };
    expect(await store.commit(record, outcome)).toBe('ok');
    expect(await store.commit(record, outcome)).toBe('again');
    // A different state under the same id is no copy of this commit: it is stale.
    expect(await store.commit({ ...record, address: '103.21.244.113' }, outcome)).toBe('stale');
  });
});

/** Every index entry and registered-set member is what the records say, and nothing else is there. */
async function indexesMatchRecords(): Promise<{ addresses: Record<string, string>; names: Record<string, string>; registered: string[]; fromRecords: { addresses: Record<string, string>; names: Record<string, string>; registered: string[] } }> {
  const fromRecords = { addresses: {} as Record<string, string>, names: {} as Record<string, string>, registered: [] as string[] };
  for (const key of await bed.redis.keys(`${KEYS.vps('')}*`)) {
    const record = await bed.redis.hgetall(key);
    if (record.state !== 'registered') continue;
    const vpsId = key.slice(KEYS.vps('').length);
    fromRecords.addresses[record.address ?? ''] = vpsId;
    fromRecords.names[record.name ?? ''] = vpsId;
    fromRecords.registered.push(vpsId);
  }
  fromRecords.registered.sort();
  return { addresses: await bed.redis.hgetall(KEYS.addresses), names: await bed.redis.hgetall(KEYS.names), registered: (await bed.redis.smembers(KEYS.registered)).sort(), fromRecords };
}

describe('the indexes are a function of the records', () => {
  it('a resync repairs index entries that disagree with the records, and counts them', async () => {
    const sync = await startSync({ resyncIntervalMs: 1_000, metricsRefreshMs: 200 });
    await publishRegister(bed.redis, 'v13', 'vps-jp-13', '103.21.244.113');
    await publishRegister(bed.redis, 'v14', 'vps-jp-14', '103.21.244.114');
    await settled(bed.redis);
    // Damage of every kind: a stale address, a missing name, a retired VPS in the set.
    await bed.redis.hset(KEYS.addresses, '103.21.244.200', 'v13');
    await bed.redis.hdel(KEYS.names, 'vps-jp-14');
    await bed.redis.sadd(KEYS.registered, 'v-gone');
    await waitFor(async () => {
      const { fromRecords, ...now } = await indexesMatchRecords();
      return isDeepStrictEqual(now, fromRecords);
    }, 'the resync to repair the indexes', 20_000).catch(async (error: unknown) => { throw new Error(`${String(error)}: ${JSON.stringify(await indexesMatchRecords())}`); });
    await waitFor(async () => /edge_registrar_sync_resync_changes_total\{action="index_repaired"\} 3/.test(await (await fetch(`http://127.0.0.1:${sync.port}/metrics`)).text()), 'the repairs to be counted');
  });
});

describe('keys moved into the stream\'s hash slot', () => {
  // Before, the state lived under edge-registrar:<namespace>: and the dead letters in
  // <stream>:dlq: names Redis Cluster cannot serve from one script.
  it('an install with its keys under the old names comes up with nothing lost: registered VPSs, tombstones (with their time to live), attempt counts, dead letters', async () => {
    const old = (suffix: string): string => `edge-registrar:${NAMESPACE}:${suffix}`;
    await bed.redis.xgroup('CREATE', STREAM, GROUP, '0', 'MKSTREAM');
    // What an older daemon left: v1 registered (its entry in the cluster), v2 retired (a tombstone), a dead letter.
    const registered = await publishRegister(bed.redis, 'v1', 'vps-jp-01', '103.21.244.10');
    await bed.redis.hset(old('vps:v1'), 'state', 'registered', 'name', 'vps-jp-01', 'address', '103.21.244.10', 'country', 'jp', 'labels', '{}', 'stream_id', registered, 'updated_at', new Date().toISOString());
    await bed.redis.hset(old('addresses'), '103.21.244.10', 'v1');
    await bed.redis.hset(old('names'), 'vps-jp-01', 'v1');
    await bed.redis.sadd(old('registered'), 'v1');
    await bed.redis.hset(old('vps:v2'), 'state', 'retired', 'name', 'vps-jp-02', 'address', '103.21.244.20', 'country', 'jp', 'labels', '{}', 'stream_id', '1-0');
    await bed.redis.expire(old('vps:v2'), 3600);
    await bed.redis.hset(old('attempts'), '1-5', '2');
    await bed.redis.xadd(`${STREAM}:dlq`, '*', 'event', 'register', 'vps_id', 'bad', 'dlq_rule', 'event.schema', 'dlq_reason', 'country: is missing');
    // One letter already under the new name (a newer daemon ran once): the old ones join it, once each.
    await bed.redis.xadd(KEYS.deadLetters, '*', 'event', 'reboot', 'vps_id', 'already-moved', 'dlq_rule', 'event.type', 'dlq_reason', 'unknown event type');
    await bed.redis.xgroup('SETID', STREAM, GROUP, '$');
    await startSync();
    await waitFor(async () => (await bed.redis.exists(old('vps:v1'), old('vps:v2'), old('attempts'), `${STREAM}:dlq`)) === 0, 'the old keys to be gone');
    expect(await bed.redis.hgetall(KEYS.vps('v1'))).toMatchObject({ state: 'registered', stream_id: registered });
    expect(await bed.redis.smembers(KEYS.registered)).toEqual(['v1']);
    expect(await bed.redis.hget(KEYS.addresses, '103.21.244.10')).toBe('v1');
    expect(await bed.redis.hget(KEYS.vps('v2'), 'state')).toBe('retired');
    expect(await bed.redis.ttl(KEYS.vps('v2'))).toBeGreaterThan(3500);
    expect(attemptCount(await bed.redis.hget(KEYS.attempts, '1-5'))).toBe(2);
    expect((await bed.redis.xrange(KEYS.deadLetters, '-', '+')).map(([, f]) => fieldsToRecord(f).vps_id)).toEqual(['already-moved', 'bad']);
    // The daemon works from them: a late register of the retired VPS stays retired; the registered one moves.
    await publishRegister(bed.redis, 'v1', 'vps-jp-01', '103.21.244.11');
    await settled(bed.redis);
    await waitFor(async () => (await kubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentry', 'vps-jp-01', '-o', 'jsonpath={.spec.address}'])).stdout === '103.21.244.11', 'the moved entry');
    expect(await bed.redis.hget(KEYS.addresses, '103.21.244.11')).toBe('v1');
    expect(await bed.redis.hget(KEYS.addresses, '103.21.244.10')).toBeNull();
  });

  it('a legacy record newer than the one under the new keys replaces it, and the indexes end as a function of the records', async () => {
    const old = (suffix: string): string => `edge-registrar:${NAMESPACE}:${suffix}`;
    // New keys: x at 1.1.1.1 / name-a (5-0); the legacy keys: x at 2.2.2.2 / name-b (7-0), and
    // a legacy tombstone of y (9-0) newer than y registered under the new keys (6-0).
    await bed.redis.hset(KEYS.vps('x'), 'state', 'registered', 'name', 'vps-jp-21', 'address', '1.1.1.1', 'country', 'jp', 'labels', '{}', 'stream_id', '5-0');
    await bed.redis.hset(KEYS.addresses, '1.1.1.1', 'x');
    await bed.redis.hset(KEYS.names, 'vps-jp-21', 'x');
    await bed.redis.hset(KEYS.vps('y'), 'state', 'registered', 'name', 'vps-jp-23', 'address', '3.3.3.3', 'country', 'jp', 'labels', '{}', 'stream_id', '6-0');
    await bed.redis.hset(KEYS.addresses, '3.3.3.3', 'y');
    await bed.redis.hset(KEYS.names, 'vps-jp-23', 'y');
    await bed.redis.sadd(KEYS.registered, 'x', 'y');
    await bed.redis.hset(old('vps:x'), 'state', 'registered', 'name', 'vps-jp-22', 'address', '2.2.2.2', 'country', 'jp', 'labels', '{}', 'stream_id', '7-0');
    await bed.redis.hset(old('vps:y'), 'state', 'retired', 'name', 'vps-jp-23', 'address', '3.3.3.3', 'country', 'jp', 'labels', '{}', 'stream_id', '9-0');
    const migrated = await capture(process.execPath, [CLI, 'migrate-keys', '--redis-url', bed.redisServer.url]);
    expect(migrated.code, migrated.stderr).toBe(0);
    const after = await indexesMatchRecords();
    expect({ addresses: after.addresses, names: after.names, registered: after.registered }).toEqual(after.fromRecords);
    expect(after.addresses).toEqual({ '2.2.2.2': 'x' });
    expect(after.names).toEqual({ 'vps-jp-22': 'x' });
    expect(after.registered).toEqual(['x']);
  });

  it('edge-registrar migrate-keys moves them without a daemon, and a second run finds nothing', async () => {
    const old = (suffix: string): string => `edge-registrar:${NAMESPACE}:${suffix}`;
    await bed.redis.hset(old('vps:v3'), 'state', 'registered', 'name', 'vps-jp-03', 'address', '103.21.244.30', 'country', 'jp', 'labels', '{}', 'stream_id', '5-0', 'updated_at', new Date().toISOString());
    await bed.redis.hset(old('addresses'), '103.21.244.30', 'v3');
    await bed.redis.sadd(old('registered'), 'v3');
    await bed.redis.hset(old('attempts'), '5-0', '1');
    await bed.redis.xadd(`${STREAM}:dlq`, '*', 'event', 'register', 'vps_id', 'bad', 'dlq_rule', 'event.schema', 'dlq_reason', 'country: is missing');
    const first = await capture(process.execPath, [CLI, 'migrate-keys', '--redis-url', bed.redisServer.url]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toContain('moved 1 state record(s), 1 attempt count(s) and 1 dead letter(s)');
    expect(await bed.redis.exists(old('vps:v3'), old('addresses'), old('registered'), old('attempts'), `${STREAM}:dlq`)).toBe(0);
    expect(await bed.redis.hget(KEYS.vps('v3'), 'address')).toBe('103.21.244.30');
    expect(await bed.redis.hget(KEYS.addresses, '103.21.244.30')).toBe('v3');
    expect(await bed.redis.smembers(KEYS.registered)).toContain('v3');
    expect(await bed.redis.xlen(KEYS.deadLetters)).toBe(1);
    const second = await capture(process.execPath, [CLI, 'migrate-keys', '--redis-url', bed.redisServer.url]);
    expect(second.stderr).toContain('moved 0 state record(s), 0 attempt count(s) and 0 dead letter(s)');
  });
});
