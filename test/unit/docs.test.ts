/**
 * The docs stand alone and do not lie about their commands: every relative link in README.md,
 * CONTRIBUTING.md and docs/ resolves to a file in the repository (and a heading, for an
 * anchor); no tracked file names a path outside the repository; and every shell command the
 * docs print is accounted for: run by the test named beside it, or left out for the reason
 * given. A new command in the docs fails here until someone says how it is proven.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import semver from 'semver';
import { describe, expect, it } from 'vitest';
import { shellCommandsIn } from '../harness/doc-snippets.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DOCS = ['README.md', 'CONTRIBUTING.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .trim()
    .replace(/\s/g, '-');
}

function anchorsOf(file: string): Set<string> {
  const seen = new Map<string, number>();
  const anchors = new Set<string>();
  const text = readFileSync(file, 'utf8').replace(/^```[\s\S]*?^```/gm, '');
  for (const [, heading] of text.matchAll(/^#{1,6} (.+)$/gm)) {
    const base = slug(heading ?? '');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    anchors.add(n === 0 ? base : `${base}-${n}`);
  }
  return anchors;
}

/** Every Markdown link target in `file` outside code blocks and code spans. */
function linksIn(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8')
    .replace(/^```[\s\S]*?^```/gm, '')
    .replace(/`[^`\n]*`/g, '');
  return [...text.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1] ?? '');
}

describe('links in README.md, CONTRIBUTING.md and docs/', () => {
  it.each(DOCS)('every relative link in %s resolves inside the repository', (file) => {
    const broken: string[] = [];
    for (const target of linksIn(file)) {
      if (/^[a-z]+:/i.test(target)) continue;
      const [path = '', anchor] = target.split('#');
      const resolved = path === '' ? join(ROOT, file) : resolve(dirname(join(ROOT, file)), path);
      if (relative(ROOT, resolved).startsWith('..')) broken.push(`${target}: outside the repository`);
      else if (!existsSync(resolved)) broken.push(`${target}: no such file`);
      else if (anchor !== undefined && resolved.endsWith('.md') && !anchorsOf(resolved).has(anchor)) broken.push(`${target}: no heading #${anchor} in ${relative(ROOT, resolved)}`);
    }
    expect(broken).toEqual([]);
  });

  it('the anchor rule is GitHub\'s', () => {
    expect(slug("Proven with Istio's own code")).toBe('proven-with-istios-own-code');
    expect(slug('`doctor`, for a new operator')).toBe('doctor-for-a-new-operator');
    expect(slug("The sync daemon's guarantees")).toBe('the-sync-daemons-guarantees');
  });
});

describe('no file names a path outside the repository', () => {
  it('nothing tracked points at the planning folder or at this machine', () => {
    // Spelled in pieces, so this file does not match itself.
    const patterns = ['\\.\\./' + 'shared', '/' + 'work/', 'DESIGN' + '\\.md', '\\.\\./' + 'seeds'];
    let found = '';
    try {
      found = execFileSync('git', ['grep', '-nE', patterns.join('|'), '--', '.', ':!package-lock.json'], { cwd: ROOT, encoding: 'utf8' });
    } catch (error) {
      // git grep exits 1 when nothing matches.
      if ((error as { status?: number }).status !== 1) throw error;
    }
    expect(found).toBe('');
  });
});

/**
 * How each command the docs print is proven, by the start of the command. `run` names the test
 * (or script) that runs it, so that file must exist; `not run` says why no test can.
 */
