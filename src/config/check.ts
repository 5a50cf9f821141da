/**
 * `edge-registrar check`: the files and the optional cluster to check them against.
 */
import { z } from 'zod';
import { type CommonFlags, commonInput, commonSchema, istioApiVersion, outputFormat } from './common.ts';
import { ENV, type Env } from './env.ts';
import { parseWith } from './flags.ts';

const checkSchema = commonSchema.extend({
  files: z.array(z.string().min(1)).min(1, 'give at least one FILE'),
  output: outputFormat,
  istioApiVersion,
});

export type CheckConfig = z.output<typeof checkSchema>;

export interface CheckFlags extends CommonFlags {
  output?: string | undefined;
  istioApiVersion?: string | undefined;
}

export function checkConfig(files: string[], flags: CheckFlags, env: Env): CheckConfig {
  return parseWith(checkSchema, {
    ...commonInput(flags, env),
    files,
    output: flags.output,
    istioApiVersion: flags.istioApiVersion ?? env[ENV.istioApiVersion],
  });
}
