/**
 * The stream consumer against a real redis-server, with a processor the test controls: poison
 * means the daemon died while applying that event (not a delivery count), the read position
 * survives cut reads, partitions and a deposed leader's late reads, and a consumer that stops
 * making progress says so (the sync daemon's liveness). Also the commands connection's
 * deadline against a redis-server that stops answering (SIGSTOP).
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BlockingReader } from '../../src/redis/blocking-reader.ts';
import { createRedis, redisOptions } from '../../src/redis/connection.ts';
import { settleWithoutChange } from '../../src/sync/acknowledge.ts';
import { AttemptLog } from '../../src/sync/attempt-log.ts';
import { StreamConsumer, type ConsumerOptions } from '../../src/sync/consumer.ts';
import { deadLetter } from '../../src/sync/dead-letter.ts';
import { TransientError } from '../../src/sync/entry-writer.ts';
import { StateBehindError, type EventProcessor, type ProcessResult } from '../../src/sync/processor.ts';
import { fieldsToRecord } from '../../src/sync/event.ts';
import type { Fence } from '../../src/sync/term.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { KeyedQueue } from '../../src/util/keyed-queue.ts';
import { ensureRedisServer, startRedis, type RunningRedis } from '../harness/redis-server.ts';
import { startTcpProxy, type TcpProxy } from '../harness/tcp-proxy.ts';
import { waitFor } from './support.ts';
import { TEST_CONSUMER_RETRIES } from '../harness/sync-timings.ts';

const STREAM = 'consumer-test';
const GROUP = 'g';
const ATTEMPTS = 'consumer-test:attempts';
const DLQ = 'consumer-test:dlq';
const OUTCOMES = 'consumer-test:outcomes';
const KEYS = { stream: STREAM, group: GROUP, attempts: ATTEMPTS, outcomes: { key: OUTCOMES, maxLength: 1_000 }, deadLetters: DLQ, deadLetterMaxLength: 1_000 };
const logger = createLogger('silent', 'consumer-test');
let server: RunningRedis;
let redis: Redis;
let consumers: StreamConsumer[] = [];
let proxies: TcpProxy[] = [];

type Process = (id: string, fields: Record<string, string> | null, fence: Fence) => Promise<ProcessResult>;

/** Settles an event as the real processor does: acknowledged, its attempt count gone, its outcome recorded. */
const settle = async (id: string): Promise<void> => { await settleWithoutChange(redis, KEYS, { source_id: id, outcome: 'applied', at: new Date().toISOString() }); };

/** A processor that records what it is given and acknowledges, or does what `behave` says. */
function processor(behave?: Process): { seen: string[]; poisoned: [string, number][]; processor: EventProcessor } {
  const seen: string[] = [];
  const poisoned: [string, number][] = [];
  const process: Process = async (id, fields, fence) => {
    seen.push(id);
    if (behave !== undefined) return behave(id, fields, fence);
    await settle(id);
    return { outcome: 'applied' };
  };
  const poison = async (id: string, fields: Record<string, string>, interrupted: number): Promise<ProcessResult> => {
    poisoned.push([fields.vps_id ?? id, interrupted]);
    await deadLetter(redis, KEYS, { sourceId: id, fields, rule: 'event.poison', reason: 'test' }, new Date(), { source_id: id });
    return { outcome: 'dead-lettered' };
  };
  return { seen, poisoned, processor: { process, poison, giveUp: () => Promise.resolve({ outcome: 'dead-lettered' }) } as unknown as EventProcessor };
}

/** The attempt log of a daemon that dies: once crashed, the ends of attempts never reach Redis. */
class CrashingAttemptLog extends AttemptLog {
  crashed = false;
  override end(id: string, token: string): void {
    if (!this.crashed) super.end(id, token);
  }
}

interface TestConsumerOptions extends Partial<ConsumerOptions> {
  /** Reach Redis for the blocking reads through this proxy (a network that can break). */
  via?: TcpProxy;
  attemptLog?: AttemptLog;
}

