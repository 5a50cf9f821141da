/**
 * Builds Go programs from a pinned module under test/harness/ once, into
 * .cache/<name>/<version>-<hash of the module's files and the ldflags>/, printing progress.
 * Each program is built to a temporary name and renamed, so an interrupted build never looks
 * finished; a warm start costs a stat per program.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exists, run } from './kube-build.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface GoToolsSpec<Name extends string> {
  /** The module's folder under test/harness/ and the cache's folder under .cache/. */
  name: string;
  version: string;
  /** Files of the module whose content decides the build (go.mod, go.sum, sources). */
  files: string[];
  ldflags?: string;
  /** What to build: output name → package (relative to the module, or an import path). */
  programs: Record<Name, string>;
  /** Printed before a cold build. */
  coldNote: string;
}

export async function ensureGoTools<Name extends string>(spec: GoToolsSpec<Name>, log: (line: string) => void = (l) => console.error(l)): Promise<Record<Name, string>> {
  const moduleDir = join(ROOT, 'test/harness', spec.name);
  const hash = createHash('sha256');
  hash.update(spec.ldflags ?? '');
  for (const file of spec.files) hash.update(await readFile(join(moduleDir, file)));
  const dir = join(ROOT, '.cache', spec.name, `${spec.version}-${hash.digest('hex').slice(0, 12)}`);
  const paths = Object.fromEntries(Object.keys(spec.programs).map((program) => [program, join(dir, program)])) as Record<Name, string>;
  const missing: [string, string][] = [];
  for (const [program, pkg] of Object.entries(spec.programs) as [Name, string][]) if (!(await exists(paths[program]))) missing.push([paths[program], pkg]);
  if (missing.length === 0) return paths;

  await mkdir(dir, { recursive: true });
  const started = Date.now();
  log(`[${spec.name}-build] building ${spec.version} from Go modules into ${dir}`);
  log(`[${spec.name}-build] ${spec.coldNote}`);
  for (const [path, pkg] of missing) {
    const t = Date.now();
    log(`[${spec.name}-build] go build ${pkg}`);
    await run('go', ['build', ...(spec.ldflags === undefined ? [] : ['-ldflags', spec.ldflags]), '-o', `${path}.partial`, pkg], moduleDir, log);
    await rename(`${path}.partial`, path);
    log(`[${spec.name}-build] built ${path} in ${Math.round((Date.now() - t) / 1000)}s`);
  }
  log(`[${spec.name}-build] done in ${Math.round((Date.now() - started) / 1000)}s`);
  return paths;
}
