/**
 * Builds Istio's own code from the istio.io/istio Go module (test/harness/istio pins it) once
 * and caches it in .cache/istio/<version>-<hash of go.mod, go.sum and main.go>/:
 * - istioctl, for `istioctl analyze` on files;
 * - meshview (test/harness/istio/main.go), which runs istiod's configuration pipeline
 *   in-process and prints what one proxy would receive.
 * Its own module, so Istio's Kubernetes libraries never meet the control plane's or helm's.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exists, run } from './kube-build.ts';

/** The istio.io/istio pseudo-version in test/harness/istio/go.mod: the 1.31 development line. */
export const ISTIO_MODULE_VERSION = 'v0.0.0-20260827124520-eed52ebb66ad';
const ISTIO_RELEASE_LINE = '1.31-dev';
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MODULE_DIR = join(ROOT, 'test/harness/istio');

export interface IstioTools {
  istioctl: string;
  meshview: string;
}

/** Stamped the way Istio's release builds are (common/scripts/report_build_info.sh), so `istioctl version` says what it is. */
const VERSION_LDFLAGS = [
  `-X istio.io/istio/pkg/version.buildVersion=${ISTIO_RELEASE_LINE}`,
  `-X istio.io/istio/pkg/version.buildGitRevision=${ISTIO_MODULE_VERSION.split('-').at(-1)}`,
  '-X istio.io/istio/pkg/version.buildStatus=Clean',
].join(' ');

export async function ensureIstioTools(log: (line: string) => void = (l) => console.error(l)): Promise<IstioTools> {
  const hash = createHash('sha256');
  hash.update(VERSION_LDFLAGS);
  for (const file of ['go.mod', 'go.sum', 'main.go']) hash.update(await readFile(join(MODULE_DIR, file)));
  const dir = join(ROOT, '.cache/istio', `${ISTIO_RELEASE_LINE}-${hash.digest('hex').slice(0, 12)}`);
  const tools: IstioTools = { istioctl: join(dir, 'istioctl'), meshview: join(dir, 'meshview') };
  const wanted: [string, string][] = [
    [tools.meshview, '.'],
    [tools.istioctl, 'istio.io/istio/istioctl/cmd/istioctl'],
  ];
  const missing = [];
  for (const [path, pkg] of wanted) if (!(await exists(path))) missing.push([path, pkg] as const);
  if (missing.length === 0) return tools;

  await mkdir(dir, { recursive: true });
  const started = Date.now();
  log(`[istio-build] building Istio's own code (istio.io/istio ${ISTIO_MODULE_VERSION}) into ${dir}`);
  log('[istio-build] a cold build downloads modules and compiles istiod\'s packages for several minutes; later runs reuse the cache');
  for (const [path, pkg] of missing) {
    const t = Date.now();
    log(`[istio-build] go build ${pkg}`);
    // Build to a temporary name and rename, so an interrupted build never looks finished.
    await run('go', ['build', '-ldflags', VERSION_LDFLAGS, '-o', `${path}.partial`, pkg], MODULE_DIR, log);
    await rename(`${path}.partial`, path);
    log(`[istio-build] built ${path} in ${Math.round((Date.now() - t) / 1000)}s`);
  }
  log(`[istio-build] done in ${Math.round((Date.now() - started) / 1000)}s`);
  return tools;
}