function consumer(name: string, p: EventProcessor, { via, attemptLog, ...overrides }: TestConsumerOptions = {}): StreamConsumer {
  const batchSize = overrides.batchSize ?? 50;
  const reader = new BlockingReader({ redisOptions: { host: '127.0.0.1', port: via?.port ?? server.port }, stream: STREAM, group: GROUP, consumer: name, batchSize, blockMs: 200, watchdogGraceMs: 1_000, logger });
  const c = new StreamConsumer({
    reader,
    commands: redis,
    processor: p,
    attempts: attemptLog ?? new AttemptLog(redis, ATTEMPTS, logger),
    settlement: KEYS,
    queue: new KeyedQueue(),
    stream: STREAM,
    group: GROUP,
    consumer: name,
    batchSize,
    concurrency: 4,
    ...TEST_CONSUMER_RETRIES,
    logger,
    leadershipTerm: () => 1,
    holdings: () => Promise.resolve(new Map()),
    ...overrides,
  });
  consumers.push(c);
  return c;
}

async function proxy(): Promise<TcpProxy> {
  const p = await startTcpProxy({ host: '127.0.0.1', port: server.port });
  proxies.push(p);
  return p;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  server = await startRedis({ binary: await ensureRedisServer() });
  redis = new Redis(server.url, { maxRetriesPerRequest: null });
});

afterAll(async () => {
  redis.disconnect();
  await server.stop();
});

beforeEach(async () => {
  await redis.flushall();
  await redis.xgroup('CREATE', STREAM, GROUP, '0', 'MKSTREAM');
});

afterEach(async () => {
  await Promise.all(consumers.map((c) => c.stop()));
  consumers = [];
  await Promise.all(proxies.map((p) => p.stop()));
  proxies = [];
});

describe('poison means the daemon died while applying that event', () => {
  // Redis raises an entry's delivery count on every re-read of the pending list and every
  // XAUTOCLAIM without JUSTID; an outage of the webhook retried for minutes, then a lease
  // flap, once dead-lettered every valid event in flight as poison ("delivered 9 times").
  it('valid events stay valid through a long outage of the webhook and a handover: applied, not poisoned', async () => {
    let term: number | undefined = 1;
    let webhookUp = false;
    const applied: string[] = [];
    const { poisoned, processor: p } = processor(async (id, fields) => {
      if (!webhookUp) throw new TransientError('failed calling webhook: connection refused');
      applied.push(fields?.vps_id ?? id);
      await settle(id);
      return { outcome: 'applied' };
    });
    const c = consumer('leader', p, { leadershipTerm: () => term, strayCheckMs: 300 });
    c.start();
    for (const v of ['v1', 'v2', 'v3']) await redis.xadd(STREAM, '*', 'event', 'register', 'vps_id', v);
    await sleep(3_000);
    // A lease flap: the events are left pending and read again from the pending list.
    term = undefined;
    await waitFor(() => Promise.resolve(c.inFlight === 0), 'the events to be left pending');
    term = 2;
    await sleep(500);
    webhookUp = true;
    await waitFor(() => Promise.resolve(applied.length === 3), 'all three to be applied', 20_000);
    expect(applied.sort()).toEqual(['v1', 'v2', 'v3']);
    expect(poisoned).toEqual([]);
    expect(await redis.hlen(ATTEMPTS)).toBe(0);
  });

  it('an event that takes the daemon down is dead-lettered after maxInterruptedAttempts, alone; the valid events in flight with it are applied', async () => {
    const ids = new Map<string, string>();
    for (const v of ['v1', 'bad', 'v2']) ids.set(String(await redis.xadd(STREAM, '*', 'event', 'register', 'vps_id', v)), v);
    const applied: string[] = [];
    let poisonedBad: [string, number][] = [];
    // Each "daemon" hangs on whatever it is applying when it dies: the first dies with all
    // three in flight; after that an event interrupted before runs alone, and only bad hangs.
    for (let life = 1; life <= 6 && applied.length < 2; life++) {
      let die: () => void = () => undefined;
      const death = new Promise<void>((resolve) => (die = resolve));
      const inFlight = new Set<string>();
      const { poisoned, processor: p } = processor(async (id, _fields, fence) => {
        const vps = ids.get(id) ?? id;
        inFlight.add(vps);
        if (life === 1 || vps === 'bad') {
          await death;
          fence();
        }
        inFlight.delete(vps);
        applied.push(vps);
        await settle(id);
        return { outcome: 'applied' };
      });
      // A crash: the attempt log never hears that the attempts in flight ended.
      const log = new CrashingAttemptLog(redis, ATTEMPTS, logger);
      const c = consumer(`daemon-${life}`, p, { attemptLog: log, leadershipTerm: () => (log.crashed ? undefined : life) });
      c.start();
      await waitFor(() => Promise.resolve(inFlight.size > 0 || applied.length >= 2 || poisoned.length > 0), `daemon ${life} to get going`);
      if (life > 1) {
        // Interrupted before: one event at a time, the bad one among them.
        await waitFor(() => Promise.resolve(inFlight.has('bad') || poisoned.length > 0), `daemon ${life} to reach the bad event`, 10_000);
        expect(inFlight.size).toBeLessThanOrEqual(1);
      }
      poisonedBad = poisoned;
      if (poisoned.length > 0) break;
      log.crashed = true;
      die();
      await c.stop();
    }
    expect(applied.sort()).toEqual(['v1', 'v2']);
    expect(poisonedBad).toEqual([['bad', 3]]);
    expect((await redis.xrange(DLQ, '-', '+')).length).toBe(1);
    expect(await redis.hlen(ATTEMPTS)).toBe(0);
  });
});

