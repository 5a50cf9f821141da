/**
 * The webhook as its own process (bench/webhook-memory.ts, the bad-input tests): the real server (runWebhook),
 * TLS, with a namespace view (1,000 entries by default) in place of the informers (no API server
 * needed), logging at EDGE_REGISTRAR_LOG_LEVEL (silent by default: the measure is memory).
 * WEBHOOK_HEADERS_TIMEOUT_MS shortens the header timeout; WEBHOOK_LOG_FILE takes its logs;
 * EDGE_REGISTRAR_MAX_BODY_BYTES_IN_FLIGHT sets the body budget, EDGE_REGISTRAR_MAX_CONNECTIONS the
 * connection limit, EDGE_REGISTRAR_API_SERVER_CIDRS the trusted peers. Prints its ports and CA as one JSON line.
 */
import { rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCertificateAuthority, createServingCertificate } from '../../src/certs/authority.ts';
import { writeCertificateFiles } from '../../src/certs/files.ts';
import { webhookConfig } from '../../src/config/webhook.ts';
import { ClusterIndex } from '../../src/kube/cluster-index.ts';
import { pino } from 'pino';
import { createLogger } from '../../src/observability/logger.ts';
import { runWebhook } from '../../src/webhook/run.ts';
const dir = await mkdtemp(join(tmpdir(), 'mem-'));
// The certificates (a private key among them) go with the process, however it ends short of SIGKILL.
process.once('exit', () => { rmSync(dir, { recursive: true, force: true }); });
const ca = createCertificateAuthority('ca', 30);
await writeCertificateFiles(dir, ca, createServingCertificate({ ca, hosts: ['localhost'], ips: ['127.0.0.1'], days: 30 }), true);
// The namespace as the informers would hold it: WEBHOOK_VIEW_ENTRIES entries (1,000) and
// WEBHOOK_VIEW_SERVICES Services with selectors (none), for the benchmarks' scale runs.
const entries = Number(process.env.WEBHOOK_VIEW_ENTRIES ?? 1000);
const services = Number(process.env.WEBHOOK_VIEW_SERVICES ?? 0);
const view = new ClusterIndex('airport-prod');
view.replace('WorkloadEntry', 'airport-prod', Array.from({ length: entries }, (_, i) => ({ metadata: { name: `vps-jp-${i}` }, spec: { address: `45.${76 + Math.floor(i / 62_500)}.${Math.floor(i / 250) % 250}.${i % 250}` } })));
view.replace('Service', 'airport-prod', Array.from({ length: services }, (_, i) => ({ metadata: { name: `svc-${i}` }, spec: { selector: { app: `app-${i}`, tier: 'backend' } } })));
view.replace('ServiceAccount', 'airport-prod', [{ metadata: { name: 'xrayr-vm' } }]);
// Tests shorten the header timeout to see a slow client cut off without waiting 10 s.
const headersTimeoutMs = process.env.WEBHOOK_HEADERS_TIMEOUT_MS === undefined ? {} : { headersTimeoutMs: Number(process.env.WEBHOOK_HEADERS_TIMEOUT_MS) };
const config = { ...webhookConfig({ host: '127.0.0.1', port: '0', metricsPort: '0', tlsCert: join(dir, 'tls.crt'), tlsKey: join(dir, 'tls.key'), kubeconfig: '/dev/null', maxBodyBytesInFlight: process.env.EDGE_REGISTRAR_MAX_BODY_BYTES_IN_FLIGHT, maxConnections: process.env.EDGE_REGISTRAR_MAX_CONNECTIONS, apiServerCidrs: process.env.EDGE_REGISTRAR_API_SERVER_CIDRS }, {}), ...headersTimeoutMs, shutdownDelayMs: 0 };
const level = (process.env.EDGE_REGISTRAR_LOG_LEVEL ?? 'silent') as 'info';
// Logs go to a file when asked (a drained stdout, as in a pod); stdout carries the ports line.
const logFile = process.env.WEBHOOK_LOG_FILE;
const hook = await runWebhook(config, createLogger(level, 'webhook', logFile === undefined ? undefined : pino.destination({ dest: logFile, sync: true })), { view });
console.log(JSON.stringify({ port: hook.port, metricsPort: hook.metricsPort, ca: ca.cert }));
// A graceful stop on SIGTERM (and a normal exit, so --cpu-prof writes its profile).
process.once('SIGTERM', () => {
  void hook.stop().then(() => process.exit(0));
});
