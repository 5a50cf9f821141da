/**
 * Where the cluster credentials come from: --kubeconfig, else AIRPORT_KUBECONFIG, else the
 * in-cluster ServiceAccount. The choice is made in config.ts; this only loads it. API clients
 * are built here with a deadline on every request: client-node sets none, and a request the
 * API server never answers would otherwise hold its caller (a Lease renewal, a write) forever.
 */
import * as k8s from '@kubernetes/client-node';

export function loadKubeConfig(kubeconfigPath: string | undefined): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  if (kubeconfigPath !== undefined) kc.loadFromFile(kubeconfigPath);
  else kc.loadFromCluster();
  return kc;
}

/** What a request may take, end to end, unless the caller says otherwise. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;

type ApiType<T> = new (configuration: k8s.Configuration) => T;

/**
 * `kubeConfig.makeApiClient`, plus a per-request deadline (an AbortSignal the fetch honours
 * for the whole exchange, body included). A timed-out request rejects with a TimeoutError,
 * which callers treat like any other transient failure.
 */
export function makeApiClient<T>(kubeConfig: k8s.KubeConfig, api: ApiType<T>, timeoutMs = DEFAULT_REQUEST_TIMEOUT_MS): T {
  const cluster = kubeConfig.getCurrentCluster();
  if (cluster === null) throw new Error('the kubeconfig has no current cluster');
  const configuration = k8s.createConfiguration({
    baseServer: new k8s.ServerConfiguration(cluster.server, {}),
    authMethods: { default: kubeConfig },
    promiseMiddleware: [
      {
        pre: (context) => {
          context.setHeaderParam('User-Agent', 'edge-registrar');
          context.setSignal(AbortSignal.timeout(timeoutMs));
          return Promise.resolve(context);
        },
        post: (response) => Promise.resolve(response),
      },
    ],
  });
  return new api(configuration);
}

export const WORKLOAD_ENTRY_GROUP = 'networking.istio.io';
export const WORKLOAD_ENTRY_PLURAL = 'workloadentries';
