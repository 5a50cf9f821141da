/** The helm CLI (built from its Go module by the e2e global setup) against charts/edge-registrar. */
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { inject } from 'vitest';
import { capture, type Captured } from '../harness/capture.ts';

export const CHART = fileURLToPath(new URL('../../charts/edge-registrar', import.meta.url));
// helm's own cache, config and data stay out of the user's home.
const HELM_HOME = join(tmpdir(), 'edge-registrar-helm-home');

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: any;
}

export function helm(args: string[], kubeconfig?: string): Promise<Captured> {
  const env = { ...process.env, HELM_CACHE_HOME: join(HELM_HOME, 'cache'), HELM_CONFIG_HOME: join(HELM_HOME, 'config'), HELM_DATA_HOME: join(HELM_HOME, 'data') };
  return capture(inject('helm'), [...args, ...(kubeconfig ? ['--kubeconfig', kubeconfig] : [])], { env });
}

/** The image the tests name (the chart requires one; nothing pulls it here). */
export const TEST_IMAGE = 'image.repository=edge-registrar-test/edge-registrar';

/** What the chart requires: an image, and who may reach the webhook's port (an illustrative range for `helm template`). */
export const TEST_VALUES = `${TEST_IMAGE},networkPolicy.apiServerCIDRs={10.0.0.0/8}`;

/** `helm template edge-registrar CHART -n edge-registrar --set TEST_VALUES --set ...`, parsed. */
export async function render(set: string[] = [], release = 'edge-registrar'): Promise<K8sObject[]> {
  const res = await helm(['template', release, CHART, '--namespace', 'edge-registrar', ...[TEST_VALUES, ...set].flatMap((s) => ['--set', s])]);
  if (res.code !== 0) throw new Error(res.stderr);
  return parseAllDocuments(res.stdout)
    .map((d) => d.toJS() as K8sObject | null)
    .filter((o): o is K8sObject => o !== null);
}

