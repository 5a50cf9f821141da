/**
 * The webhook's HTTP layer over real HTTPS: codec, status codes, probes, metrics,
 * certificate and policy reload, graceful stop. The namespace state comes from a filled
 * ClusterIndex here; the same server against a real kube-apiserver is in test/e2e.
 */
import jsonPatch from 'fast-json-patch';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { Agent } from 'node:https';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCertificateAuthority, createServingCertificate } from '../../src/certs/authority.ts';
import { writeCertificateFiles } from '../../src/certs/files.ts';
import { webhookConfig } from '../../src/config/webhook.ts';
import { ClusterIndex } from '../../src/kube/cluster-index.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { runWebhook, type RunningWebhook } from '../../src/webhook/run.ts';
import { NAMESPACE, USERS, admissionRequest, admissionReview, completeEntry, sampleEntry } from '../fixtures/entries.ts';
import { httpsRequest, postJson } from '../harness/https-client.ts';

let dir: string;
let ca: { cert: string; key: string };
let webhook: RunningWebhook;
let policyFile: string;

async function writeServing(days = 365): Promise<void> {
  const serving = createServingCertificate({ ca, hosts: ['localhost'], ips: ['127.0.0.1'], days });
  await writeCertificateFiles(dir, ca, serving, true);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'edge-registrar-webhook-'));
  ca = createCertificateAuthority('test-ca', 30);
  await writeServing();
  policyFile = join(dir, 'policy.yaml');
  await writeFile(policyFile, 'app: xrayr\n');
  const view = new ClusterIndex(NAMESPACE);
  view.replace('WorkloadEntry', NAMESPACE, [{ metadata: { name: 'vps-hk-01' }, spec: { address: '2606:4700::1111' } }]);
  view.replace('Service', NAMESPACE, []);
  view.replace('ServiceAccount', NAMESPACE, [{ metadata: { name: 'xrayr-vm' } }]);
  const config = {
    ...webhookConfig({ port: '0', host: '127.0.0.1', tlsCert: join(dir, 'tls.crt'), tlsKey: join(dir, 'tls.key'), policy: policyFile }, {}),
    fileCheckIntervalMs: 100,
    shutdownDelayMs: 300,
    bodyLimitBytes: 64 * 1024,
  };
  webhook = await runWebhook(config, createLogger('silent', 'test'), { view });
});

afterAll(async () => {
  await webhook.stop();
  await rm(dir, { recursive: true, force: true });
});

const post = (path: string, body: unknown) => postJson(webhook.port, path, body, ca.cert);

/** One series' value from the webhook's /metrics (0 when absent). */
async function metricValue(series: string): Promise<number> {
  const { body } = await httpsRequest(webhook.port, { path: '/metrics', ca: ca.cert });
  const line = body.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.split(' ')[1]);
}

describe('AdmissionReview round trips', () => {
  it('allows a good entry and echoes the uid', async () => {
    const request = admissionRequest('CREATE', completeEntry());
    const res = await post('/validate', admissionReview(request));
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid: request.uid, allowed: true } });
  });

  it('denies a bad entry with a 4xx status and every violation, plus warnings', async () => {
    const entry = completeEntry() as { spec: Record<string, any> };
    entry.spec.address = '2606:4700:0:0:0:0:0:1111'; // vps-hk-01 holds it, in another spelling
    entry.spec.weight = 0;
    delete entry.spec.labels.version;
    const res = await post('/validate', admissionReview(admissionRequest('CREATE', entry)));
    const { response } = JSON.parse(res.body) as { response: { allowed: boolean; status: { code: number; message: string }; warnings: string[] } };
    expect(res.status).toBe(200);
    expect(response.allowed).toBe(false);
    expect(response.status.code).toBe(422);
    expect(response.status.message).toContain('[address.unique] spec.address: "2606:4700:0:0:0:0:0:1111" is already used by WorkloadEntry airport-prod/vps-hk-01');
    expect(response.status.message).toContain('[weight.zero]');
    expect(response.warnings.join('\n')).toContain('no version label');
  });

  it('mutates: the patch applied gives the complete entry', async () => {
    const entry = sampleEntry();
    const res = await post('/mutate', admissionReview(admissionRequest('CREATE', entry)));
    const { response } = JSON.parse(res.body) as { response: { patch: string; patchType: string } };
    expect(response.patchType).toBe('JSONPatch');
    const ops = JSON.parse(Buffer.from(response.patch, 'base64').toString()) as jsonPatch.Operation[];
    expect(jsonPatch.applyPatch(structuredClone(entry), ops, true, false).newDocument).toEqual(completeEntry());
  });

  it('honours dryRun with the same answer', async () => {
    const request = admissionRequest('CREATE', completeEntry(), { dryRun: true });
    const res = await post('/validate', admissionReview(request));
    expect(JSON.parse(res.body).response).toEqual({ uid: request.uid, allowed: true });
  });

  it('DELETE: no patch; ownership enforced', async () => {
    const managed = completeEntry({ managed: true });
    const mutate = await post('/mutate', admissionReview(admissionRequest('DELETE', undefined, { oldObject: managed, user: USERS.alice })));
    expect(JSON.parse(mutate.body).response.patch).toBeUndefined();
    const validate = await post('/validate', admissionReview(admissionRequest('DELETE', undefined, { oldObject: managed, user: USERS.alice })));
    expect(JSON.parse(validate.body).response).toMatchObject({ allowed: false, status: { code: 403 } });
  });
});

