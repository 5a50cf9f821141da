/**
 * Istio's own code in the tests: meshview (istiod's configuration pipeline, in-process) and
 * istioctl, both built from the istio.io/istio module by the e2e global setup.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject } from 'vitest';
import { stringify } from 'yaml';
import { capture } from '../harness/capture.ts';
import type { K8sObject } from './helm-support.ts';

export interface ProxySpec {
  type: 'sidecar' | 'router';
  namespace: string;
  labels: Record<string, string>;
  id?: string;
  ip?: string;
}

/** Xboard's sidecar: the proxy that calls the VPSs' service and receives their calls. */
export const XBOARD_SIDECAR: ProxySpec = { type: 'sidecar', namespace: 'airport-prod', labels: { app: 'xboard', version: 'v1' }, id: 'xboard-5d8c7', ip: '10.244.0.10' };

export interface MeshEndpoint {
  address: string;
  port: number;
  weight: number;
  /** The endpoint's envoy.transport_socket_match metadata (empty: none). */
  tlsModeMetadata: string;
  /**
   * What Envoy would use toward it, its cluster's transport socket matches resolved on that
   * metadata: istio-mtls, tls or plaintext (another socket's name otherwise).
   */
  transport: string;
  /** istio filter metadata: name;namespace;canonical service;canonical revision;cluster. */
  workload: string;
  labels: Record<string, string>;
  serviceAccount: string;
}

export interface MeshFilterChain {
  name: string;
  destinationPort?: number;
  prefixRanges?: string[];
  serverNames?: string[];
  transportProtocol?: string;
  filters: { name: string; cluster?: string; routeConfig?: string; httpFilters?: { name: string; typeUrl: string; config: unknown }[]; manager?: MeshConnectionManager }[];
}

/** An HTTP connection manager's settings for the client's address (Envoy's HttpConnectionManager fields). */
export interface MeshConnectionManager {
  useRemoteAddress: boolean;
  xffNumTrustedHops: number;
  skipXffAppend: boolean;
  /** Peers Envoy counts as internal (null: none, Envoy's default since 1.33). */
  internalAddressConfig: { cidrRanges?: { addressPrefix: string; prefixLen?: number }[]; unixSockets?: boolean } | null;
}

export interface MeshView {
  proxy: string;
  clusters: { name: string; type: string; transport: string; transportSocketMatches: { name: string; match: Record<string, string>; transport: string }[] }[];
  endpoints: { cluster: string; endpoints: MeshEndpoint[] }[];
  /** bytes: the listener's serialized size, what an LDS push carries for it. */
  listeners: { name: string; bytes: number; address: string; port: number; listenerFilters: string[]; filterChains: MeshFilterChain[] }[];
}

/**
 * Only what Istio reads from an object, so objects read back from the API server (status,
 * managedFields, resourceVersion) go in as a user would write them.
 */
function asWritten(object: K8sObject): K8sObject {
  const { name, namespace, labels, annotations } = object.metadata;
  const { status: _status, ...rest } = object;
  return { ...rest, metadata: { name, ...(namespace === undefined ? {} : { namespace }), ...(labels === undefined ? {} : { labels }), ...(annotations === undefined ? {} : { annotations }) } };
}

/** What `proxy` receives from istiod when the cluster holds `objects` (meshConfig and meshNetworks as YAML). */
export async function meshView(objects: K8sObject[], proxy: ProxySpec, meshConfig = '', meshNetworks = ''): Promise<MeshView> {
  const input = JSON.stringify({ objects: objects.map((o) => stringify(asWritten(o))).join('\n---\n'), meshConfig, meshNetworks, proxy });
  const res = await capture(inject('istio').meshview, [], { input });
  if (res.code !== 0) throw new Error(`meshview failed (${res.code}): ${res.stderr.slice(-4000)}`);
  return JSON.parse(res.stdout) as MeshView;
}

/** The endpoints `view` holds for a cluster, by address; throws when the proxy has no such cluster. */
export function endpointsOf(view: MeshView, cluster: string): MeshEndpoint[] {
  const assignment = view.endpoints.find((e) => e.cluster === cluster);
  if (assignment === undefined) throw new Error(`${view.proxy} has no EDS cluster ${cluster}; it has ${view.endpoints.map((e) => e.cluster).join(', ')}`);
  return [...assignment.endpoints].sort((a, b) => a.address.localeCompare(b.address));
}

export function listenerOf(view: MeshView, name: string): MeshView['listeners'][number] {
  const found = view.listeners.find((l) => l.name === name);
  if (found === undefined) throw new Error(`${view.proxy} has no listener ${name}; it has ${view.listeners.map((l) => l.name).join(', ')}`);
  return found;
}

export interface AnalyzerMessage {
  code: string;
  level: 'Error' | 'Warning' | 'Info';
  message: string;
  origin: string;
}

/** `istioctl analyze` offline, on files holding `objects`, every namespace, every message level. */
export async function analyze(objects: K8sObject[]): Promise<AnalyzerMessage[]> {
  const dir = await mkdtemp(join(tmpdir(), 'edge-registrar-analyze-'));
  try {
    const file = join(dir, 'objects.yaml');
    await writeFile(file, objects.map((o) => stringify(asWritten(o))).join('---\n'));
    const res = await capture(inject('istio').istioctl, ['analyze', '--use-kube=false', '--all-namespaces', '--output', 'json', file]);
    // Exit 79 is "analysis found errors"; anything else non-zero is istioctl failing.
    if (res.code !== 0 && res.code !== 79) throw new Error(`istioctl analyze failed (${res.code}): ${res.stderr}`);
    return (JSON.parse(res.stdout) as AnalyzerMessage[]).map(({ code, level, message, origin }) => ({ code, level, message, origin }));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