describe('the attempt log counts each attempt once', () => {
  // ioredis's command timeout only rejects the promise: the command stays queued and runs when
  // Redis answers again, and a reconnect re-sends what was never answered. A mark counted per
  // send made a stall of a few seconds look like as many crashes as it had retries, and the
  // next attempt dead-lettered a valid event as poison.
  it('marks sent while Redis stalls, each timing out, count one attempt once Redis runs them; unmarks likewise', async () => {
    const stalled = new Redis({ port: server.port, host: '127.0.0.1', commandTimeout: 200, maxRetriesPerRequest: null });
    try {
      const log = new AttemptLog(stalled, ATTEMPTS, logger);
      process.kill(server.process.pid ?? 0, 'SIGSTOP');
      try {
        for (let i = 0; i < 3; i++) await expect(log.begin('9-1', 'attempt-a')).rejects.toThrow(/timed out/);
      } finally {
        process.kill(server.process.pid ?? 0, 'SIGCONT');
      }
      // The three queued marks have run by the time this one is answered.
      expect(await log.begin('9-1', 'attempt-a')).toBe(1);
      expect(await log.begin('9-1', 'attempt-b')).toBe(2);
      log.end('9-1', 'attempt-b');
      await waitFor(() => Promise.resolve(log.owed === 0), 'the unmark to land');
      log.end('9-1', 'attempt-b');
      await waitFor(() => Promise.resolve(log.owed === 0), 'the repeated unmark to land');
      // A late copy of attempt b's mark, after its unmark, counts nothing either.
      expect(await log.begin('9-1', 'attempt-b')).toBe(1);
      expect((await log.interrupted(['9-1'])).get('9-1')).toBe(1);
      log.stop();
    } finally {
      stalled.disconnect();
    }
  });
});

describe('retries', () => {
  // "Command timed out" on a connection that stays up counted as an unexpected failure, and
  // the count never reset: scattered timeouts dead-lettered a valid event (retries-exhausted).
  it('a Redis command that times out is retried for as long as it happens, never counted towards giving up', async () => {
    let timeouts = 12;
    const gaveUp: string[] = [];
    const applied: string[] = [];
    const { processor: p } = processor(async (id, fields) => {
      if (timeouts-- > 0) throw new Error('Command timed out');
      applied.push(fields?.vps_id ?? id);
      await settle(id);
      return { outcome: 'applied' };
    });
    (p as unknown as { giveUp: () => Promise<ProcessResult> }).giveUp = () => {
      gaveUp.push('v1');
      return Promise.resolve({ outcome: 'dead-lettered' });
    };
    consumer('leader', p, { maxAttempts: 3 }).start();
    await redis.xadd(STREAM, '*', 'event', 'register', 'vps_id', 'v1');
    await waitFor(() => Promise.resolve(applied.length + gaveUp.length > 0), 'the event to settle', 20_000);
    expect([applied, gaveUp]).toEqual([['v1'], []]);
  });
});

