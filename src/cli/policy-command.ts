import { stringify } from 'yaml';
import { policyPathOf } from '../config/common.ts';
import { loadPolicy } from '../policy-source.ts';

export async function runPolicyPrint(flags: { policy?: string }): Promise<void> {
  const policy = await loadPolicy(policyPathOf(flags, process.env));
  process.stdout.write(stringify(policy));
}
