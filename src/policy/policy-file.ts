/**
 * The policy is data: a YAML file whose every field has a built-in default that fits the
 * fleet (app `xrayr`, serviceAccount `xrayr-vm`, names `vps-<country>-<digits>`). This
 * module parses and validates it; it does no file I/O so it can be used by the webhook's
 * reloader, the offline check and the sync daemon alike.
 */
import ipaddr from 'ipaddr.js';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { formatZodIssues } from '../util/zod-format.ts';
import { namePatternProblem } from './name-pattern.ts';

/**
 * A CIDR's shape, as a pattern JSON Schema can carry too (the chart validates the policy in
 * its values with the schema generated from this one); parsing it (below) decides the rest.
 */
const CIDR_SHAPE = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}\/(?:3[0-2]|[12]?\d)|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\/(?:12[0-8]|1[01]\d|[1-9]?\d))$/;

const cidr = z.string().regex(CIDR_SHAPE, { message: 'must be a CIDR such as 203.0.113.0/24 or 2001:db8::/32' }).refine(
  (value) => {
    try {
      ipaddr.parseCIDR(value);
      return true;
    } catch {
      return false;
    }
  },
  { message: 'must be a CIDR such as 203.0.113.0/24 or 2001:db8::/32' },
);

/** RE2 syntax, compiled here once: see name-pattern.ts. */
const namePattern = z.string().superRefine((value, ctx) => {
  const problem = namePatternProblem(value);
  if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
});

/** Identities that count as the sync daemon, break-glass operators and cluster controllers. */
const ownershipSchema = z
  .object({
    syncUsers: z.array(z.string().min(1)).default(['system:serviceaccount:airport-prod:edge-registrar-sync']),
    syncGroups: z.array(z.string().min(1)).default([]),
    breakGlassGroups: z.array(z.string().min(1)).default(['edge-registrar:break-glass']),
    /** Kubernetes' own garbage collector and namespace controller may always delete. */
    controllerDeleters: z
      .array(z.string().min(1))
      .default([
        'system:serviceaccount:kube-system:generic-garbage-collector',
        'system:serviceaccount:kube-system:namespace-controller',
        'system:kube-controller-manager',
      ]),
    /** istiod writes its own auto-registered entries; they are not ours to judge. */
    istiodUsers: z.array(z.string().min(1)).default(['system:serviceaccount:istio-system:istiod']),
  })
  .strict();

export const policySchema = z
  .object({
    app: z.string().min(1).default('xrayr'),
    serviceAccount: z.string().min(1).default('xrayr-vm'),
    /** Default for the `version` label; Istio shows "latest" for entries without one. */
    version: z.string().min(1).default('v1'),
    requiredLabels: z.array(z.string().min(1)).default(['app', 'country']),
    /** An RE2 regular expression for metadata.name; a named group `country` must equal the country label. */
    namePattern: namePattern.default('^vps-(?<country>[a-z]{2})-[0-9]+$'),
    address: z
      .object({
        /** When non-empty, addresses must fall inside one of these. */
        allowCidrs: z.array(cidr).default([]),
        denyCidrs: z.array(cidr).default([]),
      })
      .strict()
      .default({ allowCidrs: [], denyCidrs: [] }),
    ports: z.object({ allowed: z.boolean().default(false) }).strict().default({ allowed: false }),
    /** Allowed values of spec.network; empty means the field must be unset. */
    networks: z.array(z.string().min(1)).default([]),
    ownership: ownershipSchema.default(ownershipSchema.parse({})),
  })
  .strict();

export type Policy = z.output<typeof policySchema>;

/**
 * The policy file's JSON Schema, generated from the schema the code parses it with: the chart's
 * values.schema.json carries it under `policy` (npm run schema writes it; a test keeps the two
 * equal). What JSON Schema cannot say (a CIDR that parses, a pattern RE2 compiles) the code
 * checks at load, and the chart checks the pattern with Go's RE2 too.
 */
export function policyJsonSchema(): Record<string, unknown> {
  const { $schema: _dialect, ...schema } = z.toJSONSchema(policySchema, { io: 'input' }) as Record<string, unknown>;
  return { description: 'policy file settings over the built-in defaults (edge-registrar policy print)', ...schema };
}

export const DEFAULT_POLICY: Policy = policySchema.parse({});

export class PolicyFileError extends Error {
  override name = 'PolicyFileError';
}

/** Parses policy YAML text; `source` names the file in error messages. */
export function parsePolicy(text: string, source: string): Policy {
  let raw: unknown;
  try {
    raw = parseYaml(text) ?? {};
  } catch (error) {
    throw new PolicyFileError(`${source}: not valid YAML: ${(error as Error).message}`, { cause: error });
  }
  const result = policySchema.safeParse(raw);
  if (!result.success) {
    throw new PolicyFileError(`${source}: invalid policy: ${formatZodIssues(result.error.issues, raw)}`);
  }
  return result.data;
}