const COMMANDS: { prefix: string; run?: string; notRun?: string }[] = [
  { prefix: 'npm ci && npm run local', run: 'test/e2e/local-stack.test.ts' },
  { prefix: 'npm ci && npm test', run: '.ci/run' },
  { prefix: 'npm test', run: '.ci/run' },
  { prefix: 'npm run test:unit', run: '.ci/run' },
  { prefix: 'npm run test:e2e', run: '.ci/run' },
  { prefix: 'npm run soak -- --minutes', run: 'test/e2e/soak.test.ts' },
  { prefix: 'npm run bench', notRun: 'a benchmark takes minutes; its results are recorded in docs/benchmarks.md' },
  { prefix: 'helm install edge-registrar charts/edge-registrar', run: 'test/e2e/helm-install.test.ts' },
  { prefix: 'helm upgrade edge-registrar charts/edge-registrar -n edge-registrar --reuse-values', run: 'test/e2e/helm-install.test.ts' },
  { prefix: 'helm test edge-registrar', run: 'test/e2e/helm-install.test.ts' },
  { prefix: 'kubectl -n edge-registrar rollout status', run: 'test/e2e/helm-install.test.ts' },
  { prefix: 'kubectl -n edge-registrar exec deploy/edge-registrar-sync -- edge-registrar status', run: 'test/e2e/outcomes.test.ts' },
  { prefix: 'redis-cli ACL SETUSER edge-registrar ', run: 'test/e2e/redis-connection.test.ts' },
  { prefix: 'redis-cli ACL SETUSER sigma-api ', run: 'test/e2e/redis-connection.test.ts' },
  { prefix: 'redis-cli XADD ', run: 'test/e2e/docs-commands.test.ts' },
  { prefix: 'redis-cli XREAD ', run: 'test/e2e/docs-commands.test.ts' },
  { prefix: 'redis-cli XRANGE ', run: 'test/e2e/docs-commands.test.ts' },
  { prefix: 'docker ', notRun: 'there is no Docker engine in CI; test/e2e/image.test.ts runs what the image runs' },
];

describe('every shell command in the docs is accounted for', () => {
  it.each(DOCS)('%s', (file) => {
    const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
    const problems: string[] = [];
    for (const command of shellCommandsIn(join(ROOT, file))) {
      const text = command.replace(/\s+#.*$/, '');
      const how = COMMANDS.find((c) => text.startsWith(c.prefix));
      if (how === undefined) problems.push(`${text}: no test runs it; add it to COMMANDS with the test that does, or why none can`);
      else if (how.run !== undefined && !existsSync(join(ROOT, how.run))) problems.push(`${text}: ${how.run} does not exist`);
      for (const [, script] of text.matchAll(/npm run (?:-s )?([\w:-]+)/g)) if (scripts[script ?? ''] === undefined) problems.push(`${text}: no npm script "${script ?? ''}"`);
      for (const [, path] of text.matchAll(/(?:^|\s)((?:test|charts|docs|src|bench|scripts)\/[\w./-]+)/g)) if (!existsSync(join(ROOT, path ?? ''))) problems.push(`${text}: no file ${path ?? ''}`);
    }
    expect(problems).toEqual([]);
  });
});

describe("the README's word on npm ci with the machine's older Node", () => {
  it('names exactly the packages whose engines leave out Node 20, the ones npm ci warns about there', () => {
    const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { engines?: { node?: string }; optional?: boolean }> };
    const root = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { devEngines?: { runtime?: { version?: string } } };
    // The root is judged by its devEngines (the Node that runs npm), its dependencies by their engines.
    expect(semver.satisfies('20.0.0', root.devEngines?.runtime?.version ?? '')).toBe(true);
    const warned = Object.entries(lock.packages)
      .filter(([path, pkg]) => path !== '' && pkg.optional !== true && pkg.engines?.node !== undefined && !semver.satisfies('20.20.2', pkg.engines.node, { includePrerelease: true }))
      .map(([path]) => path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length))
      .sort();
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const named = /prints one `EBADENGINE` warning for each of ([^,]+?), which/.exec(readme.replace(/\s+/g, ' '))?.[1] ?? '';
    expect([...named.matchAll(/`([^`]+)`/g)].map((m) => m[1]).sort()).toEqual(warned);
  });
});

describe("the event contract's Rust calls are the example producer's own", () => {
  it('every line of each rust block in docs/event-contract.md is a line of examples/sigma-api-producer/src', () => {
    const contract = readFileSync(join(ROOT, 'docs/event-contract.md'), 'utf8');
    const source = readdirSync(join(ROOT, 'examples/sigma-api-producer/src')).map((f) => readFileSync(join(ROOT, 'examples/sigma-api-producer/src', f), 'utf8')).join('\n');
    const sourceLines = new Set(source.split('\n').map((l) => l.trim()));
    const shown = [...contract.matchAll(/^```rust\n([\s\S]*?)^```/gm)].flatMap((m) => (m[1] ?? '').split('\n')).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('//'));
    expect(shown.length).toBeGreaterThan(0);
    expect(shown.filter((l) => !sourceLines.has(l))).toEqual([]);
  });
});
