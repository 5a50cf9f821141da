/**
 * examples/sigma-api-producer, the Rust producer on the `redis` crate, against the local
 * stack's parts (a real redis-server, the API server with Istio's CRDs, the registered webhook,
 * the sync daemon): what sigma-api does, proven end to end. Each case checks the outcome the
 * producer printed against the outcome stream and against the cluster (`kubectl get`). The
 * Redis Cluster half is in redis-cluster.test.ts, on its cluster.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { daemonKeys } from '../../src/redis/keys.ts';
import { fieldsToRecord } from '../../src/sync/event.ts';
import type { RunningSync } from '../../src/sync/run.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import { runRustProducer, type ProducerRun } from '../harness/rust-producer.ts';
import { STREAM, startSyncTestBed, startTestSync, stopSyncTestBed, testSyncConfig, type SyncTestBed } from './sync-support.ts';
import { NAMESPACE, kubectl } from './support.ts';

const KEYS = daemonKeys(STREAM, NAMESPACE);
let bed: SyncTestBed;
let sync: RunningSync;

beforeAll(async () => {
  bed = await startSyncTestBed('rust-producer');
  sync = await startTestSync(testSyncConfig(kubeconfigFor(inject('cluster'), 'sync'), bed.redisServer.url));
});

afterAll(async () => {
  await sync.stop();
  await stopSyncTestBed(bed);
});

const producer = (...args: string[]): Promise<ProducerRun> => runRustProducer(inject('rustProducer'), [bed.redisServer.url], args);

async function addressOf(name: string): Promise<string | undefined> {
  const res = await kubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentry', name, '-o', 'jsonpath={.spec.address}']);
  return res.code === 0 ? res.stdout : undefined;
}

/** The outcome stream's record for `sourceId`, as the daemon wrote it. */
async function recorded(sourceId: string): Promise<Record<string, string> | undefined> {
  const rows = (await bed.redis.xrange(KEYS.outcomes, '-', '+')) as [string, string[]][];
  return rows.map(([, f]) => fieldsToRecord(f)).find((r) => r.source_id === sourceId);
}

describe('the Rust producer (redis crate) on one Redis server', () => {
  it('register, re-register with a new address, retire: each outcome as the daemon recorded it, each matching the cluster', async () => {
    const registered = await producer('register', 'r1', 'vps-jp-71', '103.21.244.71', 'jp', 'provider=vultr');
    expect(registered.code, registered.stderr).toBe(0);
    expect(registered.outcomes).toEqual([expect.objectContaining({ outcome: 'applied', vps_id: 'r1', name: 'vps-jp-71' })]);
    expect(await recorded(registered.outcomes[0]!.source_id)).toMatchObject({ outcome: 'applied' });
    expect(await addressOf('vps-jp-71')).toBe('103.21.244.71');
    const labels = await kubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentry', 'vps-jp-71', '-o', 'jsonpath={.spec.labels.provider}']);
    expect(labels.stdout).toBe('vultr');

    const moved = await producer('register', 'r1', 'vps-jp-71', '103.21.244.72', 'jp');
    expect([moved.code, moved.outcomes[0]?.outcome]).toEqual([0, 'applied']);
    expect(await addressOf('vps-jp-71')).toBe('103.21.244.72');

    const retired = await producer('retire', 'r1');
    expect([retired.code, retired.outcomes[0]?.outcome, retired.outcomes[0]?.name]).toEqual([0, 'deleted', 'vps-jp-71']);
    expect(await addressOf('vps-jp-71')).toBeUndefined();
  });

  it('a refused register: exit 3, the rule and reason, and the dead letter it names is there', async () => {
    const refused = await producer('register', 'r2', 'vps-jp-73', '10.0.0.73', 'jp');
    expect(refused.code).toBe(3);
    const [outcome] = refused.outcomes;
    expect(outcome).toMatchObject({ outcome: 'dead-lettered', rule: 'address.public-unicast', reason: expect.stringContaining('"10.0.0.73" is in the private (RFC 1918) range') as string });
    const [letter] = (await bed.redis.xrange(KEYS.deadLetters, outcome!.dlq_id!, outcome!.dlq_id!)) as [string, string[]][];
    expect(fieldsToRecord(letter?.[1] ?? [])).toMatchObject({ dlq_source_id: outcome!.source_id, dlq_rule: 'address.public-unicast', vps_id: 'r2' });
    expect(await addressOf('vps-jp-73')).toBeUndefined();
  });

  it('swaps the addresses of two VPSs through a free one, in stream order, never refused', async () => {
    for (const [id, name, address] of [['r3', 'vps-jp-74', '103.21.244.74'], ['r4', 'vps-jp-75', '103.21.244.75']] as const) {
      expect((await producer('register', id, name, address, 'jp')).code).toBe(0);
    }
    const swapped = await producer('swap', 'r3:vps-jp-74:103.21.244.74:jp', 'r4:vps-jp-75:103.21.244.75:jp', '103.21.244.99');
    expect(swapped.code, swapped.stderr).toBe(0);
    expect(swapped.outcomes.map((o) => [o.vps_id, o.outcome])).toEqual([['r3', 'applied'], ['r4', 'applied'], ['r3', 'applied']]);
    expect([await addressOf('vps-jp-74'), await addressOf('vps-jp-75')]).toEqual(['103.21.244.75', '103.21.244.74']);
  });
});
