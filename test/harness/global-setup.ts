/**
 * vitest global setup for the e2e project: one real control plane for the whole run,
 * built from Go modules on first use, stopped at the end; helm and Istio's own tools, built
 * the same way; and the Rust producer example, built with cargo.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { ensureHelm } from './helm-build.ts';
import { ensureIstioTools, type IstioTools } from './istio-build.ts';
import { ensureKubeBinaries, type KubeBinaries } from './kube-build.ts';
import { ensureRustProducer } from './rust-producer.ts';
import { startCluster, type ClusterState, type StartedCluster } from './kube-cluster.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    cluster: ClusterState;
    binaries: KubeBinaries;
    helm: string;
    istio: IstioTools;
    rustProducer: string;
  }
}

let cluster: StartedCluster | undefined;
let dir: string | undefined;

export async function setup(project: TestProject): Promise<void> {
  const binaries = await ensureKubeBinaries((line) => console.error(line));
  project.provide('helm', await ensureHelm((line) => console.error(line)));
  project.provide('istio', await ensureIstioTools((line) => console.error(line)));
  project.provide('rustProducer', await ensureRustProducer((line) => console.error(line)));
  dir = await mkdtemp(join(tmpdir(), 'edge-registrar-kube-'));
  const started = Date.now();
  cluster = await startCluster({ binaries, dir, log: (line) => console.error(line) });
  console.error(`[cluster] control plane up in ${((Date.now() - started) / 1000).toFixed(1)}s`);
  project.provide('cluster', cluster.state);
  project.provide('binaries', binaries);
}

export async function teardown(): Promise<void> {
  await cluster?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
}