describe('giving up', () => {
  // giveUp (dead-lettering after maxAttempts) ran without a term check: a deposed leader could
  // dead-letter an event that the new leader then applied.
  it('never dead-letters an event once its term has ended', async () => {
    let term: number | undefined = 1;
    let attempts = 0;
    const gaveUp: string[] = [];
    const { processor: p } = processor(() => {
      attempts++;
      // The Lease is lost during the last attempt before giving up.
      if (attempts === 3) term = undefined;
      return Promise.reject(new Error('the entry does not fit the schema in a way nobody foresaw'));
    });
    (p as unknown as { giveUp: () => Promise<ProcessResult> }).giveUp = () => {
      gaveUp.push('v1');
      return Promise.resolve({ outcome: 'dead-lettered' });
    };
    const c = consumer('leader', p, { maxAttempts: 3, leadershipTerm: () => term });
    c.start();
    await redis.xadd(STREAM, '*', 'event', 'register', 'vps_id', 'v1');
    await waitFor(() => Promise.resolve(attempts >= 3 && c.inFlight === 0), 'the event to be left pending');
    expect(gaveUp).toEqual([]);
    expect(((await redis.xpending(STREAM, GROUP)) as [number])[0]).toBe(1);
  });
});

describe('the read position', () => {
  // The watchdog cut a read of the pending list and the empty answer was taken for its end:
  // the next read was '>', and a newer event ran before an older pending one.
  it('a pending-list read cut by the watchdog is read again before any new entry', async () => {
    const via = await proxy();
    await redis.xadd(STREAM, '*', 'event', 'retire', 'vps_id', 'A');
    // Delivered to this consumer before it "restarted": pending, to be read first.
    await redis.xreadgroup('GROUP', GROUP, 'leader', 'STREAMS', STREAM, '>');
    const order: string[] = [];
    const { processor: p } = processor(async (id, fields) => {
      order.push(fields?.vps_id ?? id);
      await settle(id);
      return { outcome: 'applied' };
    });
    via.freeze();
    const c = consumer('leader', p, { via });
    c.start();
    // The read of the pending list hangs (1.2 s of watchdog) and is cut; a newer event arrives.
    await sleep(1_500);
    await redis.xadd(STREAM, '*', 'event', 'register', 'vps_id', 'B');
    via.thaw();
    await waitFor(() => Promise.resolve(order.length >= 2), 'both to be applied', 20_000);
    expect(order).toEqual(['A', 'B']);
  });

  // A leader cut off from Redis kept its blocked XREADGROUP '>' in ioredis's queue; ioredis
  // re-sent it once the network healed, and Redis handed it new entries after its term had
  // ended. The new leader then applied newer events without them.
  it('a partitioned leader takes no deliveries after its term, and the new leader applies nothing past an older event', async () => {
    const via = await proxy();
    let oldTerm: number | undefined = 1;
    const applied: string[] = [];
    const a = consumer('a', processor(async (id, fields) => {
      applied.push(`a:${fields?.vps_id}`);
      await settle(id);
      return { outcome: 'applied' };
    }).processor, { via, leadershipTerm: () => oldTerm });
    a.start();
    await sleep(500);
    // Partitioned: a's read is stuck; the broken connection is noticed; a's term ends.
    via.freeze();
    await sleep(300);
    via.dropConnections();
    await sleep(300);
    oldTerm = undefined;
    a.leadershipLost();
    const newTerm = 1;
    // b leads, and is busy: four events in flight (batch 1) keep it from reading.
    let release: () => void = () => undefined;
    const busy = new Promise<void>((r) => (release = r));
    const b = consumer('b', processor(async (id, fields) => {
      if (fields?.vps_id?.startsWith('E0') === true) await busy;
      applied.push(fields?.vps_id ?? id);
      await settle(id);
      return { outcome: 'applied' };
    }).processor, { leadershipTerm: () => newTerm, batchSize: 1, strayCheckMs: 300 });
    b.start();
    for (const v of ['E0a', 'E0b', 'E0c', 'E0d']) await redis.xadd(STREAM, '*', 'event', 'register', 'vps_id', v);
    await waitFor(() => Promise.resolve(b.inFlight === 4), 'b to be busy');
    // The partition heals; whatever a might still send reaches Redis now.
    via.thaw();
    await sleep(300);
    for (const v of ['E1', 'E2', 'E3']) await redis.xadd(STREAM, '*', 'event', 'register', 'vps_id', v);
    await sleep(500);
    release();
    await redis.xadd(STREAM, '*', 'event', 'register', 'vps_id', 'E4');
    await waitFor(() => Promise.resolve(applied.length >= 8), 'eight applied', 10_000);
    expect(applied).toEqual(['E0a', 'E0b', 'E0c', 'E0d', 'E1', 'E2', 'E3', 'E4']);
  });

  it("entries a deposed leader took late are claimed from its pending list and applied before newer ones", async () => {
    const order: string[] = [];
    const c = consumer('leader', processor(async (id, fields) => {
      order.push(fields?.vps_id ?? id);
      await settle(id);
      return { outcome: 'applied' };
    }).processor, { strayCheckMs: 600_000 });
    c.start();
    await waitFor(() => Promise.resolve(c.position.phase === 'new'), 'the leader to read new entries');
    // A deposed leader's late read: two entries delivered to it after the takeover.
    await redis.multi().xadd(STREAM, '*', 'event', 'register', 'vps_id', 'S1').xadd(STREAM, '*', 'event', 'register', 'vps_id', 'S2').xreadgroup('GROUP', GROUP, 'deposed', 'COUNT', 2, 'STREAMS', STREAM, '>').xadd(STREAM, '*', 'event', 'register', 'vps_id', 'N1').exec();
    await waitFor(() => Promise.resolve(order.length >= 3), 'all three applied', 10_000);
    expect(order).toEqual(['S1', 'S2', 'N1']);
  });
});

