/**
 * `edge-registrar status VPS_ID`.
 */
import { z } from 'zod';
import { type CommonFlags, commonInput, commonSchema, istioApiVersion, outputFormat } from './common.ts';
import { ENV, type Env, definedOnly } from './env.ts';
import { parseWith } from './flags.ts';
import { type TelemetryGatewayFlags, telemetryGatewayInput, telemetrySchema } from './mesh-telemetry.ts';
import { type RedisFlags, redisInput, redisSchema, streamInput, streamSchema } from './redis.ts';

/** `edge-registrar status VPS_ID`: one VPS in Redis, the cluster and the managed Telemetry. */
const statusSchema = commonSchema.extend({
  redis: redisSchema,
  ...streamSchema.shape,
  istioApiVersion,
  telemetry: telemetrySchema.prefault({}),
  output: outputFormat,
});

export type StatusConfig = z.output<typeof statusSchema>;

export interface StatusFlags extends CommonFlags, RedisFlags, TelemetryGatewayFlags {
  output?: string | undefined;
  istioApiVersion?: string | undefined;
}

export function statusConfig(flags: StatusFlags, env: Env): StatusConfig {
  return parseWith(statusSchema, {
    ...commonInput(flags, env),
    redis: redisInput(flags, env),
    ...streamInput(flags, env),
    istioApiVersion: flags.istioApiVersion ?? env[ENV.istioApiVersion],
    output: flags.output,
    telemetry: definedOnly(telemetryGatewayInput(flags, env)),
  });
}
