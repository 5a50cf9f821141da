/**
 * Reads what `doctor` judges from a live cluster and Redis, every part on its own with the
 * client's deadline: a part that cannot be read becomes that part's error, never the whole
 * run's, so one missing permission still leaves a checklist.
 */
import { X509Certificate } from 'node:crypto';
import * as k8s from '@kubernetes/client-node';
import type { DoctorConfig } from '../config/doctor.ts';
import { WORKLOAD_ENTRY_GROUP, WORKLOAD_ENTRY_PLURAL, makeApiClient } from '../kube/client.ts';
import { MANAGED_SELECTOR, VPS_ID_ANNOTATION } from '../policy/markers.ts';
import { withRedis } from '../redis/connection.ts';
import { consumerGroupInfo, undeliveredEntries } from '../redis/consumer-group.ts';
import { daemonKeys } from '../redis/keys.ts';
import { StateStore } from '../sync/state-store.ts';
import { TELEMETRY_COORDINATES, type StoredTelemetry } from '../mesh-telemetry/telemetry-object.ts';
import type { Policy } from '../policy/policy-file.ts';
import type { ClusterState, MeshConfig, MeshNetworks, Obj, PodPort, Read, RegisteredVps, WebhookConfiguration, WebhookNetwork } from './checks.ts';
import { selects, type NetworkPolicyObj, type PodAddress } from './network-reach.ts';

async function read<T>(get: () => Promise<T>): Promise<Read<T>> {
  try {
    return { ok: true, value: await get() };
  } catch (error) {
    if (error instanceof k8s.ApiException) {
      const body = typeof error.body === 'string' ? error.body : JSON.stringify(error.body);
      let message = body;
      try {
        message = (JSON.parse(body) as { message?: string }).message ?? body;
      } catch {
        // not JSON: the body as it is
      }
      return { ok: false, error: `HTTP ${error.code}: ${message.slice(0, 300)}` };
    }
    return { ok: false, error: error instanceof Error ? error.message : String(error) };
  }
}

/** undefined for a 404, the object otherwise. */
async function optional<T>(get: () => Promise<T>): Promise<T | undefined> {
  try {
    return await get();
  } catch (error) {
    if (error instanceof k8s.ApiException && error.code === 404) return undefined;
    throw error;
  }
}

async function redisState(config: DoctorConfig): Promise<ClusterState['redis']> {
  if (config.redis === undefined) return undefined;
  const redisConfig = config.redis;
  return read(() =>
    withRedis(redisConfig, { commandTimeoutMs: 5_000 }, async (redis) => {
      // No stream yet reads as no group: no daemon has started.
      const group = await consumerGroupInfo(redis, config.stream, config.group).catch(() => undefined);
      const lag = group === undefined ? null : await undeliveredEntries(redis, config.stream, group);
      const keys = daemonKeys(config.stream, config.namespace, config.outcomeStream);
      const store = new StateStore(redis, { keys, group: config.group, tombstoneTtlSeconds: 1, outcomeMaxLength: 1 });
      const registered: RegisteredVps[] = (await store.registered()).map((r) => ({ vpsId: r.vpsId, name: r.name, address: r.address, country: r.country }));
      return {
        groupExists: group !== undefined,
        lag,
        pending: Number(group?.get('pending') ?? 0),
        deadLetters: await redis.xlen(keys.deadLetters),
        registered,
      };
    }),
  );
}

/**
 * The Service the validating webhook calls, the pods it selects and the port it forwards to, with
 * the NetworkPolicies of its namespace: what decides who may open connections to the webhook.
 */
