/**
 * Builds examples/sigma-api-producer (sigma-api's side of the contract, on the `redis` crate)
 * with cargo once, into .cache/cargo/sigma-api-producer/, and runs its own unit tests there.
 * Cargo's target folder is its cache: a warm start is cargo finding nothing to do.
 */
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { capture } from './capture.ts';
import { run } from './kube-build.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const RUST_PRODUCER_DIR = join(ROOT, 'examples/sigma-api-producer');
const TARGET_DIR = join(ROOT, '.cache/cargo/sigma-api-producer');

export async function ensureRustProducer(log: (line: string) => void = (l) => console.error(l)): Promise<string> {
  const binary = join(TARGET_DIR, 'debug/sigma-api-producer');
  const cold = await access(binary).then(() => false, () => true);
  if (cold) log('[cargo] building examples/sigma-api-producer (the redis crate and its dependencies: a minute or two cold; later runs reuse .cache/cargo)');
  const env = { CARGO_TARGET_DIR: TARGET_DIR };
  // --locked: the committed Cargo.lock is what is built, as a producer's CI would.
  await run('cargo', ['build', '--locked', '--quiet'], RUST_PRODUCER_DIR, log, env);
  await run('cargo', ['test', '--locked', '--quiet'], RUST_PRODUCER_DIR, log, env);
  return binary;
}

/** An outcome as the producer prints it (one JSON line each). */
export interface PrintedOutcome {
  id: string;
  source_id: string;
  outcome: string;
  vps_id?: string;
  name?: string;
  rule?: string;
  reason?: string;
  dlq_id?: string;
}

export interface ProducerRun {
  code: number;
  outcomes: PrintedOutcome[];
  stderr: string;
}

/** Runs the producer against `urls` (one server, or a cluster's seeds) and parses what it printed. */
export async function runRustProducer(binary: string, urls: string[], args: string[]): Promise<ProducerRun> {
  const result = await capture(binary, ['--redis', urls.join(','), '--outcome-timeout', '60', ...args]);
  const outcomes = result.stdout.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as PrintedOutcome);
  return { code: result.code, outcomes, stderr: result.stderr };
}
