/**
 * A running local control plane: kube-harness as a child process (kube-apiserver + etcd,
 * optionally kube-controller-manager), Istio's CRDs installed, the managed namespace and
 * Istio objects created, and kubeconfigs for the test users. Used by the e2e suite's
 * global setup and by `npm run local`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { capture } from './capture.ts';
import type { KubeBinaries } from './kube-build.ts';

const HERE = fileURLToPath(new URL('.', import.meta.url));

/** Test identities, as client certificates; see cluster-base.yaml for what each may do. */
export const CLUSTER_USERS = {
  alice: 'alice',
  sync: 'system:serviceaccount:airport-prod:edge-registrar-sync|system:serviceaccounts,system:serviceaccounts:airport-prod',
  breakglass: 'bob|edge-registrar:break-glass',
  webhook: 'system:serviceaccount:edge-registrar:edge-registrar-webhook|system:serviceaccounts,system:serviceaccounts:edge-registrar',
} as const;

export type ClusterUser = keyof typeof CLUSTER_USERS | 'admin';

export interface ClusterState {
  server: string;
  dir: string;
  adminKubeconfig: string;
  kubeconfigs: Record<string, string>;
  caCert: string;
  pid: number;
}

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function kubeconfigFor(state: ClusterState, user: ClusterUser): string {
  if (user === 'admin') return state.adminKubeconfig;
  const path = state.kubeconfigs[user];
  if (path === undefined) throw new Error(`no kubeconfig for ${user}`);
  return path;
}

export function runKubectl(kubectl: string, kubeconfig: string, args: string[], input?: string): Promise<KubectlResult> {
  return capture(kubectl, ['--kubeconfig', kubeconfig, ...args], input === undefined ? {} : { input });
}

export interface StartedCluster {
  state: ClusterState;
  process: ChildProcess;
  kubectl(user: ClusterUser, args: string[], input?: string): Promise<KubectlResult>;
  stop(): Promise<void>;
}

export interface StartClusterOptions {
  binaries: KubeBinaries;
  dir: string;
  withControllerManager?: boolean;
  /**
   * Start from a previous run in `dir` (same CA, ports and etcd data) and keep the data at
   * exit: stop() then startCluster() again is an API server that went away and came back.
   */
  resume?: boolean;
  /** Create cluster-base.yaml's namespaces, mesh objects and test RBAC (default true). */
  base?: boolean;
  log?: (line: string) => void;
}

export async function startCluster({ binaries, dir, withControllerManager = true, resume = false, base = true, log = () => undefined }: StartClusterOptions): Promise<StartedCluster> {
  const args = ['--dir', dir, '--stdin-watch', ...(resume ? ['--resume'] : [])];
  if (withControllerManager) args.push('--controller-manager', binaries.controllerManager);
  for (const [name, spec] of Object.entries(CLUSTER_USERS)) args.push('--user', `${name}=${spec}`);
  // stdin stays open for the harness's lifetime; if this process dies, EOF stops the cluster.
  const child = spawn(binaries.harness, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderrTail = '';
  child.stderr.on('data', (c: Buffer) => {
    stderrTail = (stderrTail + c.toString()).slice(-8000);
  });
  const state = await new Promise<ClusterState>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`kube-harness not ready after 120s:\n${stderrTail}`)), 120_000);
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line !== undefined) {
        clearTimeout(timer);
        resolve(JSON.parse(line) as ClusterState);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`kube-harness exited with ${code} before ready:\n${stderrTail}`));
    });
  });
  log(`[cluster] kube-apiserver ready at ${state.server}`);

  const kubectl = (user: ClusterUser, kargs: string[], input?: string) => runKubectl(binaries.kubectl, kubeconfigFor(state, user), kargs, input);
  const must = async (user: ClusterUser, kargs: string[], input?: string): Promise<string> => {
    const res = await kubectl(user, kargs, input);
    if (res.code !== 0) throw new Error(`kubectl ${kargs.join(' ')} failed: ${res.stderr}`);
    return res.stdout;
  };

  // Istio's CRDs are large; server-side apply avoids the last-applied annotation size limit.
  await must('admin', ['apply', '--server-side', '-f', binaries.istioCrds]);
  await must('admin', ['wait', '--for', 'condition=Established', '--timeout', '60s', 'crd/workloadentries.networking.istio.io', 'crd/serviceentries.networking.istio.io', 'crd/workloadgroups.networking.istio.io']);
  if (base) {
    await must('admin', ['apply', '-f', '-'], await readFile(join(HERE, 'cluster-base.yaml'), 'utf8'));
    log('[cluster] Istio CRDs, namespace airport-prod and the mesh objects are in place');
  } else log("[cluster] Istio CRDs in place");

  let stopped: Promise<void> | undefined;
  return {
    state,
    process: child,
    kubectl,
    stop: () =>
      (stopped ??= new Promise<void>((resolve) => {
        if (child.exitCode !== null) {
          resolve();
          return;
        }
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 20_000).unref();
      })),
  };
}