describe('bad requests get a clear 4xx', () => {
  const raw = (body: string, contentType = 'application/json', method = 'POST', path = '/validate') =>
    httpsRequest(webhook.port, { method, path, body, headers: { 'content-type': contentType }, ca: ca.cert });

  it.each([
    ['malformed JSON', '{"apiVersion": ', 'application/json', 400, /not valid JSON/],
    ['JSON that is not an object', '[1,2,3]', 'application/json', 400, /not a JSON object/],
    ['a v1beta1 review', JSON.stringify({ apiVersion: 'admission.k8s.io/v1beta1', kind: 'AdmissionReview', request: {} }), 'application/json', 400, /apiVersion: must be "admission.k8s.io\/v1"/],
    ['a review without request', JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' }), 'application/json', 400, /request: .*missing/],
    ['a request without uid', JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { operation: 'CREATE' } }), 'application/json', 400, /request.uid/],
    ['a review nested 5,000 levels deep', `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","object":${'{"a":'.repeat(5_000)}1${'}'.repeat(5_000)}}}`, 'application/json', 400, /nests deeper than 100 levels \(at request\.object\.a\.a\./],
    ['a wrong content type', '{}', 'text/plain', 415, /content type "text\/plain" is not supported/],
    ['an unsupported charset', '{}', 'application/json; charset=latin9', 415, /charset/],
  ])('%s', async (_name, body, type, status, message) => {
    const res = await raw(body, type);
    expect(res.status).toBe(status);
    expect(JSON.parse(res.body).error).toMatch(message);
  });

  it('an oversized body', async () => {
    const res = await raw(JSON.stringify({ padding: 'x'.repeat(100 * 1024) }));
    expect(res.status).toBe(413);
    expect(JSON.parse(res.body).error).toMatch(/larger than 65536 bytes/);
  });

  it('GET on an admission path, and unknown paths', async () => {
    expect((await httpsRequest(webhook.port, { path: '/validate', ca: ca.cert })).status).toBe(405);
    expect((await httpsRequest(webhook.port, { path: '/nope', ca: ca.cert })).status).toBe(404);
  });

  it('TLS below 1.2 is refused', async () => {
    await expect(httpsRequest(webhook.port, { path: '/healthz', ca: ca.cert, minVersion: 'TLSv1', maxVersion: 'TLSv1.1' })).rejects.toThrow();
  });
});

describe('probes and metrics', () => {
  it('healthz and readyz', async () => {
    expect((await httpsRequest(webhook.port, { path: '/healthz', ca: ca.cert })).status).toBe(200);
    expect((await httpsRequest(webhook.port, { path: '/readyz', ca: ca.cert })).status).toBe(200);
  });

  it('metrics count requests by decision, latency and violations', async () => {
    const res = await httpsRequest(webhook.port, { path: '/metrics', ca: ca.cert });
    expect(res.body).toMatch(/edge_registrar_webhook_requests_total\{handler="validate",operation="CREATE",decision="denied"\} [1-9]/);
    expect(res.body).toMatch(/edge_registrar_webhook_request_duration_seconds_bucket\{le="0.005",handler="validate"\}/);
    expect(res.body).toMatch(/edge_registrar_policy_violations_total\{rule="address.unique"\} [1-9]/);
    expect(res.body).toMatch(/edge_registrar_webhook_bad_requests_total\{handler="validate",reason="malformed-json"\} 1/);
    expect(res.body).toMatch(/edge_registrar_webhook_certificate_expiry_timestamp_seconds \d+/);
  });
});

