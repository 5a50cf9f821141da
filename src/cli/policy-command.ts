import { stringify } from 'yaml';
import { ENV } from '../config/env.ts';
import { loadPolicy } from '../policy-source.ts';

export async function runPolicyPrint(flags: { policy?: string }): Promise<void> {
  const policy = await loadPolicy(flags.policy ?? process.env[ENV.policy]);
  process.stdout.write(stringify(policy));
}
