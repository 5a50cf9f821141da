/**
 * Bad input at the webhook, as anything on the network could send it: 100,000 random and
 * malformed bodies (truncated JSON, wrong types, huge strings and label maps, deep nesting,
 * wrong apiVersion, missing uid, not JSON at all) against the real server in its own
 * process, with the chart's heap flags for its 320 Mi webhook pod. No crash, no 5xx, every answer a
 * clear 4xx or a valid AdmissionReview, memory inside the pod's limit. Then slow and
 * oversized clients. Reproduce a failure with the seed it prints.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { Agent, request } from 'node:https';
import { createInterface } from 'node:readline';
import { connect as tlsConnect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { admissionRequest, admissionReview, completeEntry } from '../fixtures/entries.ts';
import { fuzzSeed } from '../fixtures/fuzz-seed.ts';

const SEED = fuzzSeed();
const BODIES = 100_000;
const HEADERS_TIMEOUT_MS = 1_500;
let server: ChildProcess;
let port: number;
let metricsPort: number;
let ca: string;

beforeAll(async () => {
  server = spawn(process.execPath, ['--max-old-space-size=128', '--max-semi-space-size=16', fileURLToPath(new URL('../harness/webhook-process.ts', import.meta.url))], {
    env: { ...process.env, WEBHOOK_HEADERS_TIMEOUT_MS: String(HEADERS_TIMEOUT_MS) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const stdout = server.stdout;
  if (stdout === null) throw new Error('no stdout');
  const line = await new Promise<string>((resolve) => createInterface({ input: stdout }).once('line', resolve));
  stdout.resume();
  ({ port, metricsPort, ca } = JSON.parse(line) as { port: number; metricsPort: number; ca: string });
});

afterAll(() => {
  server.kill('SIGTERM');
});

/** A valid review to break: the tests' request fixture, with its own uid. */
const validReview = (uid: string): Record<string, unknown> => structuredClone(admissionReview({ ...admissionRequest('CREATE', completeEntry()), uid }));

/** Sets `value` at a dotted path, creating objects on the way. */
function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.');
  let node: Record<string, unknown> = target;
  for (const key of keys.slice(0, -1)) {
    const next = node[key];
    if (next === null || typeof next !== 'object') node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[keys.at(-1) as string] = value;
}

const PATHS = ['apiVersion', 'kind', 'request', 'request.uid', 'request.kind', 'request.kind.kind', 'request.operation', 'request.userInfo', 'request.userInfo.groups', 'request.namespace', 'request.object', 'request.object.metadata', 'request.object.metadata.name', 'request.object.metadata.labels', 'request.object.spec', 'request.object.spec.address', 'request.object.spec.labels', 'request.object.spec.ports', 'request.object.spec.weight', 'request.oldObject', 'request.dryRun'];

/** JSON nested `depth` levels deep, as text (JSON.stringify itself would overflow its stack). */
const deepJson = (depth: number): string => `${'{"a":['.repeat(depth)}"bottom"${']}'.repeat(depth)}`;

/** One body to send: its bytes and content type. */
type Body = { text: string; contentType: string };
const json = (value: unknown): Body => ({ text: JSON.stringify(value), contentType: 'application/json' });

const body: fc.Arbitrary<Body> = fc.oneof(
  // A valid review with one field replaced by anything.
  { weight: 40, arbitrary: fc.tuple(fc.string(), fc.constantFrom(...PATHS), fc.jsonValue()).map(([uid, path, value]) => { const r = validReview(uid); setPath(r, path, value); return json(r); }) },
  // Truncated JSON.
  { weight: 15, arbitrary: fc.tuple(fc.string(), fc.nat()).map(([uid, cut]) => { const text = JSON.stringify(validReview(uid)); return { text: text.slice(0, cut % text.length), contentType: 'application/json' }; }) },
  // Not an object, or not JSON, or not UTF-8.
  { weight: 10, arbitrary: fc.jsonValue().map((v) => json(v)) },
  { weight: 5, arbitrary: fc.uint8Array({ maxLength: 512 }).map((bytes) => ({ text: Buffer.from(bytes).toString('latin1'), contentType: 'application/json' })) },
  { weight: 3, arbitrary: fc.string().map((text) => ({ text, contentType: 'text/plain' })) },
  // Wrong apiVersion or kind, missing uid.
  { weight: 10, arbitrary: fc.tuple(fc.string(), fc.constantFrom('admission.k8s.io/v1beta1', 'v1', '', 'admission.k8s.io/v2')).map(([uid, v]) => json({ ...validReview(uid), apiVersion: v })) },
  { weight: 5, arbitrary: fc.constant(null).map(() => { const r = validReview('x') as { request: Record<string, unknown> }; delete r.request.uid; return json(r); }) },
  // Deep nesting in the object and in the labels.
  { weight: 5, arbitrary: fc.tuple(fc.integer({ min: 100, max: 20_000 }), fc.constantFrom('request.object.spec.labels', 'request.object', 'request.object.metadata.labels', 'request.userInfo')).map(([depth, path]) => { const r = validReview('deep'); setPath(r, path, 'DEEP'); return { text: JSON.stringify(r).replace('"DEEP"', deepJson(depth)), contentType: 'application/json' }; }) },
  // Huge label maps and huge strings (rarely: they are big).
  { weight: 1, arbitrary: fc.integer({ min: 1_000, max: 20_000 }).map((n) => { const r = validReview('labels'); setPath(r, 'request.object.spec.labels', Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, `v${i}`]))); return json(r); }) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom('request.object.spec.address', 'request.object.metadata.name', 'request.uid', 'request.userInfo.username'), fc.integer({ min: 100_000, max: 1_000_000 })).map(([path, size]) => { const r = validReview('huge'); setPath(r, path, 'x'.repeat(size)); return json(r); }) },
);