async function webhookNetwork(core: k8s.CoreV1Api, apps: k8s.AppsV1Api, networking: k8s.NetworkingV1Api, validating: WebhookConfiguration | undefined): Promise<WebhookNetwork | undefined> {
  const reference = validating?.webhooks?.find((w) => w.clientConfig?.service !== undefined)?.clientConfig?.service;
  if (reference === undefined) return undefined;
  const service = await optional(() => core.readNamespacedService({ name: reference.name, namespace: reference.namespace }));
  if (service === undefined) throw new Error(`Service ${reference.namespace}/${reference.name}, which the webhook configuration calls, does not exist`);
  const selector = service.spec?.selector ?? {};
  const servicePort = service.spec?.ports?.find((p) => p.port === (reference.port ?? 443));
  const target = servicePort?.targetPort ?? servicePort?.port ?? reference.port ?? 443;
  // The pods' own labels and port numbers come from the pod template of the Deployment the
  // Service selects: a NetworkPolicy may select on labels the Service does not, and name the
  // port by number where the Service names it.
  const template = (await apps.listNamespacedDeployment({ namespace: reference.namespace })).items.map((d) => d.spec?.template).find((t) => selects({ matchLabels: selector }, t?.metadata?.labels ?? {}));
  let targetPort: PodPort = typeof target === 'number' ? { number: target } : { name: target };
  const named = template?.spec?.containers.flatMap((c) => c.ports ?? []).find((p) => p.name === target);
  if (named !== undefined) targetPort = { name: named.name, number: named.containerPort };
  const policies = await listNetworkPolicies(networking, reference.namespace);
  return { service: `${reference.namespace}/${reference.name}`, podLabels: { ...selector, ...template?.metadata?.labels }, targetPort, policies };
}

/** client-node's model names an ingress rule's `from` `_from`; doctor reads the API's own field names. */
async function listNetworkPolicies(networking: k8s.NetworkingV1Api, namespace: string): Promise<NetworkPolicyObj[]> {
  const { items } = await networking.listNamespacedNetworkPolicy({ namespace });
  return items.map(
    (policy): NetworkPolicyObj => ({
      metadata: { name: policy.metadata?.name ?? '' },
      spec: { ...policy.spec, ingress: policy.spec?.ingress?.map(({ _from, ...rule }) => ({ ...rule, ...(_from === undefined ? {} : { from: _from }) })) },
    }),
  );
}

/** The addresses of the cluster's running pods; host-network pods share their node's address and are left out. */
async function podAddresses(core: k8s.CoreV1Api): Promise<PodAddress[]> {
  const pods = (await core.listPodForAllNamespaces({ fieldSelector: 'status.phase=Running' })).items;
  return pods.filter((p) => p.spec?.hostNetwork !== true).flatMap((p) => (p.status?.podIPs ?? []).map(({ ip }) => ({ pod: `${p.metadata?.namespace ?? ''}/${p.metadata?.name ?? ''}`, ip })));
}

