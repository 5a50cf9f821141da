/**
 * `npm run soak -- --minutes N`: a randomized workload of a few hundred VPSs (registers,
 * moves, renames, retires, handoffs of addresses and names, bursts, invalid events) against
 * the real stack while faults are injected at random times, then a verdict at quiescence:
 * the cluster holds exactly what the events say, the dead-letter stream exactly the invalid
 * events, nothing is pending, and no state on the way contradicted the events. Prints the
 * counts, then one JSON line (`SOAK {...}`) for the test that runs it; exits 1 on any
 * discrepancy. Every run prints its seed; --seed replays the same workload and fault order.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { deadLetterStream, outcomeStreamOf } from '../../src/redis/keys.ts';
import { ensureKubeBinaries } from '../harness/kube-build.ts';
import { ensureRedisServer } from '../harness/redis-server.ts';
import { unacknowledgedEvents } from '../harness/stream-group.ts';
import { FAULTS, faultKindsFor, type FaultKind } from './faults.ts';
import { EntryObserver } from './observer.ts';
import { OutcomeTail } from './outcome-tail.ts';
import { Producer } from './producer.ts';
import { Random } from './random.ts';
import { SoakStack, type RedisMode } from './stack.ts';
import { discrepancies, verify, type Findings } from './verify.ts';
import { Workload, type PlannedEvent } from './workload.ts';

const STREAM = 'sigma:vps-events';
const GROUP = 'edge-registrar';
const NAMESPACE = 'airport-prod';

const options = new Command('soak')
  .description('fault-injection soak of the sync daemon, the webhook and their dependencies')
  .option('--minutes <minutes>', 'how long the workload and the faults run', '2')
  .option('--fleet <vps>', 'the fleet size the workload hovers around', '300')
  .option('--rate <events>', 'events per second, besides bursts', '15')
  .option('--seed <seed>', 'replay a run: the same workload and fault order')
  .addOption(new Option('--redis <mode>', 'standalone redis-server, or a Redis Cluster of 3 primaries and 3 replicas (cluster failovers, a SIGKILLed primary and a resharded slot instead of the standalone server\'s faults)').choices(['standalone', 'cluster']).default('standalone'))
  .option('--keep', 'keep the logs and data directory')
  .parse()
  .opts<{ minutes: string; fleet: string; rate: string; seed?: string; redis: RedisMode; keep?: boolean }>();

const minutes = Number(options.minutes);
const fleet = Number(options.fleet);
const rate = Number(options.rate);
const seed = options.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(options.seed);
for (const [flag, value] of [['--minutes', minutes], ['--fleet', fleet], ['--rate', rate], ['--seed', seed]] as const) {
  if (!Number.isFinite(value) || value < 0) {
    console.error(`soak: ${flag} ${String(value)} is not a non-negative number`);
    process.exit(2);
  }
}

const started = Date.now();
const elapsed = (): string => `${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s`;
const log = (line: string): void => { console.error(`[soak ${elapsed()}] ${line}`); };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const random = new Random(seed);
const dir = await mkdtemp(join(tmpdir(), 'edge-registrar-soak-'));
log(`seed ${seed}; ${minutes} min, fleet ~${fleet}, ${rate} events/s, Redis ${options.redis}; logs in ${dir}`);
const binaries = await ensureKubeBinaries(log);
const stack = await SoakStack.start({ binaries, redisServer: await ensureRedisServer(log), redisMode: options.redis, dir, log });
log(`stack up: kube-apiserver, ${options.redis === 'cluster' ? 'a Redis Cluster (3 primaries, 3 replicas)' : 'redis-server'}, webhook (registered, failurePolicy Fail), sync replica a leading`);
const faultKinds = faultKindsFor(options.redis);

// No resend on reconnect: a resent XADD would be a second event the model does not know.
// Ctrl-C (or a CI timeout's SIGTERM) stops every server the soak started, then exits.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`${signal}: stopping the stack`);
    void stack.stop().finally(() => process.exit(130));
  });
}
const redis = stack.redisClient();
redis.on('error', () => undefined);
const producer = new Producer(redis, STREAM, { cluster: options.redis === 'cluster' });
const observer = new EntryObserver(() => stack.adminKubeconfig(), NAMESPACE);
observer.start();
// sigma-api's reader of the outcome stream, on a connection of its own (its reads block).
const tailClient = stack.redisClient();
tailClient.on('error', () => undefined);
const tail = new OutcomeTail(tailClient, outcomeStreamOf(STREAM));
tail.start();
const workload = new Workload(random, { fleet });

const outcome: { findings?: Findings } = {};
const faultsDone: { kind: FaultKind; seconds: number }[] = [];
try {
  // Start from half the fleet, published as one backfill burst.
  producer.enqueue(workload.burst(Math.floor(fleet / 2)));
  await producer.flush();

  const deadline = started + minutes * 60_000;
  let producing = true;
  let credit = 0;
  let nextBurst = Date.now() + random.int(15_000, 30_000);
  const produce = async (): Promise<void> => {
    while (producing) {
      credit += rate / 10;
      while (credit >= 1) {
        credit--;
        producer.enqueue(workload.next());
      }
      if (Date.now() >= nextBurst) {
        producer.enqueue(workload.burst(random.int(50, 150)));
        nextBurst = Date.now() + random.int(15_000, 30_000);
      }
      await producer.flush();
      await sleep(100);
    }
  };
  const production = produce();

  // Every fault kind once per cycle, in random order, at random gaps. The first cycle always
  // completes (so a short run still covers them all); later ones stop at the deadline.
  const context = {
    stack,
    holdProducer: () => producer.hold(),
    releaseProducer: () => { producer.release(); },
    log,
  };
  for (let cycle = 0; cycle === 0 || Date.now() < deadline; cycle++) {
    for (const kind of random.shuffle(faultKinds)) {
      if (cycle > 0 && Date.now() >= deadline) break;
      await sleep(random.int(2_000, 6_000));
      log(`fault ${kind}`);
      const t0 = Date.now();
      await FAULTS[kind](context);
      faultsDone.push({ kind, seconds: (Date.now() - t0) / 1000 });
      log(`fault ${kind}: recovered in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    }
  }
  while (Date.now() < deadline) await sleep(500);
  producing = false;
  await production;
  await producer.flush();
  log(`workload stopped: ${producer.published.length} events published; waiting for quiescence`);

  // Quiescence: the leader back and everything acknowledged, then the entries as the events say.
  await stack.replica('a').waitLeader(120_000);
  const quiet = Date.now();
  for (;;) {
    const left = await unacknowledgedEvents(redis, STREAM, GROUP).catch(() => Number.NaN);
    if (left === 0) break;
    if (Date.now() - quiet > 300_000) throw new Error(`not quiescent after 300 s: ${left} events unacknowledged`);
    await sleep(500);
  }
  log(`quiescent after ${((Date.now() - quiet) / 1000).toFixed(1)} s`);

  const expected = workload.expectedEntries();
  const deadLetters = (await redis.xrange(deadLetterStream(STREAM), '-', '+')) as [string, string[]][];
  const deadLetterSourceIds = deadLetters.map(([, fields]) => fields[fields.indexOf('dlq_source_id') + 1] ?? '?');
  const pending = ((await redis.xpending(STREAM, GROUP)) as [number])[0];
  observer.stop();
  const outcomeRows = (await redis.xrange(outcomeStreamOf(STREAM), '-', '+')) as [string, string[]][];
  const outcomes = outcomeRows.map(([, fields]) => ({ sourceId: fields[fields.indexOf('source_id') + 1] ?? '?', outcome: fields[fields.indexOf('outcome') + 1] ?? '?' }));
  await tail.stop();
  // A failover that loses unreplicated writes re-applies at most the events settled unreplicated: --concurrency (16) each time.
  const heardTwiceAllowed = faultsDone.filter((f) => f.kind === 'cluster-failover-unreplicated').length * 16;
  const findings = verify({ expected, events: producer.published, finalEntries: await observer.list(), deadLetterSourceIds, pending, history: observer.history, outcomes, heard: tail.heard, heardTwiceAllowed });

  outcome.findings = findings;
  report(producer.published, findings, faultsDone, observer);
} finally {
  observer.stop();
  await tail.stop();
  tailClient.disconnect();
  redis.disconnect();
  await stack.stop().catch((error: unknown) => { log(`stopping the stack: ${String(error)}`); });
  if (options.keep !== true && passed(outcome.findings)) await rm(dir, { recursive: true, force: true });
  else log(`logs kept in ${dir}`);
}
process.exit(passed(outcome.findings) ? 0 : 1);

/** The model's verdict, and no replica crashed: the supervisor hides a crash from the model. */
function passed(findings: Findings | undefined): boolean {
  return findings !== undefined && discrepancies(findings) === 0 && crashes().length === 0;
}

