/**
 * Shared pieces of the e2e tests: kubectl as each test user against the suite's real
 * kube-apiserver, and the real webhook (runWebhook, as `edge-registrar webhook` runs it)
 * registered through webhook-config/.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import * as k8s from '@kubernetes/client-node';
import { inject } from 'vitest';
import { loadKubeConfig } from '../../src/kube/client.ts';
import { createCertificateAuthority, createServingCertificate } from '../../src/certs/authority.ts';
import { writeCertificateFiles } from '../../src/certs/files.ts';
import { webhookConfig } from '../../src/config/webhook.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { runWebhook, type RunningWebhook, type WebhookOverrides } from '../../src/webhook/run.ts';
import { kubeconfigFor, runKubectl, type ClusterState, type ClusterUser, type KubectlResult } from '../harness/kube-cluster.ts';
import { localWebhookManifests } from '../harness/webhook-registration.ts';

export const NAMESPACE = 'airport-prod';

export function kubectl(user: ClusterUser, args: string[], input?: unknown): Promise<KubectlResult> {
  const text = input === undefined ? undefined : typeof input === 'string' ? input : stringify(input);
  return runKubectl(inject('binaries').kubectl, kubeconfigFor(inject('cluster'), user), args, text);
}

export async function mustKubectl(user: ClusterUser, args: string[], input?: unknown): Promise<string> {
  const res = await kubectl(user, args, input);
  if (res.code !== 0) throw new Error(`kubectl ${args.join(' ')} as ${user} failed (${res.code}): ${res.stderr}`);
  return res.stdout;
}

/** The namespace and mesh objects, again: a test may have deleted the namespace. */
export async function ensureBase(): Promise<void> {
  const base = await readFile(fileURLToPath(new URL('../harness/cluster-base.yaml', import.meta.url)), 'utf8');
  for (let attempt = 0; ; attempt++) {
    const res = await kubectl('admin', ['apply', '-f', '-'], base);
    if (res.code === 0) return;
    // A namespace still terminating refuses new objects for a moment.
    if (attempt > 60) throw new Error(res.stderr);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

export interface E2EWebhook {
  webhook: RunningWebhook;
  caCert: string;
  /** (Re-)registers the webhook configurations and waits until the API server calls it. */
  register(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts the webhook on a free port with the webhook identity and registers it, with the
 * suite's shared cluster unless a test brings its own.
 */
/**
 * The real webhook, registered with the API server. `overrides.view` replaces its informer
 * cache with a given one (a cache frozen behind the API server, say); `options.kubeconfig`
 * is what it watches the cluster with (the webhook identity's, through a proxy, say).
 */
export async function startRegisteredWebhook(cluster: ClusterState = inject('cluster'), overrides: WebhookOverrides = {}, options: { kubeconfig?: string } = {}): Promise<E2EWebhook> {
  const as = (user: ClusterUser, args: string[], input?: unknown): Promise<KubectlResult> =>
    runKubectl(inject('binaries').kubectl, kubeconfigFor(cluster, user), args, input === undefined ? undefined : typeof input === 'string' ? input : stringify(input));
  const dir = await mkdtemp(join(tmpdir(), 'edge-registrar-e2e-webhook-'));
  const ca = createCertificateAuthority('e2e-ca', 30);
  await writeCertificateFiles(dir, ca, createServingCertificate({ ca, hosts: ['localhost'], ips: ['127.0.0.1'], days: 30 }), true);
  const config = {
    ...webhookConfig(
      { host: '127.0.0.1', port: '0', tlsCert: join(dir, 'tls.crt'), tlsKey: join(dir, 'tls.key'), kubeconfig: options.kubeconfig ?? kubeconfigFor(cluster, 'webhook') },
      {},
    ),
    shutdownDelayMs: 0,
    drainTimeoutMs: 2000,
  };
  const webhook = await runWebhook(config, createLogger(process.env.E2E_LOG_LEVEL === undefined ? 'silent' : (process.env.E2E_LOG_LEVEL as 'info'), 'e2e-webhook'), overrides);
  await waitFor(async () => (await fetchReady(webhook.port, ca.cert)) === 200, 'webhook ready (caches synced)');
  const manifests = await localWebhookManifests(webhook.port, ca.cert);
  const register = async (): Promise<void> => {
    const applied = await as('admin', ['apply', '-f', '-'], manifests);
    if (applied.code !== 0) throw new Error(`registering the webhook failed: ${applied.stderr}`);
    // The API server picks up webhook configurations through its own informer: wait until
    // our webhook answers for real (a dry-run of a bad entry is denied by it).
    await waitFor(async () => {
      const res = await as('alice', ['apply', '--dry-run=server', '-f', '-'], entry({ name: 'vps-jp-99', address: '10.9.9.9' }));
      return res.stderr.includes('address.public-unicast');
    }, 'webhook registered with the API server');
  };
  await register();
  return {
    webhook,
    caCert: ca.cert,
    register,
    stop: async () => {
      await webhook.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function fetchReady(port: number, ca: string): Promise<number> {
  const { httpsRequest } = await import('../harness/https-client.ts');
  return httpsRequest(port, { path: '/readyz', ca })
    .then((r) => r.status)
    .catch(() => 0);
}

export async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}`);
}

export interface EntrySpec {
  name?: string;
  address?: string;
  country?: string;
  labels?: Record<string, string>;
  spec?: Record<string, unknown>;
  managed?: boolean;
}

/** A WorkloadEntry as a kubectl user writes it: the fleet's shape, before defaulting. */
export function entry(options: EntrySpec = {}): Record<string, unknown> {
  const country = options.country ?? 'jp';
  const labels: Record<string, string> = { app: 'xrayr', country, ...(options.managed === true ? { 'app.kubernetes.io/managed-by': 'edge-registrar' } : {}) };
  return {
    apiVersion: 'networking.istio.io/v1',
    kind: 'WorkloadEntry',
    metadata: { name: options.name ?? `vps-${country}-01`, namespace: NAMESPACE, labels },
    spec: {
      address: options.address ?? '103.21.244.10',
      labels: { app: 'xrayr', version: 'v1', country, ...options.labels },
      serviceAccount: 'xrayr-vm',
      ...options.spec,
    },
  };
}

/**
 * Removes every WorkloadEntry in the namespace with one server-side deletecollection, as the
 * sync identity (which may delete managed entries); kubectl's --all deletes one at a time,
 * far too slowly after a backfill of thousands.
 */
export async function deleteAllEntries(): Promise<void> {
  const api = loadKubeConfig(kubeconfigFor(inject('cluster'), 'sync')).makeApiClient(k8s.CustomObjectsApi);
  await api.deleteCollectionNamespacedCustomObject({ group: 'networking.istio.io', version: 'v1', namespace: NAMESPACE, plural: 'workloadentries' });
  await waitFor(async () => (await kubectl('admin', ['-n', NAMESPACE, 'get', 'workloadentries', '-o', 'name'])).stdout.trim() === '', 'every WorkloadEntry to be gone', 120_000);
}

/** An entry a plain kubectl user (alice) wrote, not managed by edge-registrar, holding `address` in the namespace. */
export async function applyUnmanagedEntry(name: string, address: string): Promise<void> {
  await mustKubectl('alice', ['apply', '-f', '-'], {
    apiVersion: 'networking.istio.io/v1',
    kind: 'WorkloadEntry',
    metadata: { name, namespace: NAMESPACE, labels: { app: 'xrayr', country: 'jp' } },
    spec: { address, labels: { app: 'xrayr', country: 'jp' } },
  });
}
