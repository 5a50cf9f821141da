/**
 * A commit counts once a replica has it (redis/replica-wait.ts), against a real primary and a
 * real replica (REPLICAOF): WAIT answers at once while replication runs; with the replica paused
 * (SIGSTOP, replication stalled) it gives up after its timeout, and the consumer holds each
 * event it settled meanwhile, so no more than `concurrency` events are settled unreplicated.
 * Without replicas, `auto` waits for none.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BlockingReader } from '../../src/redis/blocking-reader.ts';
import { ReplicaWait, ReplicationBehindError } from '../../src/redis/replica-wait.ts';
import { settleWithoutChange } from '../../src/sync/acknowledge.ts';
import { AttemptLog } from '../../src/sync/attempt-log.ts';
import { StreamConsumer } from '../../src/sync/consumer.ts';
import type { EventProcessor, ProcessResult } from '../../src/sync/processor.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { KeyedQueue } from '../../src/util/keyed-queue.ts';
import { ensureRedisServer, startRedis, type RunningRedis } from '../harness/redis-server.ts';
import { waitFor } from './support.ts';
import { TEST_CONSUMER_RETRIES } from '../harness/sync-timings.ts';

const STREAM = 'wait-test';
const GROUP = 'g';
const KEYS = { stream: STREAM, group: GROUP, attempts: 'wait-test:attempts', outcomes: { key: 'wait-test:outcomes', maxLength: 1_000 } };
const logger = createLogger('silent', 'replica-wait-test');
let primary: RunningRedis;
let replica: RunningRedis;
let redis: Redis;
let dir: string;

beforeAll(async () => {
  const binary = await ensureRedisServer();
  dir = await mkdtemp(join(tmpdir(), 'edge-registrar-replica-wait-'));
  primary = await startRedis({ binary });
  // A replica writes the primary's snapshot to its directory while it syncs: a folder of the test's own.
  replica = await startRedis({ binary, dataDir: dir });
  redis = new Redis(primary.url, { maxRetriesPerRequest: null });
  const follower = new Redis(replica.url);
  await follower.replicaof('127.0.0.1', primary.port);
  follower.disconnect();
  await waitFor(async () => /connected_slaves:1/.test(await redis.info('replication')) && /state=online/.test(await redis.info('replication')), 'the replica to be in sync');
});

afterAll(async () => {
  process.kill(replica.process.pid ?? 0, 'SIGCONT');
  redis.disconnect();
  await replica.stop();
  await primary.stop();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  await redis.flushall();
  await redis.xgroup('CREATE', STREAM, GROUP, '0', 'MKSTREAM');
});

/** Runs `work` with the replica paused: replication stalls, the primary goes on alone. */
async function withReplicaPaused<T>(work: () => Promise<T>): Promise<T> {
  process.kill(replica.process.pid ?? 0, 'SIGSTOP');
  try {
    return await work();
  } finally {
    process.kill(replica.process.pid ?? 0, 'SIGCONT');
  }
}

describe('WAIT for a replica', () => {
  it('answers at once while replication runs, and gives up after its timeout while it stalls', async () => {
    const results: string[] = [];
    const replicas = new ReplicaWait(redis, { replicas: 'auto', timeoutMs: 300, onWait: (result) => results.push(result) });
    await redis.set('k', '1');
    await replicas.replicated();
    await withReplicaPaused(async () => {
      await redis.set('k', '2');
      const started = Date.now();
      await expect(replicas.replicated()).rejects.toBeInstanceOf(ReplicationBehindError);
      expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    });
    expect(results).toEqual(['replicated', 'behind']);
  });

  it('auto waits for no replica on a primary that has none', async () => {
    const alone = new Redis(replica.url);
    try {
      // The replica's own view: it has no replicas of its own.
      const waits: string[] = [];
      await new ReplicaWait(alone, { replicas: 'auto', timeoutMs: 5_000, onWait: (result) => waits.push(result) }).replicated();
      expect(waits).toEqual([]);
    } finally {
      alone.disconnect();
    }
  });

  it('the consumer holds each event it settled while no replica has it: at most `concurrency` settle while replication stalls, the rest after', async () => {
    const settled: string[] = [];
    const processor = {
      process: async (id: string): Promise<ProcessResult> => {
        await settleWithoutChange(redis, KEYS, { source_id: id, outcome: 'applied', at: new Date().toISOString() });
        settled.push(id);
        return { outcome: 'applied' };
      },
      survived: () => Promise.resolve(true),
    } as unknown as EventProcessor;
    const replicas = new ReplicaWait(redis, { replicas: 'auto', timeoutMs: 200 });
    const consumer = new StreamConsumer({
      reader: new BlockingReader({ redisOptions: { host: '127.0.0.1', port: primary.port }, stream: STREAM, group: GROUP, consumer: 'c', batchSize: 50, blockMs: 200, watchdogGraceMs: 1_000, logger }),
      commands: redis,
      processor,
      attempts: new AttemptLog(redis, KEYS.attempts, logger),
      settlement: KEYS,
      queue: new KeyedQueue(),
      stream: STREAM,
      group: GROUP,
      consumer: 'c',
      batchSize: 50,
      concurrency: 2,
      ...TEST_CONSUMER_RETRIES,
      logger,
      leadershipTerm: () => 1,
      holdings: () => Promise.resolve(new Map()),
      durable: () => replicas.replicated(),
    });
    try {
      await withReplicaPaused(async () => {
        consumer.start();
        for (let i = 0; i < 10; i++) await redis.xadd(STREAM, '*', 'event', 'register', 'vps_id', `v${i}`);
        await waitFor(() => Promise.resolve(settled.length >= 2), 'two events settled');
        // Three seconds of stalled replication: the two settled events are held, nothing else runs.
        await new Promise((r) => setTimeout(r, 3_000));
        expect([settled.length, consumer.inFlight]).toEqual([2, 10]);
      });
      await waitFor(() => Promise.resolve(settled.length === 10 && consumer.inFlight === 0), 'all ten settled once the replica has them');
    } finally {
      await consumer.stop();
    }
  });
});
