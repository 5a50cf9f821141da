/** `edge-registrar doctor`: checks a live cluster and Redis, prints the checklist, exits 1 on any failure. */
import { doctorConfig, type DoctorFlags } from '../config/doctor.ts';
import { redisFlagsToPrint } from '../config/redis.ts';
import { shellQuote } from '../util/shell-quote.ts';
import { diagnose, formatChecks } from '../doctor/checks.ts';
import { gatherClusterState } from '../doctor/gather.ts';
import { loadKubeConfig } from '../kube/client.ts';
import { loadPolicy } from '../policy-source.ts';

export async function runDoctor(flags: DoctorFlags): Promise<void> {
  const config = doctorConfig(flags, process.env);
  const policy = await loadPolicy(config.policyPath);
  const state = await gatherClusterState(loadKubeConfig(config.kubeconfig), config, policy);
  const kubectl = `kubectl${flags.kubeconfig !== undefined ? ` --kubeconfig ${shellQuote(flags.kubeconfig)}` : ''}`;
  const checks = diagnose(state, {
    policy,
    invocation: { kubectl, edgeRegistrar: (subcommand) => `edge-registrar ${subcommand}${redisFlagsToPrint(flags)}` },
    webhookName: config.webhookName,
    ...(config.telemetry.enabled ? { telemetry: { namespace: config.telemetry.namespace, name: config.telemetry.name } } : {}),
    now: new Date(),
  });
  if (config.output === 'json') console.log(JSON.stringify({ checks, failed: checks.filter((c) => c.status === 'fail').length }, null, 2));
  else process.stdout.write(formatChecks(checks));
  if (checks.some((c) => c.status === 'fail')) process.exitCode = 1;
}
