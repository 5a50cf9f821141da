/**
 * The stream consumer against a real redis-server, with a processor the test controls:
 * poison entries are found however other consumers' entries interleave with them, and a
 * consumer that stops making progress says so (the sync daemon's liveness). Also the
 * commands connection's deadline against a redis-server that stops answering (SIGSTOP).
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createRedis, redisOptions } from '../../src/redis/connection.ts';
import { StreamConsumer, type ConsumerOptions } from '../../src/sync/consumer.ts';
import { deadLetter, dlqStream } from '../../src/sync/dead-letter.ts';
import { TransientError } from '../../src/sync/entry-writer.ts';
import type { EventProcessor, ProcessResult } from '../../src/sync/processor.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { KeyedQueue } from '../../src/util/keyed-queue.ts';
import { ensureRedisServer, startRedis, type RunningRedis } from '../harness/redis-server.ts';
import { waitFor } from './support.ts';

const STREAM = 'consumer-test';
const GROUP = 'g';
let server: RunningRedis;
let redis: Redis;
let blocking: Redis;
let consumers: StreamConsumer[] = [];

type Process = (id: string, fields: Record<string, string> | null, poison?: { deliveries: number }) => Promise<ProcessResult>;

/** A processor that records what it is given and acknowledges, or does what `behave` says. */
function processor(behave?: Process): { seen: [string, { deliveries: number } | undefined][]; processor: EventProcessor } {
  const seen: [string, { deliveries: number } | undefined][] = [];
  const process: Process = async (id, fields, poison) => {
    seen.push([id, poison]);
    if (behave !== undefined) return behave(id, fields, poison);
    await redis.xack(STREAM, GROUP, id);
    return { outcome: poison === undefined ? 'applied' : 'dead-lettered' };
  };
  return { seen, processor: { process, giveUp: () => Promise.resolve({ outcome: 'dead-lettered' }) } as unknown as EventProcessor };
}

function consumer(name: string, p: EventProcessor, overrides: Partial<ConsumerOptions> = {}): StreamConsumer {
  const c = new StreamConsumer({
    blocking,
    commands: redis,
    processor: p,
    queue: new KeyedQueue(),
    stream: STREAM,
    group: GROUP,
    consumer: name,
    batchSize: 50,
    blockMs: 200,
    concurrency: 4,
    claimIdleMs: 600_000,
    consumerRetentionMs: 3_600_000,
    maxDeliveries: 3,
    maxAttempts: 3,
    retryBaseMs: 20,
    retryMaxMs: 100,
    logger: createLogger('silent', 'consumer-test'),
    leadershipTerm: () => 1,
    holdings: () => Promise.resolve(new Map()),
    ...overrides,
  });
  consumers.push(c);
  return c;
}

beforeAll(async () => {
  server = await startRedis({ binary: await ensureRedisServer() });
  redis = new Redis(server.url, { maxRetriesPerRequest: null });
  blocking = new Redis(server.url, { maxRetriesPerRequest: null });
});

afterAll(async () => {
  redis.disconnect();
  blocking.disconnect();
  await server.stop();
});

beforeEach(async () => {
  await redis.flushall();
  await redis.xgroup('CREATE', STREAM, GROUP, '0', 'MKSTREAM');
});

afterEach(async () => {
  await Promise.all(consumers.map((c) => c.stop()));
  consumers = [];
});

describe('poison entries', () => {
  it("are found among entries claimed from a dead consumer, however densely a live consumer's entries interleave with them", async () => {
    const { seen, processor: p } = processor();
    consumer('survivor', p, { claimIdleMs: 400 }).start();
    // A dead consumer was handed 10 entries, each followed by 5 a live consumer holds. One
    // transaction, so the survivor's blocked read gets none of them as new.
    const transaction = redis.multi();
    for (let i = 0; i < 10; i++) {
      transaction.xadd(STREAM, '*', 'event', 'register', 'vps_id', `dead-${i}`);
      for (let j = 0; j < 5; j++) transaction.xadd(STREAM, '*', 'event', 'register', 'vps_id', `live-${i}-${j}`);
    }
    transaction.xreadgroup('GROUP', GROUP, 'dead', 'COUNT', 100, 'STREAMS', STREAM, '>');
    const ids = ((await transaction.exec()) ?? []).slice(0, 60).map(([, id]) => String(id));
    const deadIds = ids.filter((_, k) => k % 6 === 0);
    const liveIds = ids.filter((_, k) => k % 6 !== 0);
    await redis.xclaim(STREAM, GROUP, 'live', 0, ...liveIds, 'JUSTID');
    // Three more deliveries of the dead consumer's entries (history reads count): 4 in all.
    for (let k = 0; k < 3; k++) await redis.xreadgroup('GROUP', GROUP, 'dead', 'STREAMS', STREAM, '0');
    // The live consumer keeps touching its entries, so only the dead one's become idle.
    const touch = setInterval(() => void redis.xclaim(STREAM, GROUP, 'live', 0, ...liveIds, 'JUSTID'), 100);
    try {
      await waitFor(() => Promise.resolve(seen.length >= deadIds.length), "the dead consumer's entries to be claimed and processed", 10_000);
    } finally {
      clearInterval(touch);
    }
    expect(seen.map(([id]) => id)).toEqual(deadIds);
    // Every one of them recognised as poison: 4 deliveries before, the claim is the 5th.
    expect(seen.map(([, poison]) => poison?.deliveries)).toEqual(deadIds.map(() => 5));
  });
});

