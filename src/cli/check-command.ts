/** `edge-registrar check FILE...`: reads files, optionally the cluster, prints findings. */
import { readFile } from 'node:fs/promises';
import * as k8s from '@kubernetes/client-node';
import { checkConfig, type CheckFlags } from '../config/check.ts';
import { checkManifests, formatFinding } from '../check/check.ts';
import { parseManifests, type ManifestDocument } from '../check/documents.ts';
import { loadKubeConfig, WORKLOAD_ENTRY_GROUP, WORKLOAD_ENTRY_PLURAL, makeApiClient } from '../kube/client.ts';
import { ClusterIndex } from '../kube/cluster-index.ts';
import { loadPolicy } from '../policy-source.ts';

async function readInput(file: string): Promise<string> {
  if (file !== '-') return readFile(file, 'utf8');
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** One list per resource: the cluster's state, for the rules a file alone cannot answer. */
async function clusterIndex(kubeconfig: string, namespace: string, istioApiVersion: string): Promise<ClusterIndex> {
  const kc = loadKubeConfig(kubeconfig);
  const core = makeApiClient(kc, k8s.CoreV1Api);
  const custom = makeApiClient(kc, k8s.CustomObjectsApi);
  const [entries, services, accounts] = await Promise.all([
    custom.listNamespacedCustomObject({ group: WORKLOAD_ENTRY_GROUP, version: istioApiVersion, namespace, plural: WORKLOAD_ENTRY_PLURAL }) as Promise<{ items: unknown[] }>,
    core.listNamespacedService({ namespace }),
    core.listNamespacedServiceAccount({ namespace }),
  ]);
  const index = new ClusterIndex(namespace);
  index.replace('WorkloadEntry', namespace, entries.items);
  index.replace('Service', namespace, services.items);
  index.replace('ServiceAccount', namespace, accounts.items);
  return index;
}

export async function runCheck(files: string[], flags: CheckFlags): Promise<void> {
  const config = checkConfig(files, flags, process.env);
  const policy = await loadPolicy(config.policyPath);
  const documents: ManifestDocument[] = [];
  const parseErrors: string[] = [];
  for (const file of config.files) {
    let text: string;
    try {
      text = await readInput(file);
    } catch (error) {
      parseErrors.push(`${file}: cannot read: ${(error as Error).message}`);
      continue;
    }
    const parsed = parseManifests(file === '-' ? '(stdin)' : file, text);
    documents.push(...parsed.documents);
    parseErrors.push(...parsed.errors);
  }
  if (parseErrors.length > 0) {
    for (const e of parseErrors) console.error(e);
    process.exitCode = 2;
    return;
  }
  let cluster: ClusterIndex | undefined;
  if (config.kubeconfig !== undefined) {
    try {
      cluster = await clusterIndex(config.kubeconfig, config.namespace, config.istioApiVersion);
    } catch (error) {
      const detail = error instanceof k8s.ApiException ? `HTTP ${error.code}` : (error as Error).message;
      console.error(`edge-registrar check: cannot read the cluster (${config.kubeconfig}): ${detail}`);
      process.exitCode = 2;
      return;
    }
  }
  const report = checkManifests({ documents, policy, namespace: config.namespace, cluster });
  if (config.output === 'json') {
    console.log(
      JSON.stringify(
        { entries: report.entries, violations: report.violations, warnings: report.warnings, skipped: Object.fromEntries(report.skipped) },
        null,
        2,
      ),
    );
  } else {
    for (const v of report.violations) console.log(formatFinding(v));
    for (const w of report.warnings) console.error(`warning: ${formatFinding(w)}`);
    for (const [rule, reason] of report.skipped) console.error(`skipped: ${rule}: ${reason}`);
    console.error(`checked ${report.entries} WorkloadEntr${report.entries === 1 ? 'y' : 'ies'} in ${config.files.length} file(s): ${report.violations.length} violation(s)`);
  }
  process.exitCode = report.violations.length > 0 ? 1 : 0;
}
