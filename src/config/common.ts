/**
 * What every process that touches the cluster shares: namespace, kubeconfig, policy file, log level.
 */
import { z } from 'zod';
import { ENV, type Env } from './env.ts';
import { parseWith } from './flags.ts';

export const port = z.coerce.number().int().min(0).max(65535);

const logLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

export const dnsLabel = z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'must be a DNS label (lower-case alphanumerics and "-")').max(63);

/** The WorkloadEntry version a process reads and writes (Istio serves all three). */
export const istioApiVersion = z.enum(['v1', 'v1beta1', 'v1alpha3']).default('v1');

/** How a one-shot command prints its result. */
export const outputFormat = z.enum(['text', 'json']).default('text');

export const commonSchema = z.object({
  namespace: dnsLabel.default('airport-prod'),
  /** Undefined means in-cluster credentials. */
  kubeconfig: z.string().min(1).optional(),
  policyPath: z.string().min(1).optional(),
  logLevel: logLevel.default('info'),
});

export type CommonConfig = z.output<typeof commonSchema>;

export interface CommonFlags {
  namespace?: string | undefined;
  kubeconfig?: string | undefined;
  policy?: string | undefined;
  logLevel?: string | undefined;
}

export function commonInput(flags: CommonFlags, env: Env): Record<string, unknown> {
  return {
    namespace: flags.namespace ?? env[ENV.namespace],
    kubeconfig: flags.kubeconfig ?? env[ENV.kubeconfig],
    policyPath: flags.policy ?? env[ENV.policy],
    logLevel: flags.logLevel ?? env[ENV.logLevel],
  };
}

/** The managed namespace as every command reads it (--namespace, AIRPORT_NAMESPACE, airport-prod). */
export function namespaceOf(flags: { namespace?: string | undefined }, env: Env): string {
  return parseWith(commonSchema.pick({ namespace: true }), { namespace: flags.namespace ?? env[ENV.namespace] }).namespace;
}

/** The policy file as every command reads it (--policy, EDGE_REGISTRAR_POLICY; undefined means the built-in defaults). */
export function policyPathOf(flags: { policy?: string | undefined }, env: Env): string | undefined {
  return parseWith(commonSchema.pick({ policyPath: true }), { policyPath: flags.policy ?? env[ENV.policy] }).policyPath;
}