describe('reloads', () => {
  it('a new certificate is served to new connections; an open keep-alive connection stays up', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: ca.cert });
    const before = await httpsRequest(webhook.port, { path: '/healthz', ca: ca.cert, agent });
    await writeServing(10);
    await expect.poll(async () => (await httpsRequest(webhook.port, { path: '/healthz', ca: ca.cert })).peerCertificateFingerprint, { timeout: 5000 }).not.toBe(before.peerCertificateFingerprint);
    const reused = await httpsRequest(webhook.port, { path: '/healthz', ca: ca.cert, agent });
    expect(reused.status).toBe(200);
    expect(reused.localPort).toBe(before.localPort); // same TCP connection: nothing dropped
    agent.destroy();
  });

  it('a certificate that does not match its key is refused and the old one stays', async () => {
    const current = (await httpsRequest(webhook.port, { path: '/healthz', ca: ca.cert })).peerCertificateFingerprint;
    const errorsBefore = await metricValue('edge_registrar_webhook_certificate_reloads_total{result="error"}');
    const other = createServingCertificate({ ca, hosts: ['localhost'], ips: ['127.0.0.1'], days: 5 });
    await writeFile(join(dir, 'tls.crt'), other.cert);
    // The webhook read the new file and refused it...
    await expect.poll(() => metricValue('edge_registrar_webhook_certificate_reloads_total{result="error"}'), { timeout: 5000 }).toBeGreaterThan(errorsBefore);
    // ...and still serves the old certificate.
    expect((await httpsRequest(webhook.port, { path: '/healthz', ca: ca.cert })).peerCertificateFingerprint).toBe(current);
    await writeServing();
  });

  it('the policy file is reloaded when it changes; a broken one keeps the old policy', async () => {
    const entry = completeEntry({ managed: false }) as { spec: Record<string, unknown> };
    entry.spec.ports = { http: 8080 };
    const allowedPorts = async () => JSON.parse((await post('/validate', admissionReview(admissionRequest('CREATE', entry)))).body).response.allowed as boolean;
    expect(await allowedPorts()).toBe(false);
    await writeFile(policyFile, 'ports: { allowed: true }\n');
    await expect.poll(allowedPorts, { timeout: 5000 }).toBe(true);
    const errorsBefore = await metricValue('edge_registrar_policy_reloads_total{result="error"}');
    await writeFile(policyFile, 'ports: { allowed: maybe }\n');
    // The webhook read the broken file and refused it...
    await expect.poll(() => metricValue('edge_registrar_policy_reloads_total{result="error"}'), { timeout: 5000 }).toBeGreaterThan(errorsBefore);
    // ...and the previous policy is still in force.
    expect(await allowedPorts()).toBe(true);
    await writeFile(policyFile, 'app: xrayr\n');
    await expect.poll(allowedPorts, { timeout: 5000 }).toBe(false);
    expect(await readFile(policyFile, 'utf8')).toBe('app: xrayr\n');
  });
});