export async function gatherClusterState(kubeConfig: k8s.KubeConfig, config: DoctorConfig, policy: Policy): Promise<ClusterState> {
  const core = makeApiClient(kubeConfig, k8s.CoreV1Api);
  const apps = makeApiClient(kubeConfig, k8s.AppsV1Api);
  const custom = makeApiClient(kubeConfig, k8s.CustomObjectsApi);
  const extensions = makeApiClient(kubeConfig, k8s.ApiextensionsV1Api);
  const admission = makeApiClient(kubeConfig, k8s.AdmissionregistrationV1Api);
  const networking = makeApiClient(kubeConfig, k8s.NetworkingV1Api);
  const ns = config.namespace;
  const istio = (plural: string) => custom.listNamespacedCustomObject({ group: 'networking.istio.io', version: config.istioApiVersion, namespace: ns, plural }) as Promise<{ items: Obj[] }>;
  const telemetry = config.telemetry;
  const selector = Object.entries(telemetry.selector).map(([k, v]) => `${k}=${v}`).join(',');

  const [crds, namespaceObject, serviceAccount, workloadGroups, serviceEntries, mutating, validating, gatewayPods, istioConfigMap, istiodEnv, managedEntries] = await Promise.all([
    read(async () => {
      const list = await extensions.listCustomResourceDefinition({});
      return Object.fromEntries(list.items.filter((c) => c.spec.group.endsWith('istio.io')).map((c) => [c.metadata?.name ?? '', c.spec.versions.filter((v) => v.served).map((v) => v.name)]));
    }),
    read(() => optional(() => core.readNamespace({ name: ns }) as Promise<Obj>)),
    read(() => optional(() => core.readNamespacedServiceAccount({ name: policy.serviceAccount, namespace: ns }) as Promise<Obj>)),
    read(async () => (await istio('workloadgroups')).items),
    read(async () => (await istio('serviceentries')).items),
    read(() => optional(() => admission.readMutatingWebhookConfiguration({ name: config.webhookName }) as Promise<WebhookConfiguration>)),
    read(() => optional(() => admission.readValidatingWebhookConfiguration({ name: config.webhookName }) as Promise<WebhookConfiguration>)),
    read(async () => (await core.listNamespacedPod({ namespace: telemetry.namespace, labelSelector: selector })).items as Obj[]),
    read(async () => (await optional(() => core.readNamespacedConfigMap({ name: 'istio', namespace: config.istiodNamespace })))?.data),
    read(async () => {
      const istiod = await optional(() => apps.readNamespacedDeployment({ name: 'istiod', namespace: config.istiodNamespace }));
      const env = istiod?.spec?.template.spec?.containers.find((c) => c.name === 'discovery')?.env ?? [];
      return istiod === undefined ? undefined : Object.fromEntries(env.filter((e) => e.value !== undefined).map((e) => [e.name, e.value ?? '']));
    }),
    read(async () => {
      const list = (await custom.listNamespacedCustomObject({ group: WORKLOAD_ENTRY_GROUP, version: config.istioApiVersion, namespace: ns, plural: WORKLOAD_ENTRY_PLURAL, labelSelector: MANAGED_SELECTOR })) as { items: Obj[] };
      return list.items.map((e) => ({ name: e.metadata?.name ?? '', address: e.spec?.address ?? '', vpsId: e.metadata?.annotations?.[VPS_ID_ANNOTATION] ?? '' }));
    }),
  ]);

  // Istio's ConfigMap: the mesh config (key mesh) and the mesh networks (key meshNetworks), both YAML.
  const { parse } = await import('yaml');
  const fromIstioConfigMap = <T>(key: string): Read<T | undefined> => {
    if (!istioConfigMap.ok) return istioConfigMap;
    const text = istioConfigMap.value?.[key];
    if (text === undefined) return { ok: true, value: undefined };
    try {
      return { ok: true, value: parse(text) as T };
    } catch (error) {
      return { ok: false, error: `ConfigMap istio, key ${key}: not YAML: ${(error as Error).message}` };
    }
  };
  const state: ClusterState = {
    namespace: ns,
    crds,
    namespaceObject,
    serviceAccount,
    workloadGroups,
    serviceEntries,
    webhooks: { mutating, validating },
    gatewayPods,
    meshConfig: fromIstioConfigMap<MeshConfig>('mesh'),
    meshNetworks: fromIstioConfigMap<MeshNetworks>('meshNetworks'),
    istiodEnv,
    managedEntries,
    redis: await redisState(config),
  };
  if (config.certSecret !== undefined) {
    const [secretNamespace = '', secretName = ''] = config.certSecret.split('/');
    state.servingCertificate = await read(async () => {
      const secret = await optional(() => core.readNamespacedSecret({ name: secretName, namespace: secretNamespace }));
      if (secret === undefined) return undefined;
      const cert = secret.data?.['tls.crt'];
      const ca = secret.data?.['ca.crt'];
      if (cert === undefined || ca === undefined) throw new Error(`Secret ${config.certSecret} has no tls.crt or ca.crt`);
      return { caBundle: ca, notAfter: new Date(new X509Certificate(Buffer.from(cert, 'base64')).validTo) };
    });
  }
  state.webhookNetwork = await read(() => webhookNetwork(core, apps, networking, validating.ok ? validating.value : undefined));
  state.podAddresses = await read(() => podAddresses(core));
  if (telemetry.enabled) {
    state.gatewayPolicies = await read(async () => listNetworkPolicies(networking, telemetry.namespace));
    state.telemetry = await read(() => optional(() => custom.getNamespacedCustomObject({ ...TELEMETRY_COORDINATES, namespace: telemetry.namespace, name: telemetry.name }) as Promise<StoredTelemetry>));
  }
  return state;
}
