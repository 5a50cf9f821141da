/**
 * Builds the helm CLI from its Go module (test/harness/helm/go.mod pins it through the
 * `tool` directive) once and caches it in .cache/helm/<version>-<hash of go.mod and go.sum>/.
 * Its own module, so helm's Kubernetes libraries never meet the control plane's.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exists, run } from './kube-build.ts';

export const HELM_VERSION = 'v4.3.1';
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MODULE_DIR = join(ROOT, 'test/harness/helm');

export async function ensureHelm(log: (line: string) => void = (l) => console.error(l)): Promise<string> {
  const hash = createHash('sha256');
  for (const file of ['go.mod', 'go.sum']) hash.update(await readFile(join(MODULE_DIR, file)));
  const dir = join(ROOT, '.cache/helm', `${HELM_VERSION}-${hash.digest('hex').slice(0, 12)}`);
  const helm = join(dir, 'helm');
  if (await exists(helm)) return helm;
  await mkdir(dir, { recursive: true });
  const started = Date.now();
  log(`[helm-build] go build helm ${HELM_VERSION} into ${dir}`);
  // The version is stamped the way helm's own release builds do it.
  await run('go', ['build', '-ldflags', `-X helm.sh/helm/v4/internal/version.version=${HELM_VERSION}`, '-o', `${helm}.partial`, 'helm.sh/helm/v4/cmd/helm'], MODULE_DIR, log);
  await rename(`${helm}.partial`, helm);
  log(`[helm-build] done in ${Math.round((Date.now() - started) / 1000)}s`);
  return helm;
}
