/** cel-go (Google's reference CEL implementation, built by the e2e global setup) on our expressions. */
import { inject } from 'vitest';
import { capture } from '../harness/capture.ts';

export interface CelRequest {
  headers: Record<string, string>;
  /** The proxy's node (its metadata: WORKLOAD_NAME, NAMESPACE, LABELS ...), as Istio's stats filter exposes it. */
  node?: { metadata: Record<string, unknown> };
}

export interface CelOutcome {
  /** Whether each expression parsed and checked, with cel-go's default limits (which are Envoy's cel-cpp's). */
  compiled: { ok: boolean; error?: string }[];
  /** results[r][e]: expression e evaluated on request r. */
  results: { value?: string; error?: string }[][];
}

export async function evaluateCel(expressions: string[], requests: CelRequest[]): Promise<CelOutcome> {
  const res = await capture(inject('istio').celeval, [], { input: JSON.stringify({ expressions, requests }) });
  if (res.code !== 0) throw new Error(`celeval failed (${res.code}): ${res.stderr}`);
  return JSON.parse(res.stdout) as CelOutcome;
}

/** What a request's tags come to once shard tags are merged: the one non-empty value. */
export function mergedValue(outcome: CelOutcome, request: number): string[] {
  return (outcome.results[request] ?? []).map((r) => r.value ?? `error: ${r.error}`).filter((v) => v !== '');
}
