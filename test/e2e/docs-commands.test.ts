/**
 * The event contract's redis-cli commands, exactly as docs/event-contract.md prints them (only
 * `-p PORT` added, since the suite's redis-server listens on a free port), against the real
 * redis-server with the sync daemon consuming: the XADDs become entries, XREAD from `$` hears
 * the next event's outcome, and XRANGE reads the outcome stream.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { RunningSync } from '../../src/sync/run.ts';
import { capture } from '../harness/capture.ts';
import { shellCommandsIn, shellWords } from '../harness/doc-snippets.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import { ensureRedisServer } from '../harness/redis-server.ts';
import { settled, startSyncTestBed, startTestSync, stopSyncTestBed, testSyncConfig, type SyncTestBed } from './sync-support.ts';
import { NAMESPACE, kubectl, waitFor } from './support.ts';

const EVENT_CONTRACT = fileURLToPath(new URL('../../docs/event-contract.md', import.meta.url));
const documented = shellCommandsIn(EVENT_CONTRACT).filter((c) => /^redis-cli X(ADD|READ|RANGE) /.test(c));

let bed: SyncTestBed;
let sync: RunningSync;
let redisCli: string;

beforeAll(async () => {
  bed = await startSyncTestBed('docs-commands');
  sync = await startTestSync(testSyncConfig(kubeconfigFor(inject('cluster'), 'sync'), bed.redisServer.url));
  redisCli = (await ensureRedisServer()).replace(/redis-server$/, 'redis-cli');
});

afterAll(async () => {
  await sync.stop();
  await stopSyncTestBed(bed);
});

/** A documented command's arguments as a shell would pass them, with this server's port. */
function argsOf(command: string): string[] {
  const [, ...args] = shellWords(command);
  return ['-p', String(bed.redisServer.port), ...args];
}

async function run(command: string): Promise<string> {
  const result = await capture(redisCli, argsOf(command));
  expect(result.code, `${command}: ${result.stderr}`).toBe(0);
  expect(result.stdout, command).not.toMatch(/^\(error\)|^ERR/m);
  return result.stdout;
}

async function entryAddress(name: string): Promise<string | undefined> {
  const res = await kubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentry', name, '-o', 'jsonpath={.spec.address}']);
  return res.code === 0 ? res.stdout : undefined;
}

describe("docs/event-contract.md's redis-cli commands, as printed", () => {
  it('publish, hear back and read the outcomes', async () => {
    const [register, move, retire] = documented.filter((c) => c.startsWith('redis-cli XADD '));
    const read = documented.find((c) => c.startsWith('redis-cli XREAD '));
    const range = documented.find((c) => c.startsWith('redis-cli XRANGE '));
    expect([register, move, retire, read, range].every((c) => c !== undefined), documented.join('\n')).toBe(true);

    // XREAD from $ blocks until the next outcome: the one of the register published after it.
    const listener = spawn(redisCli, argsOf(read ?? ''), { stdio: ['ignore', 'pipe', 'pipe'] });
    let heard = '';
    listener.stdout.on('data', (chunk: Buffer) => { heard += chunk.toString(); });
    const exited = new Promise<number | null>((resolve) => listener.on('exit', resolve));
    await waitFor(async () => (await capture(redisCli, ['-p', String(bed.redisServer.port), 'CLIENT', 'LIST'])).stdout.includes('cmd=xread'), 'the XREAD to block');

    const registerId = (await run(register ?? '')).trim();
    expect(await exited).toBe(0);
    expect(heard).toContain(registerId);
    expect(heard).toMatch(/^applied$/m);
    await waitFor(async () => (await entryAddress('vps-jp-01')) === '103.21.244.10', 'the registered entry');

    await run(move ?? '');
    await settled(bed.redis);
    expect(await entryAddress('vps-jp-01')).toBe('103.21.244.77');
    const labels = await kubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentry', 'vps-jp-01', '-o', 'jsonpath={.spec.labels.provider}']);
    expect(labels.stdout).toBe('vultr');

    await run(retire ?? '');
    await settled(bed.redis);
    expect(await entryAddress('vps-jp-01')).toBeUndefined();

    // XRANGE by time, as printed (its window is the doc's example day, so it may well be empty),
    // then the same command over the whole stream: one outcome per event, in order.
    await run(range ?? '');
    const whole = await run((range ?? '').replace(/ \d+ \d+$/, ' - +'));
    expect(whole.split('\n').filter((l) => /^(applied|unchanged|deleted|dead-lettered|superseded)$/.test(l))).toEqual(['applied', 'applied', 'deleted']);
  });
});

describe("docs/event-contract.md's words about its commands", () => {
  it('the times an XRANGE example names in its prose are the times of its ids', () => {
    const text = readFileSync(EVENT_CONTRACT, 'utf8');
    const NUMBERS: Record<string, number> = { one: 1, two: 2, three: 3, five: 5, ten: 10, fifteen: 15, thirty: 30, sixty: 60 };
    const examples = [...text.matchAll(/the\s+(\w+)\s+minutes?\s+from\s+(\d{4}-\d{2}-\d{2})\s+(\d{2}:\d{2})\s+UTC\):?\n\n```sh\n(redis-cli XRANGE [^\n]*? (\d+) (\d+))\n```/g)];
    expect(examples.length, 'an XRANGE example whose prose says "the N minutes from YYYY-MM-DD HH:MM UTC"').toBeGreaterThan(0);
    for (const [, minutes = '', day = '', time = '', command = '', start = '', end = ''] of examples) {
      expect([command, new Date(Number(start)).toISOString()]).toEqual([command, `${day}T${time}:00.000Z`]);
      expect([command, (Number(end) - Number(start)) / 60_000]).toEqual([command, NUMBERS[minutes] ?? Number(minutes)]);
    }
  });
});
