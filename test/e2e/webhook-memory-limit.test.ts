/**
 * The webhook under a real memory limit, as in its pod: the real server (its own process,
 * the chart's heap flags) in a memory cgroup of 320 MiB, the chart's limit. 500 hostile
 * clients (from 16 addresses of their own) keep connections open, each announcing a body of 4 MiB (over the size limit) or
 * 3 MiB (under it), sending all of it but the last byte and holding on, and reconnecting when
 * cut off. Meanwhile real AdmissionReviews arrive four times a second, as the API server sends
 * them. The kernel must never OOM-kill the webhook, and every real review must be answered
 * within the chart's webhook timeout (5 s).
 *
 * Without the body budget, the held bodies alone pass the limit within seconds and the kernel
 * kills the process (EDGE_REGISTRAR_MAX_BODY_BYTES_IN_FLIGHT=100000000000 shows it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { Agent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { admissionRequest, admissionReview, completeEntry } from '../fixtures/entries.ts';
import { capture } from '../harness/capture.ts';
import { postJson } from '../harness/https-client.ts';
import { createMemoryCgroup, memoryCgroupUnavailable, type MemoryCgroup } from '../harness/memory-cgroup.ts';

const LIMIT_MIB = 320;
const HOSTILE_CONNECTIONS = 500;
const SECONDS = 25;
const REVIEW_TIMEOUT_MS = 5_000;
const MiB = 1024 * 1024;

const unavailable = await memoryCgroupUnavailable();
let cgroup: MemoryCgroup | undefined;
let server: ChildProcess | undefined;
let port = 0;
let metricsPort = 0;
let ca = '';

beforeAll(async () => {
  if (unavailable !== undefined) return;
  cgroup = await createMemoryCgroup(`edge-registrar-webhook-${process.pid}`, LIMIT_MIB * MiB);
  const { command, args } = cgroup.wrap(process.execPath, ['--max-old-space-size=128', '--max-semi-space-size=16', fileURLToPath(new URL('../harness/webhook-process.ts', import.meta.url))]);
  // The real reviews come from 127.0.0.1, given as the API server's address as the chart gives it;
  // the hostile clients from addresses of their own (test/harness/hostile-bodies.ts).
  server = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, EDGE_REGISTRAR_API_SERVER_CIDRS: '127.0.0.1/32' } });
  const stdout = server.stdout;
  if (stdout === null) throw new Error('no stdout');
  const line = await new Promise<string>((resolve) => createInterface({ input: stdout }).once('line', resolve));
  stdout.resume();
  ({ port, metricsPort, ca } = JSON.parse(line) as { port: number; metricsPort: number; ca: string });
});

afterAll(async () => {
  server?.kill('SIGKILL');
  await cgroup?.remove();
});

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  return Number(text.split('\n').find((l) => l.startsWith(`${name} `))?.split(' ')[1] ?? Number.NaN);
}

/** Peak resident memory of the process, from the kernel (VmHWM). */
async function peakResidentMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? Number.NaN) / 1024;
}

describe.skipIf(unavailable !== undefined)(`the webhook in a ${LIMIT_MIB} MiB memory cgroup${unavailable === undefined ? '' : ` (skipped: no memory cgroup here: ${unavailable})`}`, () => {
  it(`${HOSTILE_CONNECTIONS} slow hostile connections with 3-4 MiB bodies: no OOM kill, and real reviews answered within ${REVIEW_TIMEOUT_MS / 1000} s`, async () => {
    expect(await metric('edge_registrar_webhook_body_budget_bytes')).toBe((LIMIT_MIB * MiB) / 8);
    const caDir = await mkdtemp(join(tmpdir(), 'hostile-'));
    onTestFinished(() => rm(caDir, { recursive: true, force: true }));
    const caFile = join(caDir, 'ca.crt');
    await writeFile(caFile, ca);
    // The hostile clients run in their own process: their load must not delay this one's clock.
    const attack = capture(process.execPath, [fileURLToPath(new URL('../harness/hostile-bodies.ts', import.meta.url)), String(port), caFile, String(HOSTILE_CONNECTIONS), String(SECONDS)]);
    const until = Date.now() + SECONDS * 1000;
    const agent = new Agent({ keepAlive: true, maxSockets: 4, ca });
    const latencies: number[] = [];
    const statuses = new Map<number, number>();
    let peakInFlightMiB = 0;
    while (Date.now() < until) {
      const started = performance.now();
      const answer = await Promise.race([
        postJson(port, '/validate', admissionReview(admissionRequest('CREATE', completeEntry())), ca, agent),
        new Promise<{ status: number }>((resolve) => setTimeout(() => { resolve({ status: 0 }); }, REVIEW_TIMEOUT_MS)),
      ]).catch(() => ({ status: -1 }));
      latencies.push(performance.now() - started);
      statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
      peakInFlightMiB = Math.max(peakInFlightMiB, (await metric('edge_registrar_webhook_body_bytes_in_flight')) / MiB);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    const hostile = JSON.parse((await attack).stdout) as { made: number; answered: number };
    agent.destroy();
    const shed = await metric('edge_registrar_webhook_bad_requests_total{handler="validate",reason="over-budget"}');
    const tooLarge = await metric('edge_registrar_webhook_bad_requests_total{handler="validate",reason="too-large"}');
    const pid = server?.pid ?? 0;
    const [peakCgroupMiB, oomKills, peakRssMiB] = [((await cgroup?.peakBytes()) ?? 0) / MiB, (await cgroup?.oomKills()) ?? 0, await peakResidentMiB(pid).catch(() => Number.NaN)];
    latencies.sort((a, b) => a - b);
    console.error(
      `[webhook-memory] hostile connections ${hostile.made} (${hostile.answered} answered before cut off; shed 429: ${shed}, 413: ${tooLarge}); real reviews by status ${JSON.stringify(Object.fromEntries(statuses))}, ` +
        `latency p50 ${latencies[Math.floor(latencies.length / 2)]?.toFixed(0)} ms, max ${latencies.at(-1)?.toFixed(0)} ms; ` +
        `peak RSS ${peakRssMiB.toFixed(0)} MiB, cgroup peak ${peakCgroupMiB.toFixed(0)} MiB, bodies in flight peak ${peakInFlightMiB.toFixed(1)} MiB, OOM kills ${oomKills}`,
    );
    expect(oomKills).toBe(0);
    expect(server?.exitCode).toBeNull();
    expect(peakRssMiB).toBeLessThan(LIMIT_MIB);
    // Every real review answered, and in time.
    expect([...statuses.keys()]).toEqual([200]);
    expect(latencies.at(-1)).toBeLessThan(REVIEW_TIMEOUT_MS);
    // The attack was real: bodies were held up to the budget, and the rest shed or refused.
    expect(peakInFlightMiB).toBeGreaterThan(20);
    expect(hostile.made).toBeGreaterThan(HOSTILE_CONNECTIONS);
    expect(shed).toBeGreaterThan(100);
    expect(tooLarge).toBeGreaterThan(100);
  }, 120_000);
});
