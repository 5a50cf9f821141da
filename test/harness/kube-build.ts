/**
 * Builds the control-plane binaries from Go modules once and caches them in
 * .cache/kube/<version>-<hash>/: kube-harness (kube-apiserver + embedded etcd),
 * kubectl and kube-controller-manager from the same k8s.io/kubernetes module graph,
 * and Istio's CRDs from the pinned istio.io/api module. The hash covers the launcher's
 * sources, so a change rebuilds; a warm start costs nothing here.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const KUBERNETES_VERSION = 'v1.35.4';
export const ISTIO_API_VERSION = 'v1.31.1';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MODULE_DIR = join(ROOT, 'test/harness/kube');

export interface KubeBinaries {
  dir: string;
  harness: string;
  kubectl: string;
  controllerManager: string;
  istioCrds: string;
}

export async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

export function run(command: string, args: string[], cwd: string, log: (line: string) => void, env: Record<string, string> = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env: { ...process.env, GOFLAGS: '-mod=mod', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => {
      err += c.toString();
      for (const line of c.toString().split('\n')) if (line.trim()) log(`  ${line}`);
    });
    child.on('error', (e) => {
      reject(new Error(`${command} could not start (${e.message}); the e2e tests need it on PATH (the Go toolchain, cargo)`, { cause: e }));
    });
    child.on('close', (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`${command} ${args.join(' ')} failed with exit ${code}:\n${err.slice(-4000)}`));
    });
  });
}

/**
 * Stamped the way Kubernetes' own release builds are, so the API server reports v1.35.4 (an
 * unstamped build says v0.0.0-master, which fails every chart's kubeVersion constraint).
 */
const [MAJOR, MINOR] = KUBERNETES_VERSION.slice(1).split('.');
const VERSION_LDFLAGS = ['k8s.io/component-base/version', 'k8s.io/client-go/pkg/version']
  .flatMap((pkg) => [`-X ${pkg}.gitVersion=${KUBERNETES_VERSION}`, `-X ${pkg}.gitMajor=${MAJOR}`, `-X ${pkg}.gitMinor=${MINOR}`, `-X ${pkg}.gitTreeState=clean`])
  .join(' ');

async function cacheKey(): Promise<string> {
  const hash = createHash('sha256');
  hash.update(VERSION_LDFLAGS);
  for (const file of ['go.mod', 'go.sum', 'main.go']) hash.update(await readFile(join(MODULE_DIR, file)));
  hash.update(ISTIO_API_VERSION);
  return `${KUBERNETES_VERSION}-${hash.digest('hex').slice(0, 12)}`;
}

export async function ensureKubeBinaries(log: (line: string) => void = (l) => console.error(l)): Promise<KubeBinaries> {
  const dir = join(ROOT, '.cache/kube', await cacheKey());
  const binaries: KubeBinaries = {
    dir,
    harness: join(dir, 'kube-harness'),
    kubectl: join(dir, 'kubectl'),
    controllerManager: join(dir, 'kube-controller-manager'),
    istioCrds: join(dir, 'istio-crds.yaml'),
  };
  const wanted: [string, string][] = [
    [binaries.harness, '.'],
    [binaries.kubectl, 'k8s.io/kubernetes/cmd/kubectl'],
    [binaries.controllerManager, 'k8s.io/kubernetes/cmd/kube-controller-manager'],
  ];
  const missing = [];
  for (const [path, pkg] of wanted) if (!(await exists(path))) missing.push([path, pkg] as const);
  if (missing.length === 0 && (await exists(binaries.istioCrds))) return binaries;

  await mkdir(dir, { recursive: true });
  const started = Date.now();
  log(`[kube-build] building the control plane ${KUBERNETES_VERSION} from Go modules into ${dir}`);
  log('[kube-build] a cold build downloads modules and compiles for several minutes; later runs reuse the cache');
  for (const [path, pkg] of missing) {
    const t = Date.now();
    log(`[kube-build] go build ${pkg}`);
    // Build to a temporary name and rename, so an interrupted build never looks finished.
    await run('go', ['build', '-ldflags', VERSION_LDFLAGS, '-o', `${path}.partial`, pkg], MODULE_DIR, log);
    await rename(`${path}.partial`, path);
    log(`[kube-build] built ${path} in ${Math.round((Date.now() - t) / 1000)}s`);
  }
  if (!(await exists(binaries.istioCrds))) {
    log(`[kube-build] fetching Istio's CRDs from the istio.io/api ${ISTIO_API_VERSION} module`);
    // Outside our module, so go.mod and go.sum stay as committed.
    const info = JSON.parse(await run('go', ['mod', 'download', '-json', `istio.io/api@${ISTIO_API_VERSION}`], tmpdir(), log)) as { Dir?: string; Error?: string };
    if (info.Dir === undefined) throw new Error(`go mod download istio.io/api@${ISTIO_API_VERSION}: ${info.Error ?? 'no directory'}`);
    await copyFile(join(info.Dir, 'kubernetes/customresourcedefinitions.gen.yaml'), `${binaries.istioCrds}.partial`);
    await rename(`${binaries.istioCrds}.partial`, binaries.istioCrds);
  }
  log(`[kube-build] done in ${Math.round((Date.now() - started) / 1000)}s`);
  return binaries;
}

/** Removes cache directories of other versions or sources (kept small on CI machines). */
export async function pruneKubeCache(keep: string): Promise<void> {
  const { readdir } = await import('node:fs/promises');
  const root = join(ROOT, '.cache/kube');
  for (const entry of await readdir(root).catch(() => [] as string[])) {
    if (join(root, entry) !== keep) await rm(join(root, entry), { recursive: true, force: true });
  }
}
