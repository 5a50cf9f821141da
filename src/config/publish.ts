/**
 * `publish` and `backfill`: what they check an event against before they add it (the policy,
 * for the content rules; --no-check skips them) and how long `publish --wait` waits for the
 * event's outcome.
 */
import { z } from 'zod';
import { commonSchema } from './common.ts';
import { ENV, type Env } from './env.ts';
import { parseWith } from './flags.ts';

const checkSchema = commonSchema.pick({ namespace: true, policyPath: true }).extend({
  /** Check the content rules with the policy (false: --no-check, the contract alone). */
  rules: z.boolean().default(true),
});

const publishSchema = checkSchema.extend({
  /** Wait this long for the event's outcome; undefined: do not wait. */
  waitMs: z.coerce.number().positive().max(86_400).transform((seconds) => seconds * 1000).optional(),
});

export type EventCheckConfig = z.output<typeof checkSchema>;
export type PublishEventConfig = z.output<typeof publishSchema>;

export interface EventCheckFlags {
  namespace?: string | undefined;
  policy?: string | undefined;
  /** commander's --no-check: false when given. */
  check?: boolean | undefined;
}

export interface PublishEventFlags extends EventCheckFlags {
  wait?: boolean | undefined;
  waitTimeout?: string | undefined;
}

/** The default wait of `publish --wait`, in seconds. */
export const DEFAULT_WAIT_SECONDS = 60;

function checkInput(flags: EventCheckFlags, env: Env): Record<string, unknown> {
  return { namespace: flags.namespace ?? env[ENV.namespace], policyPath: flags.policy ?? env[ENV.policy], rules: flags.check };
}

export function eventCheckConfig(flags: EventCheckFlags, env: Env): EventCheckConfig {
  return parseWith(checkSchema, checkInput(flags, env));
}

export function publishEventConfig(flags: PublishEventFlags, env: Env): PublishEventConfig {
  const waitMs = flags.wait === true ? (flags.waitTimeout ?? DEFAULT_WAIT_SECONDS) : undefined;
  return parseWith(publishSchema, { ...checkInput(flags, env), waitMs });
}
