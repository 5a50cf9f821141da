/**
 * Bad input on the stream, as a buggy or hostile producer could write it: 10,000 random
 * entries that are each invalid by construction (unknown or missing event type, missing
 * fields, malformed labels, bad or huge values, binary), with 200 valid registers
 * interleaved, through the real daemon, redis-server and API server. Every invalid entry is
 * dead-lettered with a bounded reason and its fields kept whole, every valid one is applied,
 * nothing stays pending, and the daemon goes on working. Reproduce with the printed seed.
 */
import fc from 'fast-check';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { publishMany } from '../../src/sync/publisher.ts';
import type { RunningSync } from '../../src/sync/run.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import type { RunningRedis } from '../harness/redis-server.ts';
import { STREAM, deadLetters, settled, startSyncTestBed, startTestSync, stopSyncTestBed, testSyncConfig } from './sync-support.ts';
import { NAMESPACE, mustKubectl, type E2EWebhook } from './support.ts';
import { fuzzSeed } from '../fixtures/fuzz-seed.ts';

const SEED = fuzzSeed();
const INVALID = 10_000;
const VALID = 200;
let dataDir: string;
let redisServer: RunningRedis;
let redis: Redis;
let hook: E2EWebhook;
let sync: RunningSync;

beforeAll(async () => {
  ({ dataDir, redisServer, redis, hook } = await startSyncTestBed('bad-events'));
  sync = await startTestSync(testSyncConfig(kubeconfigFor(inject('cluster'), 'sync'), redisServer.url, { concurrency: 32 }));
});

afterAll(async () => {
  await sync.stop();
  await stopSyncTestBed({ dataDir, redisServer, redis, hook });
});

const good = { event: 'register', vps_id: 'v1', name: 'vps-jp-1', address: '45.77.0.1', country: 'jp' };
const flat = (fields: Record<string, string>): string[] => Object.entries(fields).flat();
const text = fc.string({ maxLength: 40 });

/** Entries each invalid by construction, as field/value lists. */
const invalid: fc.Arbitrary<string[]> = fc.oneof(
  text.filter((t) => t !== 'register' && t !== 'retire').map((event) => flat({ ...good, event })),
  fc.constantFrom('event', 'vps_id', 'name', 'address', 'country').map((missing) => flat(Object.fromEntries(Object.entries(good).filter(([k]) => k !== missing)))),
  text.map((address) => flat({ ...good, address: `not-an-ip ${address}` })),
  fc.constantFrom('10.0.0.1', '127.0.0.1', '::1', '100.64.0.1', '192.168.1.1', '45.77.0.1:443', '45.77.0.0/24').map((address) => flat({ ...good, address })),
  // An array is never a labels object, whatever follows the bracket.
  text.map((labels) => flat({ ...good, labels: `[${labels}` })),
  fc.constantFrom('', ' ', 'a b', 'x'.repeat(200), '-leading').map((vps_id) => flat({ event: 'retire', vps_id })),
  fc.integer({ min: 1_000, max: 200_000 }).map((n) => flat({ ...good, name: `vps-jp-${'9'.repeat(n)}` })),
  fc.integer({ min: 1_000, max: 200_000 }).map((n) => flat({ ...good, country: 'x'.repeat(n) })),
  fc.uint8Array({ minLength: 1, maxLength: 64 }).map((bytes) => ['event', Buffer.from(bytes).toString('latin1') + '\u0000', 'vps_id', 'v1']),
  fc.constant(null).map(() => ['payload', 'no event field at all']),
);

describe('bad input on the stream', () => {
  it(`${INVALID.toLocaleString('en')} invalid entries are dead-lettered with bounded reasons, the ${VALID} valid ones among them applied, and the daemon goes on (seed ${SEED})`, async () => {
    const bad = fc.sample(invalid, { numRuns: INVALID, seed: SEED });
    const valid = Array.from({ length: VALID }, (_, i) => flat({ event: 'register', vps_id: `ok-${i}`, name: `vps-jp-${8000 + i}`, address: `45.77.${1 + Math.floor(i / 200)}.${1 + (i % 200)}`, country: 'jp' }));
    // Valid events spread evenly among the bad ones.
    const all: string[][] = [];
    const every = Math.floor(INVALID / VALID);
    bad.forEach((entry, i) => {
      all.push(entry);
      if (i % every === 0 && all.length > 0) all.push(valid[i / every] ?? []);
    });
    const events = all.filter((e) => e.length > 0);
    await publishMany(redis, STREAM, events);
    await settled(redis, 240_000);

    const letters = await deadLetters(redis);
    expect(letters.length).toBe(INVALID);
    const longest = Math.max(...letters.map((l) => (l.dlq_reason ?? '').length));
    expect(longest).toBeLessThanOrEqual(1_024);
    expect(letters.every((l) => (l.dlq_rule ?? '') !== '' && (l.dlq_reason ?? '') !== '')).toBe(true);
    // The original fields are kept whole: the longest name sent is the longest name stored.
    const longestNameSent = Math.max(...bad.map((e) => (e[e.indexOf('name') + 1] ?? '').length));
    expect(Math.max(...letters.map((l) => (l.name ?? '').length))).toBe(longestNameSent);
    const rules = new Map<string, number>();
    for (const l of letters) rules.set(l.dlq_rule ?? '', (rules.get(l.dlq_rule ?? '') ?? 0) + 1);
    console.error(`[bad-events] seed ${SEED}: dead letters by rule ${JSON.stringify(Object.fromEntries(rules))}; longest reason ${longest}`);

    const names = (await mustKubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentries', '-o', 'jsonpath={.items[*].metadata.name}'])).split(' ').filter((n) => n.startsWith('vps-jp-8'));
    expect(names.length).toBe(VALID);
    // Still working: a new event after all that is applied, and liveness is fine.
    await publishMany(redis, STREAM, [flat({ event: 'register', vps_id: 'after', name: 'vps-jp-9999', address: '45.77.9.9', country: 'jp' })]);
    await settled(redis);
    expect(await mustKubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentry', 'vps-jp-9999', '-o', 'jsonpath={.spec.address}'])).toBe('45.77.9.9');
    expect((await fetch(`http://127.0.0.1:${sync.port}/healthz`)).status).toBe(200);
  }, 300_000);
});