function crashes(): string[] {
  return [...stack.replicas.values()].flatMap((r) => r.crashes);
}

function count<T>(items: readonly T[], key: (item: T) => string): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const item of items) counts[key(item)] = (counts[key(item)] ?? 0) + 1;
  return counts;
}

function report(events: readonly PlannedEvent[], result: Findings, faults: readonly { kind: FaultKind; seconds: number }[], watch: EntryObserver): void {
  const byKind = count(events, (e) => e.kind);
  const byExpectation = count(events, (e) => e.expect);
  const faultCounts = count(faults, (f) => f.kind);
  const restarts = [...stack.replicas.values()].reduce((sum, r) => ({ terminated: sum.terminated + r.restarts.terminated, crashed: sum.crashed + r.restarts.crashed, liveness: sum.liveness + r.restarts.liveness }), { terminated: 0, crashed: 0, liveness: 0 });
  const expectedDeadLetters = byExpectation['dead-letter'] ?? 0;
  const summary = {
    seed,
    redis: options.redis,
    minutes: Number(((Date.now() - started) / 60_000).toFixed(1)),
    events: events.length,
    eventsByKind: byKind,
    expected: byExpectation,
    faults: faultCounts,
    faultSeconds: Object.fromEntries(Object.keys(faultCounts).map((k) => [k, Math.max(...faults.filter((f) => f.kind === k).map((f) => f.seconds))])),
    supervisorRestarts: restarts,
    watch: { states: watch.history.length, relists: watch.relists },
    entries: workload.fleetSize,
    lost: result.lost.length,
    wrong: result.wrong.length,
    pending: result.pending,
    deadLettered: expectedDeadLetters - result.deadLetterMissing.length,
    deadLetterExpected: expectedDeadLetters,
    deadLetterMissing: result.deadLetterMissing.length,
    deadLetterUnexpected: result.deadLetterUnexpected.length,
    deadLetterDuplicated: result.deadLetterDuplicated.length,
    historyViolations: result.history.length,
    outcomeMissing: result.outcomeMissing.length,
    outcomeUntrue: result.outcomeUntrue.length,
    outcomeDuplicated: result.outcomeDuplicated.length,
    heardTwice: result.heardTwice.length,
    heardTwiceAllowed: result.heardTwiceAllowed,
  };
  const lines = [
    `events: ${events.length} (${Object.entries(byKind).map(([k, n]) => `${k} ${n}`).join(', ')})`,
    `faults: ${faults.length} (${Object.entries(faultCounts).map(([k, n]) => `${k} ${n}`).join(', ')}); supervisor restarts: after SIGTERM ${restarts.terminated}, crashed ${restarts.crashed}, liveness ${restarts.liveness}`,
    `watch: ${watch.history.length} entry states seen, ${watch.relists} relists`,
    `entries: ${workload.fleetSize} expected`,
    `lost ${summary.lost}, wrong ${summary.wrong}, pending ${summary.pending}, dead-lettered ${summary.deadLettered} of ${expectedDeadLetters} expected (unexpected ${summary.deadLetterUnexpected}, duplicated ${summary.deadLetterDuplicated}), history violations ${summary.historyViolations}`,
    `outcomes: missing ${summary.outcomeMissing}, untrue ${summary.outcomeUntrue}, duplicated ${summary.outcomeDuplicated}; heard twice by sigma-api's reader ${summary.heardTwice} (allowed ${summary.heardTwiceAllowed})`,
  ];
  for (const line of lines) console.log(line);
  for (const [what, items] of Object.entries({ crash: crashes(), lost: result.lost, wrong: result.wrong, 'dead letter missing': result.deadLetterMissing, 'dead letter unexpected': result.deadLetterUnexpected, 'dead letter duplicated': result.deadLetterDuplicated, history: result.history, 'outcome missing': result.outcomeMissing, 'outcome untrue': result.outcomeUntrue, 'outcome duplicated': result.outcomeDuplicated, 'heard twice': result.heardTwice })) {
    for (const item of items.slice(0, 20)) console.log(`  ${what}: ${item}`);
    if (items.length > 20) console.log(`  ${what}: ... and ${items.length - 20} more`);
  }
  console.log(`SOAK ${JSON.stringify(summary)}`);
}
