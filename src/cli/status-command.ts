/** `edge-registrar status VPS_ID`: one VPS as Redis, the cluster and the managed Telemetry see it. */
import { statusConfig, type StatusFlags } from '../config/status.ts';
import { loadKubeConfig } from '../kube/client.ts';
import { DEFAULT_TELEMETRY_OPTIONS } from '../mesh-telemetry/telemetry-object.ts';
import { withRedis } from '../redis/connection.ts';
import { daemonKeys } from '../redis/keys.ts';
import { describeStatus, needsAttention, readVpsStatus } from '../status/vps-status.ts';

export async function runStatus(vpsId: string, flags: StatusFlags): Promise<void> {
  const config = statusConfig(flags, process.env);
  const status = await withRedis(config.redis, { commandTimeoutMs: 5_000 }, (redis) =>
    readVpsStatus(vpsId, {
      redis,
      keys: daemonKeys(config.stream, config.namespace, config.outcomeStream),
      kubeConfig: loadKubeConfig(config.kubeconfig),
      namespace: config.namespace,
      istioApiVersion: config.istioApiVersion,
      telemetry: { namespace: config.telemetry.namespace, name: config.telemetry.name, vpsTag: DEFAULT_TELEMETRY_OPTIONS.vpsTag, required: config.telemetry.enabled },
    }),
  );
  if (config.output === 'json') console.log(JSON.stringify(status, null, 2));
  else process.stdout.write(describeStatus(status));
  if (needsAttention(status)) process.exitCode = 1;
}
