/**
 * `edge-registrar certs generate`: where and for which names.
 */
import { z } from 'zod';
import { parseWith } from './flags.ts';

const certsSchema = z.object({
  out: z.string().min(1),
  hosts: z.array(z.string().min(1)).min(1, 'give at least one --host'),
  ips: z.array(z.string().min(1)).default([]),
  caDays: z.coerce.number().int().positive().default(3650),
  days: z.coerce.number().int().positive().default(365),
  force: z.boolean().default(false),
});

export type CertsConfig = z.output<typeof certsSchema>;

export interface CertsFlags {
  out?: string | undefined;
  host?: string[] | undefined;
  ip?: string[] | undefined;
  days?: string | undefined;
  caDays?: string | undefined;
  force?: boolean | undefined;
}

export function certsConfig(flags: CertsFlags): CertsConfig {
  return parseWith(certsSchema, {
    out: flags.out,
    hosts: flags.host,
    ips: flags.ip,
    days: flags.days,
    caDays: flags.caDays,
    force: flags.force,
  });
}
