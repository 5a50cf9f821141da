/**
 * The container image, tested without a Docker engine: the build context holds what the
 * Dockerfile copies and nothing else, and the entrypoint runs from the built output with the
 * production dependencies alone (as the image's last stage has them).
 */
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { capture } from '../harness/capture.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
let work: string | undefined;

async function run(command: string, args: string[], cwd: string): Promise<{ code: number; out: string }> {
  const res = await capture(command, args, { cwd });
  return { code: res.code, out: res.stdout + res.stderr };
}

afterAll(async () => {
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

describe('container image', () => {
  it('.dockerignore admits exactly what the Dockerfile copies from the context', async () => {
    const dockerfile = await readFile(join(ROOT, 'Dockerfile'), 'utf8');
    const ignore = (await readFile(join(ROOT, '.dockerignore'), 'utf8')).split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#'));
    expect(ignore[0]).toBe('**');
    const admitted = ignore.slice(1).map((l) => l.replace(/^!/, '').replace(/\/\*\*$/, ''));
    const copied = [...dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) => (m[1] ?? '').split(/\s+/));
    expect(new Set(copied)).toEqual(new Set(admitted));
    for (const never of ['node_modules', 'test', '.cache', '.local', 'certs', 'dist', '.git']) expect(admitted).not.toContain(never);
    // Non-root, and the entrypoint is the package's bin.
    expect(dockerfile).toMatch(/^USER 10001:10001$/m);
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> };
    expect(dockerfile).toContain(`ENTRYPOINT ["node", "/app/${pkg.bin['edge-registrar'] ?? ''}"]`);
  });

  it('the entrypoint runs from the built output with production dependencies only', async () => {
    work = await mkdtemp(join(tmpdir(), 'edge-registrar-image-'));
    // The build stage: tsc into dist/.
    const built = await run(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', join(work, 'dist')], ROOT);
    expect(built.out).toBe('');
    // The deps stage: npm ci --omit=dev in a directory with only the manifest and lockfile.
    for (const file of ['package.json', 'package-lock.json']) await cp(join(ROOT, file), join(work, file));
    const npm = await run('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline'], work);
    expect(npm.code, npm.out).toBe(0);
    const help = await run(process.execPath, [join(work, 'dist/cli.js'), '--help'], work);
    expect(help.code, help.out).toBe(0);
    expect(help.out).toContain('webhook');
    expect(help.out).toContain('sync');
    const policy = await run(process.execPath, [join(work, 'dist/cli.js'), 'policy', 'print'], work);
    expect(policy.code, policy.out).toBe(0);
    expect(policy.out).toContain('serviceAccount: xrayr-vm');
  }, 180_000);
});
