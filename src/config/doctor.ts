/**
 * `edge-registrar doctor`: what to read and how to report.
 */
import { z } from 'zod';
import { type CommonFlags, commonInput, commonSchema, dnsLabel, istioApiVersion, outputFormat } from './common.ts';
import { ENV, type Env, definedOnly } from './env.ts';
import { parseWith } from './flags.ts';
import { type TelemetryGatewayFlags, telemetryGatewayInput, telemetrySchema } from './mesh-telemetry.ts';
import { type RedisFlags, redisInput, redisSchema, streamInput, streamSchema } from './redis.ts';

/** `edge-registrar doctor`: what to look at; Redis is optional (its checks are skipped without it). */
const doctorSchema = commonSchema.extend({
  redis: redisSchema.optional(),
  ...streamSchema.shape,
  istioApiVersion,
  webhookName: z.string().min(1).default('edge-registrar'),
  /** NAMESPACE/NAME of the webhook's certificate Secret (ca.crt, tls.crt). */
  certSecret: z.string().regex(/^[a-z0-9-]+\/[a-z0-9.-]+$/, 'must be NAMESPACE/NAME').optional(),
  istiodNamespace: dnsLabel.default('istio-system'),
  telemetry: telemetrySchema.prefault({}),
  output: outputFormat,
});

export type DoctorConfig = z.output<typeof doctorSchema>;

export interface DoctorFlags extends CommonFlags, RedisFlags, TelemetryGatewayFlags {
  webhookName?: string | undefined;
  certSecret?: string | undefined;
  istiodNamespace?: string | undefined;
  output?: string | undefined;
  istioApiVersion?: string | undefined;
}

export function doctorConfig(flags: DoctorFlags, env: Env): DoctorConfig {
  const redisGiven = flags.redisUrl !== undefined || flags.redisClusterNodes !== undefined || env[ENV.redisUrl] !== undefined || env[ENV.redisSentinels] !== undefined || env[ENV.redisClusterNodes] !== undefined;
  return parseWith(doctorSchema, {
    ...commonInput(flags, env),
    redis: redisGiven ? redisInput(flags, env) : undefined,
    ...streamInput(flags, env),
    istioApiVersion: flags.istioApiVersion ?? env[ENV.istioApiVersion],
    webhookName: flags.webhookName,
    certSecret: flags.certSecret,
    istiodNamespace: flags.istiodNamespace,
    output: flags.output,
    telemetry: definedOnly(telemetryGatewayInput(flags, env)),
  });
}