describe('progress', () => {
  it('a consumer whose events stop making progress reports how long it has stalled; one that keeps failing and retrying does not', async () => {
    let release: () => void = () => undefined;
    const hanging = new Promise<void>((resolve) => { release = resolve; });
    const hung = consumer('hung', processor(() => hanging.then(() => ({ outcome: 'noop' as const }))).processor);
    hung.start();
    await redis.xadd(STREAM, '*', 'event', 'register', 'vps_id', 'v1');
    await waitFor(() => Promise.resolve(hung.inFlight === 1), 'the event to be in flight');
    const before = hung.stalledMs();
    await new Promise((r) => setTimeout(r, 2_000));
    // The stall grows with the time the hung event makes no progress...
    expect(hung.stalledMs() - before).toBeGreaterThanOrEqual(1_900);
    release();
    await waitFor(() => Promise.resolve(hung.inFlight === 0), 'the released event to finish');
    // ...and is gone once it finishes (the loop keeps turning every 200 ms).
    expect(hung.stalledMs()).toBeLessThan(1_500);

    const failing = consumer('failing', processor(() => Promise.reject(new Error('the API server is away'))).processor, { maxAttempts: 1_000 });
    failing.start();
    await redis.xadd(STREAM, '*', 'event', 'register', 'vps_id', 'v2');
    await waitFor(() => Promise.resolve(failing.inFlight >= 1), 'the failing event to be in flight');
    await new Promise((r) => setTimeout(r, 2_000));
    // Failing attempts finish (and are retried every 100 ms or so): that is progress, not a stall.
    expect(failing.stalledMs()).toBeLessThan(1_500);
  });
});

/** The Lease as the consumer sees it: held in numbered terms, lost and regained by the test. */
function lease(): { term: () => number | undefined; lose: () => void; regain: () => void; readonly leading: boolean } {
  let term: number | undefined = 1;
  let last = 1;
  return {
    term: () => term,
    lose: () => { term = undefined; },
    regain: () => { term = ++last; },
    get leading() { return term !== undefined; },
  };
}

