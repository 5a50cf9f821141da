/**
 * The short soak is part of the test command: `npm run soak -- --minutes 2` as a user runs
 * it (its own control plane, Redis, webhook and sync replicas; every fault kind injected
 * once), with a fresh seed each run. A failure prints the seed, so it can be replayed with
 * --seed; the run's logs are kept and their directory printed.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { faultKindsFor } from '../soak/faults.ts';

const SOAK = fileURLToPath(new URL('../soak/run.ts', import.meta.url));

it('a 2-minute soak with every fault injected loses nothing, applies nothing wrong, dead-letters exactly the invalid events and gives each event one true outcome', async () => {
  const child = spawn(process.execPath, [SOAK, '--minutes', '2'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  const line = stdout.split('\n').find((l) => l.startsWith('SOAK '));
  if (code !== 0 || line === undefined) throw new Error(`soak exited with ${code}:\n${stdout}\n${stderr.slice(-6000)}`);
  const summary = JSON.parse(line.slice('SOAK '.length)) as Record<string, unknown> & { faults: Record<string, number>; expected: Record<string, number> };
  expect(summary).toMatchObject({ lost: 0, wrong: 0, pending: 0, deadLetterMissing: 0, deadLetterUnexpected: 0, deadLetterDuplicated: 0, historyViolations: 0, outcomeMissing: 0, outcomeUntrue: 0, outcomeDuplicated: 0, heardTwice: 0, supervisorRestarts: { crashed: 0 } });
  // It really did what it claims: every fault kind, every expectation, and a real workload.
  for (const kind of faultKindsFor('standalone')) expect(summary.faults[kind], kind).toBeGreaterThanOrEqual(1);
  expect(summary.expected.applied).toBeGreaterThan(1_000);
  expect(summary.expected['dead-letter']).toBeGreaterThan(20);
  expect(summary.deadLettered).toBe(summary.expected['dead-letter']);
}, 600_000);