describe('request bodies held at once are bounded', () => {
  const KiB = 1024;
  let bounded: RunningWebhook;

  beforeAll(async () => {
    const view = new ClusterIndex(NAMESPACE);
    view.replace('WorkloadEntry', NAMESPACE, []);
    view.replace('Service', NAMESPACE, []);
    view.replace('ServiceAccount', NAMESPACE, [{ metadata: { name: 'xrayr-vm' } }]);
    const config = {
      ...webhookConfig({ port: '0', host: '127.0.0.1', tlsCert: join(dir, 'tls.crt'), tlsKey: join(dir, 'tls.key'), maxBodyBytesInFlight: String(1024 * KiB) }, {}),
      shutdownDelayMs: 0,
      bodyLimitBytes: 512 * KiB,
      bodyTimeoutMs: 3_000,
      smallBodyTimeoutMs: 500,
    };
    bounded = await runWebhook(config, createLogger('silent', 'test'), { view });
  });

  afterAll(async () => {
    await bounded.stop();
  });

  /**
   * A connection from `peer` (a loopback address of its own) that announces `announced` bytes
   * of body, sends `sent` of them and holds on; resolves once they are written, with the status
   * line it is answered with to come.
   */
  const slowBody = async (peer: string, announced: number, sent: number): Promise<{ answered: Promise<string> }> => {
    const socket = tlsConnect({ socket: netConnect({ host: '127.0.0.1', port: bounded.port, localAddress: peer }), ca: ca.cert, servername: 'localhost' });
    socket.on('error', () => undefined);
    await new Promise<void>((resolve) => socket.once('secureConnect', resolve));
    let received = '';
    const answered = new Promise<string>((resolve) => {
      socket.on('data', (d: Buffer) => { received += d.toString(); if (received.includes('\r\n\r\n')) resolve(received); });
      socket.once('close', () => { resolve(received); });
    });
    await new Promise<void>((resolve) => socket.write(`POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${announced}\r\n\r\n${' '.repeat(sent)}`, () => { resolve(); }));
    return { answered };
  };
  const gauge = async (): Promise<number> => {
    const { body } = await httpsRequest(bounded.port, { path: '/metrics', ca: ca.cert });
    return Number(body.split('\n').find((l) => l.startsWith('edge_registrar_webhook_body_bytes_in_flight '))?.split(' ')[1]);
  };

  it('holds only the bytes that arrived: announcing a body holds nothing', async () => {
    const announcedOnly = await Promise.all(Array.from({ length: 20 }, (_, i) => slowBody(`127.0.2.${i + 1}`, 64 * KiB, 0)));
    expect(await gauge()).toBe(0);
    // A real review goes through beside them.
    const review = await postJson(bounded.port, '/validate', admissionReview(admissionRequest('CREATE', completeEntry())), ca.cert);
    expect(review.status).toBe(200);
    // A small body must arrive at once: cut off at the short deadline, long before the large one's.
    const started = Date.now();
    for (const { answered } of announcedOnly) expect((await answered).split('\r\n')[0]).toBe('HTTP/1.1 408 Request Timeout');
    expect(Date.now() - started).toBeLessThan(2_500);
  });

  it('sheds a body whose bytes do not fit (429, Retry-After), caps what one peer holds, still answers a real review, and frees what a too-slow body held', async () => {
    const held = await Promise.all(['127.0.3.1', '127.0.3.2', '127.0.3.3'].map((peer) => slowBody(peer, 400 * KiB, 200 * KiB)));
    await expect.poll(gauge, { timeout: 2_000 }).toBe(600 * KiB);
    // 600 KiB held by untrusted peers: 200 KiB more would pass the 768 KiB they may use together
    // (a quarter is kept for the API server, and an eighth of the rest for small bodies).
    const shed = await (await slowBody('127.0.3.5', 400 * KiB, 200 * KiB)).answered;
    expect(shed.split('\r\n')[0]).toBe('HTTP/1.1 429 Too Many Requests');
    expect(shed.toLowerCase()).toContain('retry-after: 1');
    expect(shed).toContain('holds 1048576 bytes of request bodies at most');
    // One peer may hold a quarter (256 KiB): its second body is shed once the two pass it.
    const secondOfPeer = await (await slowBody('127.0.3.1', 400 * KiB, 100 * KiB)).answered;
    expect(secondOfPeer.split('\r\n')[0]).toBe('HTTP/1.1 429 Too Many Requests');
    // A real review is small, and the room kept for small ones is free.
    const review = await postJson(bounded.port, '/validate', admissionReview(admissionRequest('CREATE', completeEntry())), ca.cert);
    expect([review.status, review.body]).toEqual([200, expect.stringContaining('"allowed":true')]);
    // The held bodies never finish: cut off at the body timeout, and their room given back.
    for (const { answered } of held) expect((await answered).split('\r\n')[0]).toBe('HTTP/1.1 408 Request Timeout');
    expect(await gauge()).toBe(0);
  });
});
