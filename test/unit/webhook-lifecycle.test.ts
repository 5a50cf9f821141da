/**
 * Server lifecycle and robustness over real HTTPS: a graceful stop (not ready first, the
 * in-flight request finishes, then the port closes) and a property-based fuzz run showing
 * that no body, however malformed, crashes the server or gets anything but a 200 or 4xx.
 */
import fc from 'fast-check';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCertificateAuthority, createServingCertificate } from '../../src/certs/authority.ts';
import { writeCertificateFiles } from '../../src/certs/files.ts';
import { webhookConfig, type WebhookConfig } from '../../src/config/webhook.ts';
import { ClusterIndex } from '../../src/kube/cluster-index.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { runWebhook } from '../../src/webhook/run.ts';
import { NAMESPACE, admissionRequest, admissionReview, completeEntry } from '../fixtures/entries.ts';
import { httpsRequest } from '../harness/https-client.ts';

let dir: string;
let ca: { cert: string; key: string };
let baseConfig: WebhookConfig;

function view(): ClusterIndex {
  const index = new ClusterIndex(NAMESPACE);
  index.replace('WorkloadEntry', NAMESPACE, []);
  index.replace('Service', NAMESPACE, [{ metadata: { name: 'xboard' }, spec: { selector: { app: 'xboard' } } }]);
  index.replace('ServiceAccount', NAMESPACE, [{ metadata: { name: 'xrayr-vm' } }]);
  return index;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'edge-registrar-lifecycle-'));
  ca = createCertificateAuthority('test-ca', 30);
  await writeCertificateFiles(dir, ca, createServingCertificate({ ca, hosts: ['localhost'], ips: ['127.0.0.1'], days: 30 }), true);
  baseConfig = webhookConfig({ port: '0', host: '127.0.0.1', tlsCert: join(dir, 'tls.crt'), tlsKey: join(dir, 'tls.key') }, {});
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('graceful stop', () => {
  it('goes not-ready first, lets the in-flight request finish, then closes the port', async () => {
    const webhook = await runWebhook({ ...baseConfig, shutdownDelayMs: 500, drainTimeoutMs: 5000 }, createLogger('silent', 't'), { view: view() });
    const body = Buffer.from(JSON.stringify(admissionReview(admissionRequest('CREATE', completeEntry()))));
    // Start a request and hold back the end of its body: it is in flight while we stop.
    const inFlight = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(
        { host: '127.0.0.1', port: webhook.port, method: 'POST', path: '/validate', ca: ca.cert, servername: 'localhost', agent: false, headers: { 'content-type': 'application/json', 'content-length': body.length } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
        },
      );
      req.on('error', reject);
      req.write(body.subarray(0, 10));
      setTimeout(() => req.end(body.subarray(10)), 700);
    });
    await new Promise((r) => setTimeout(r, 100));
    const stopped = webhook.stop();
    const ready = await httpsRequest(webhook.port, { path: '/readyz', ca: ca.cert });
    expect(ready.status).toBe(503);
    expect(ready.body).toContain('shutting down');
    const finished = await inFlight;
    expect(finished.status).toBe(200);
    expect(JSON.parse(finished.body).response.allowed).toBe(true);
    await stopped;
    await expect(httpsRequest(webhook.port, { path: '/healthz', ca: ca.cert })).rejects.toThrow(/ECONNREFUSED/);
  });
});

describe('fuzz: random and malformed bodies never crash the server', () => {
  let port: number;
  let stop: () => Promise<void>;
  beforeAll(async () => {
    const webhook = await runWebhook({ ...baseConfig, shutdownDelayMs: 0, bodyLimitBytes: 256 * 1024 }, createLogger('silent', 't'), { view: view() });
    port = webhook.port;
    stop = webhook.stop;
  });
  afterAll(async () => stop());

  const send = (path: string, body: Buffer | string, contentType = 'application/json') =>
    httpsRequest(port, { method: 'POST', path, body, headers: { 'content-type': contentType }, ca: ca.cert });

  const expectHandled = (status: number, body: string): void => {
    expect([200, 400, 413, 415]).toContain(status);
    expect(() => JSON.parse(body) as unknown).not.toThrow();
  };

  it('arbitrary JSON values', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('/mutate', '/validate'), fc.jsonValue(), async (path, value) => {
        const res = await send(path, JSON.stringify(value));
        expectHandled(res.status, res.body);
      }),
      { numRuns: 150 },
    );
  });

  it('AdmissionReviews with arbitrary objects inside', async () => {
    const operation = fc.constantFrom('CREATE', 'UPDATE', 'DELETE', 'CONNECT', 'PATCH', '');
    const entryish = fc.record(
      {
        apiVersion: fc.oneof(fc.constant('networking.istio.io/v1'), fc.string()),
        kind: fc.oneof(fc.constant('WorkloadEntry'), fc.string()),
        metadata: fc.oneof(fc.record({ name: fc.oneof(fc.string(), fc.integer()), labels: fc.oneof(fc.dictionary(fc.string(), fc.oneof(fc.string(), fc.integer(), fc.constant(null))), fc.string()) }, { requiredKeys: [] }), fc.jsonValue()),
        spec: fc.oneof(
          fc.record(
            {
              address: fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4Extended(), fc.domain(), fc.string(), fc.integer()),
              labels: fc.oneof(fc.dictionary(fc.string(), fc.string()), fc.jsonValue()),
              ports: fc.jsonValue(),
              weight: fc.oneof(fc.integer(), fc.double(), fc.string()),
              serviceAccount: fc.oneof(fc.string(), fc.jsonValue()),
              network: fc.jsonValue(),
            },
            { requiredKeys: [] },
          ),
          fc.jsonValue(),
        ),
      },
      { requiredKeys: [] },
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('/mutate', '/validate'), operation, entryish, entryish, fc.jsonValue(), async (path, op, object, oldObject, userInfo) => {
        const review = {
          apiVersion: 'admission.k8s.io/v1',
          kind: 'AdmissionReview',
          request: {
            uid: 'fuzz',
            kind: { group: 'networking.istio.io', version: 'v1', kind: 'WorkloadEntry' },
            resource: { group: 'networking.istio.io', version: 'v1', resource: 'workloadentries' },
            namespace: NAMESPACE,
            operation: op,
            userInfo,
            object,
            oldObject,
          },
        };
        const res = await send(path, JSON.stringify(review));
        expectHandled(res.status, res.body);
        if (res.status === 200) expect(JSON.parse(res.body).response.uid).toBe('fuzz');
      }),
      { numRuns: 300 },
    );
  });

  it('random bytes and content types', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 2048 }), fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', ''), async (bytes, type) => {
        const res = await send('/validate', Buffer.from(bytes), type);
        expectHandled(res.status, res.body);
      }),
      { numRuns: 150 },
    );
  });

  it('is still healthy and answering afterwards', async () => {
    expect((await httpsRequest(port, { path: '/healthz', ca: ca.cert })).status).toBe(200);
    const res = await send('/validate', JSON.stringify(admissionReview(admissionRequest('CREATE', completeEntry()))));
    expect(JSON.parse(res.body).response.allowed).toBe(true);
  });
});