interface Answer { status: number; text: string; error?: string }

function post(agent: Agent, path: string, b: Body): Promise<Answer> {
  return new Promise((resolve) => {
    const payload = Buffer.from(b.text, 'latin1');
    const req = request({ host: '127.0.0.1', port, path, method: 'POST', agent, headers: { 'content-type': b.contentType, 'content-length': payload.length } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }); });
    });
    req.on('error', (error) => { resolve({ status: 0, text: '', error: error.message }); });
    req.end(payload);
  });
}

/** What a good answer looks like: a 4xx with a JSON error, or an AdmissionReview answering the request's uid. */
function problem(sent: Body, answer: Answer): string | undefined {
  if (answer.error !== undefined) return `connection error ${answer.error}`;
  if (answer.status >= 400 && answer.status < 500) {
    try {
      const parsed = JSON.parse(answer.text) as { error?: unknown };
      return typeof parsed.error === 'string' && parsed.error.length > 0 && parsed.error.length <= 4_096 ? undefined : `4xx without a bounded error message: ${answer.text.slice(0, 200)}`;
    } catch {
      return `4xx body is not JSON: ${answer.text.slice(0, 200)}`;
    }
  }
  if (answer.status !== 200) return `status ${answer.status}: ${answer.text.slice(0, 200)}`;
  const review = JSON.parse(answer.text) as { apiVersion?: string; response?: { uid?: unknown; allowed?: unknown } };
  const sentUid = (JSON.parse(sent.text) as { request: { uid: unknown } }).request.uid;
  if (review.apiVersion !== 'admission.k8s.io/v1' || typeof review.response?.allowed !== 'boolean' || review.response.uid !== sentUid) return `not a valid AdmissionReview answer: ${answer.text.slice(0, 200)}`;
  return undefined;
}

async function residentMiB(): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  return Number(text.split('\n').find((l) => l.startsWith('edge_registrar_process_resident_memory_bytes '))?.split(' ')[1]) / 1048576;
}

describe('bad input at the webhook', () => {
  it(`${BODIES.toLocaleString('en')} random and malformed bodies: no crash, no 5xx, each answer a clear 4xx or a valid AdmissionReview, memory inside the pod's limit (seed ${SEED})`, async () => {
    const bodies = fc.sample(body, { numRuns: BODIES, seed: SEED });
    const agent = new Agent({ keepAlive: true, maxSockets: 16, ca });
    const problems: string[] = [];
    const statuses = new Map<number, number>();
    let next = 0;
    let peak = 0;
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < bodies.length) {
        const i = next++;
        const sent = bodies[i] as Body;
        const answer = await post(agent, i % 2 === 0 ? '/validate' : '/mutate', sent);
        statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
        const found = problem(sent, answer);
        if (found !== undefined && problems.length < 20) problems.push(`#${i} (${sent.text.slice(0, 120)}…): ${found}`);
        if (i % 10_000 === 0) peak = Math.max(peak, await residentMiB());
      }
    }));
    agent.destroy();
    peak = Math.max(peak, await residentMiB());
    console.error(`[bad-input] seed ${SEED}: answers by status ${JSON.stringify(Object.fromEntries(statuses))}; peak RSS ${peak.toFixed(0)} MiB`);
    expect(problems).toEqual([]);
    expect(server.exitCode).toBeNull();
    // Both kinds of answer were exercised.
    expect(statuses.get(200) ?? 0).toBeGreaterThan(1_000);
    expect(statuses.get(400) ?? 0).toBeGreaterThan(1_000);
    // The chart's memory limit for the webhook.
    expect(peak).toBeLessThan(320);
  }, 300_000);

  it('a client that dribbles its headers is answered 408 and cut off at the header timeout', async () => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca, servername: 'localhost' });
    await new Promise<void>((resolve) => socket.once('secureConnect', resolve));
    let received = '';
    socket.on('data', (d: Buffer) => (received += d.toString()));
    const closed = new Promise<number>((resolve) => socket.once('close', () => { resolve(performance.now()); }));
    const started = performance.now();
    socket.write('POST /validate HTTP/1.1\r\nHost: localhost\r\n');
    const dribble = setInterval(() => { if (!socket.destroyed) socket.write('X-Slow: 1\r\n'); }, 200);
    const at = await closed;
    clearInterval(dribble);
    expect(received.split('\r\n')[0]).toBe('HTTP/1.1 408 Request Timeout');
    // Cut off at the header timeout (checked every second), not left to dribble for ever.
    expect(at - started).toBeLessThan(HEADERS_TIMEOUT_MS + 3_000);
  });

  it('an oversized body is refused from its Content-Length, before it is sent', async () => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca, servername: 'localhost' });
    await new Promise<void>((resolve) => socket.once('secureConnect', resolve));
    let received = '';
    const answered = new Promise<void>((resolve) => socket.on('data', (d: Buffer) => { received += d.toString(); if (received.includes('\r\n\r\n')) resolve(); }));
    // Headers announcing 100 MB, and then nothing: the answer must not wait for the body.
    socket.write('POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n{');
    await answered;
    socket.destroy();
    expect(received.split('\r\n')[0]).toBe('HTTP/1.1 413 Payload Too Large');
  });
});