describe('leadership lost mid-flight', () => {
  it('an event left pending holds back every event queued behind it: none runs while not leading, and all run in stream order once it leads again', async () => {
    const held = lease();
    let apiServerAway = true;
    const order: string[] = [];
    const { processor: p } = processor(async (id, fields) => {
      if (!held.leading) order.push(`${fields?.vps_id ?? id} while not leading`);
      // The retire of v3 meets an API server that is away: a transient failure, retried.
      if (fields?.vps_id === 'v3' && apiServerAway) throw new TransientError('the API server is away');
      order.push(fields?.vps_id ?? id);
      await redis.xack(STREAM, GROUP, id);
      return { outcome: 'applied' };
    });
    // v3 holds 45.76.0.12, which its retire frees and v486's register claims.
    const c = consumer('leader', p, {
      leadershipTerm: held.term,
      holdings: (ids) => Promise.resolve(new Map(ids.filter((id) => id === 'v3').map((id) => [id, { name: 'vps-de-3', address: '45.76.0.12' }]))),
    });
    c.start();
    await redis.multi()
      .xadd(STREAM, '*', 'event', 'retire', 'vps_id', 'v3')
      .xadd(STREAM, '*', 'event', 'register', 'vps_id', 'v486', 'name', 'vps-us-569', 'address', '45.76.0.12')
      .exec();
    await waitFor(() => Promise.resolve(c.inFlight === 2), 'both events to be in flight');
    // The Lease is lost while the retire is being retried: it is left pending, and so must be the claim.
    held.lose();
    await waitFor(() => Promise.resolve(c.inFlight === 0), 'the events to be left pending');
    expect(((await redis.xpending(STREAM, GROUP)) as [number])[0]).toBe(2);
    apiServerAway = false;
    held.regain();
    await waitFor(() => Promise.resolve(order.length >= 2), 'both events to be applied once leading again');
    expect(order).toEqual(['v3', 'v486']);
  });

  it('an event queued in one term never runs in the next: a claim waiting on a write still in flight when the Lease was lost and regained waits for the event left pending before it', async () => {
    // The soak's seed 809997897: v43 moves off 45.76.0.164 and v361 claims it, in that
    // order; v361's earlier event hangs on a paused API server, so the claim waits for it.
    const held = lease();
    let apiServerAway = true;
    let releaseHung: () => void = () => undefined;
    const hung = new Promise<void>((resolve) => (releaseHung = resolve));
    const order: string[] = [];
    const { processor: p } = processor(async (id, fields) => {
      const what = `${fields?.vps_id ?? id} ${fields?.address ?? ''}`;
      if (what === 'v361 45.76.0.21') await hung;
      if (what === 'v43 45.76.1.56' && apiServerAway) throw new TransientError('the API server is away');
      order.push(what);
      await redis.xack(STREAM, GROUP, id);
      return { outcome: 'applied' };
    });
    const c = consumer('leader', p, {
      leadershipTerm: held.term,
      holdings: (ids) => Promise.resolve(new Map(ids.filter((id) => id === 'v43').map((id) => [id, { name: 'vps-sg-43', address: '45.76.0.164' }]))),
    });
    c.start();
    await redis.multi()
      .xadd(STREAM, '*', 'event', 'register', 'vps_id', 'v361', 'name', 'vps-jp-405', 'address', '45.76.0.21')
      .xadd(STREAM, '*', 'event', 'register', 'vps_id', 'v43', 'name', 'vps-sg-43', 'address', '45.76.1.56')
      .xadd(STREAM, '*', 'event', 'register', 'vps_id', 'v361', 'name', 'vps-jp-405', 'address', '45.76.0.164')
      .exec();
    await waitFor(() => Promise.resolve(c.inFlight === 3), 'the three events to be in flight');
    // The Lease lapses while v43's move is retried: the move is left pending; the claim
    // behind it still waits for v361's hung write.
    held.lose();
    await waitFor(() => Promise.resolve(c.inFlight === 2), "v43's move to be left pending");
    // Leading again, and the API server back: the hung write finishes.
    apiServerAway = false;
    held.regain();
    releaseHung();
    await waitFor(() => Promise.resolve(order.length >= 3), 'all three events to be applied');
    expect(order).toEqual(['v361 45.76.0.21', 'v43 45.76.1.56', 'v361 45.76.0.164']);
  });
});

describe('dead letters', () => {
  it('an entry delivered twice is dead-lettered once: the second delivery finds it settled', async () => {
    const id = String(await redis.xadd(STREAM, '*', 'event', 'register', 'vps_id', 'bad-1', 'labels', '{nope'));
    await redis.xreadgroup('GROUP', GROUP, 'c', 'STREAMS', STREAM, '>');
    const letter = { sourceId: id, fields: { event: 'register', vps_id: 'bad-1', labels: '{nope' }, rule: 'event.schema', reason: 'labels: not JSON' };
    // As the soak saw it: the first delivery dead-letters it while an idle claim hands the same entry out again.
    const first = await deadLetter(redis, STREAM, GROUP, letter, new Date(), 1000);
    const second = await deadLetter(redis, STREAM, GROUP, letter, new Date(), 1000);
    expect(first).toMatch(/^\d+-\d+$/);
    expect(second).toBeUndefined();
    expect(await redis.xlen(dlqStream(STREAM))).toBe(1);
    expect(((await redis.xpending(STREAM, GROUP)) as [number])[0]).toBe(0);
  });
});

describe('deadlines', () => {
  it('a command to a Redis that stopped answering fails within the command timeout; the blocking connection has none', async () => {
    const config = { url: server.url, tls: false, sentinelName: 'mymaster' };
    const commands = createRedis(config, 'commands', { commandTimeoutMs: 300 });
    expect(redisOptions(config, 'blocking', { commandTimeoutMs: 300 }).commandTimeout).toBeUndefined();
    await commands.connect();
    server.process.kill('SIGSTOP');
    try {
      await expect(commands.ping()).rejects.toThrow(/timed out/i);
    } finally {
      server.process.kill('SIGCONT');
      commands.disconnect();
    }
    expect(await redis.ping()).toBe('PONG');
  });
});