describe('progress', () => {
  it('a consumer whose events stop making progress reports how long it has stalled; one that keeps failing and retrying does not', async () => {
    let release: () => void = () => undefined;
    const hanging = new Promise<void>((resolve) => { release = resolve; });
    const hung = consumer('hung', processor(() => hanging.then(() => ({ outcome: 'unchanged' as const }))).processor);
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
      await settle(id);
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
      await settle(id);
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
    const first = await deadLetter(redis, KEYS, letter, new Date(), { source_id: id });
    const second = await deadLetter(redis, KEYS, letter, new Date(), { source_id: id });
    expect(first).toMatch(/^\d+-\d+$/);
    expect(second).toBeUndefined();
    expect(await redis.xlen(DLQ)).toBe(1);
    // One outcome too: the second delivery acknowledged nothing, and recorded nothing.
    expect((await redis.xrange(OUTCOMES, '-', '+')).map(([, f]) => f[f.indexOf('outcome') + 1])).toEqual(['dead-lettered']);
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

describe('a lost commit holds back everything after it', () => {
  // Redis lost a commit of this daemon (a failover): the claim that meets it is left pending to
  // be read again after the lost event. Releasing only its own place let the events queued
  // behind it, and a read in flight, run first (seen: E2 behind, E3, E2; and across VPSs a valid
  // claim dead-lettered). Now the whole generation is left pending and read again in order.
  it('the same VPS: E2 meets the lost commit, and E3 behind it runs only after E2 has', async () => {
    let behindOnce = true;
    const { seen, processor: p } = processor(async (id, fields) => {
      if (fields?.n === '2' && behindOnce) {
        behindOnce = false;
        // The lost event is pending again (here E2 itself stands for it): read again in order.
        throw new StateBehindError('test: the desired state lost a commit', id);
      }
      await settle(id);
      return { outcome: 'applied' };
    });
    const c = consumer('leader', p);
    await redis.multi()
      .xadd(STREAM, '*', 'event', 'register', 'vps_id', 'x', 'n', '2')
      .xadd(STREAM, '*', 'event', 'register', 'vps_id', 'x', 'n', '3')
      .exec();
    const [e2, e3] = ((await redis.xrange(STREAM, '-', '+')) as [string, string[]][]).map(([id]) => id);
    c.start();
    await waitFor(async () => ((await redis.xpending(STREAM, GROUP)) as [number])[0] === 0 && seen.length >= 3, 'both events applied');
    expect(seen).toEqual([e2, e2, e3]);
  });

  it("across VPSs: the lost retire of A is applied again before B's move claims its address, and C's claim of B's old address after both", async () => {
    // E1 retires A (frees X); Redis lost its commit, so E1 is pending again. E2 moves B from Z to
    // X and meets the lost commit. E3 (C claims Z) must not run before E2 has moved B off Z.
    let e1Acked = false;
    let e1 = '';
    let e2Behind = true;
    const order: string[] = [];
    const { processor: p } = processor(async (id, fields) => {
      const who = fields?.vps_id ?? id;
      if (who === 'A' && !e1Acked) {
        // Applied, but its acknowledgement is the commit Redis lost: it stays pending.
        e1Acked = true;
        e1 = id;
        order.push('A (commit lost)');
        return { outcome: 'applied' };
      }
      if (who === 'B' && e2Behind) {
        e2Behind = false;
        order.push('B behind');
        throw new StateBehindError('test: A still holds X in the desired state', e1);
      }
      order.push(who);
      await settle(id);
      return { outcome: 'applied' };
    });
    const holdings = new Map([['A', { name: 'vps-jp-a', address: '45.76.9.1' }], ['B', { name: 'vps-jp-b', address: '45.76.9.2' }]]);
    const c = consumer('leader', p, { holdings: (ids) => Promise.resolve(new Map(ids.flatMap((id) => (holdings.has(id) ? [[id, holdings.get(id)!] as const] : [])))) });
    c.start();
    await redis.multi()
      .xadd(STREAM, '*', 'event', 'retire', 'vps_id', 'A')
      .xadd(STREAM, '*', 'event', 'register', 'vps_id', 'B', 'name', 'vps-jp-b', 'address', '45.76.9.1')
      .xadd(STREAM, '*', 'event', 'register', 'vps_id', 'C', 'name', 'vps-jp-c', 'address', '45.76.9.2')
      .exec();
    await waitFor(async () => ((await redis.xpending(STREAM, GROUP)) as [number])[0] === 0 && order.length >= 5, 'all three applied');
    expect(order).toEqual(['A (commit lost)', 'B behind', 'A', 'B', 'C']);
  });
});

describe('a lost event that no read brings back', () => {
  // The lost event was acknowledged (or trimmed): rewinding to the pending list cannot bring it
  // back, and rewound again and again, the claim behind it kept the consumer from ever reading
  // the new events (seen: 83 rewinds in 60 s, and a retire published again never read).
  it('gone from the stream: the claim waits in place, as for a transient failure, with no rewind, and later events are read', async () => {
    let behind = 3;
    const order: string[] = [];
    const rewinds: string[] = [];
    const { processor: p } = processor(async (id, fields) => {
      if (fields?.vps_id === 'B' && behind > 0) {
        behind--;
        throw new StateBehindError('test: A holds X, and the event that freed it is gone', '1-0');
      }
      order.push(fields?.vps_id ?? id);
      await settle(id);
      return { outcome: 'applied' };
    });
    const c = consumer('leader', p, { onRewind: (reason) => rewinds.push(reason) });
    c.start();
    await redis.xadd(STREAM, '*', 'event', 'register', 'vps_id', 'B', 'name', 'vps-jp-b', 'address', '45.76.9.1');
    await redis.xadd(STREAM, '*', 'event', 'register', 'vps_id', 'D', 'name', 'vps-jp-d', 'address', '45.76.9.4');
    await waitFor(async () => ((await redis.xpending(STREAM, GROUP)) as [number])[0] === 0 && order.length >= 2, 'both applied');
    expect(order.sort()).toEqual(['B', 'D']);
    expect(rewinds).toEqual([]);
  });
});

describe('the stray check never takes the consumer\'s own entries', () => {
  // XAUTOCLAIM over the whole group took this consumer's own in-flight entry too, and for one
  // the producer had deleted from the stream it dropped it from the pending list and wrote
  // `trimmed`: the apply's commit then acknowledged nothing, and the event, applied, said trimmed.
  it('an in-flight entry deleted from the stream while a stray is claimed keeps its place: its one outcome is the apply\'s', async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const { processor: p } = processor(async (id, fields) => {
      if (fields?.vps_id === 'inflight') await gate;
      await settleWithoutChange(redis, KEYS, { source_id: id, outcome: 'applied', at: new Date().toISOString() });
      return { outcome: 'applied' };
    });
    const c = consumer('leader', p, { strayCheckMs: 200 });
    c.start();
    const inflight = String(await redis.xadd(STREAM, '*', 'event', 'register', 'vps_id', 'inflight'));
    await waitFor(() => Promise.resolve(c.inFlight === 1), 'the event to be in flight');
    // The producer trims it away; a deposed leader took a later entry (a stray).
    await redis.xdel(STREAM, inflight);
    await redis.xadd(STREAM, '*', 'event', 'register', 'vps_id', 'stray');
    await redis.xreadgroup('GROUP', GROUP, 'deposed', 'COUNT', 10, 'STREAMS', STREAM, '>');
    await waitFor(async () => (await redis.xpending(STREAM, GROUP, '-', '+', 10, 'deposed')).length === 0, 'the stray to be claimed');
    release();
    await waitFor(async () => ((await redis.xpending(STREAM, GROUP)) as [number])[0] === 0, 'everything settled');
    const outcomes = ((await redis.xrange(OUTCOMES, '-', '+')) as [string, string[]][]).map(([, f]) => fieldsToRecord(f)).filter((o) => o.source_id === inflight);
    expect(outcomes.map((o) => o.outcome)).toEqual(['applied']);
  });
});

describe('the attempt count is exact', () => {
  it("an earlier attempt's end landing after a later attempt's mark leaves that one counted once, however often its mark is sent again", async () => {
    const log = new AttemptLog(redis, ATTEMPTS, logger);
    expect(await log.begin('7-1', 't1')).toBe(1);
    // t1 ended, but its end reaches Redis only after t2's mark (it was retried meanwhile).
    expect(await log.begin('7-1', 't2')).toBe(2);
    log.end('7-1', 't1');
    await waitFor(() => Promise.resolve(log.owed === 0), 'the end to land');
    // ioredis re-sends t2's mark after a reconnect: still one attempt open.
    expect(await log.begin('7-1', 't2')).toBe(1);
    expect((await log.interrupted(['7-1'])).get('7-1')).toBe(1);
    // An end for a settled event (its field deleted with the acknowledgement) creates nothing.
    await redis.hdel(ATTEMPTS, '7-1');
    log.end('7-1', 't2');
    await waitFor(() => Promise.resolve(log.owed === 0), 'the end to land');
    expect(await redis.hexists(ATTEMPTS, '7-1')).toBe(0);
    log.stop();
  });

  it('a mark whose reply timed out, from an attempt whose term then ended, is ended too: it counts no interruption', async () => {
    // The mark runs in Redis; only its reply is lost (a timeout).
    class LateReplyLog extends AttemptLog {
      override async begin(id: string, token: string): Promise<number> {
        await super.begin(id, token);
        throw new Error('Command timed out');
      }
    }
    const held = lease();
    const { processor: p } = processor(() => new Promise<never>(() => undefined));
    const c = consumer('leader', p, { leadershipTerm: held.term, attemptLog: new LateReplyLog(redis, ATTEMPTS, logger) });
    c.start();
    const id = String(await redis.xadd(STREAM, '*', 'event', 'register', 'vps_id', 'late'));
    await waitFor(async () => (await redis.hexists(ATTEMPTS, id)) === 1, 'the mark to land');
    held.lose();
    await waitFor(() => Promise.resolve(c.inFlight === 0), 'the event to be left pending');
    await waitFor(async () => (await new AttemptLog(redis, ATTEMPTS, logger).interrupted([id])).get(id) === 0, 'the attempt to be ended');
  });

  it('the fields of events acknowledged outside the daemon are swept; pending and undelivered ones stay', async () => {
    const log = new AttemptLog(redis, ATTEMPTS, logger);
    const [acked, pending] = [String(await redis.xadd(STREAM, '*', 'n', '1')), String(await redis.xadd(STREAM, '*', 'n', '2'))];
    await redis.xreadgroup('GROUP', GROUP, 'c', 'COUNT', 2, 'STREAMS', STREAM, '>');
    const later = String(await redis.xadd(STREAM, '*', 'n', '3'));
    for (const id of [acked, pending, later]) await log.begin(id, 'attempt');
    // Someone acknowledges the first by hand (not through the daemon's settling script).
    await redis.xack(STREAM, GROUP, acked);
    expect(await log.sweep(STREAM, GROUP)).toBe(1);
    // `later` was never delivered: its mark stays for when it is.
    expect((await redis.hkeys(ATTEMPTS)).sort()).toEqual([pending, later].sort());
  });
});
