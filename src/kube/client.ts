/**
 * Where the cluster credentials come from: --kubeconfig, else AIRPORT_KUBECONFIG, else the
 * in-cluster ServiceAccount. The choice is made in src/config/; this only loads it. API clients
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

type Dispatcher = NonNullable<ReturnType<k8s.RequestContext['getDispatcher']>>;

/** One connection pool per kubeconfig, shared by every API client made from it. */
const connectionPools = new WeakMap<k8s.KubeConfig, Dispatcher>();

/**
 * The kubeconfig's authentication (headers: a token, read each time so a rotated token is
 * used), on one shared connection pool. client-node's own applySecurityAuthentication builds a
 * new undici Agent for every request, so every API call opened a new TLS connection with a
 * full handshake and left it to linger until that Agent was collected: per write a few ms of
 * CPU, and native memory that grew with the request rate (bench:memory saw the sync daemon
 * reach 420 MiB of RSS with 125 MiB of V8 heap during a 10,000-event backfill, and the kernel
 * kill it at the chart's 384 Mi limit). The first request's Agent becomes the pool; later
 * requests' Agents are never used, so they open nothing.
 */
function pooledAuthentication(kubeConfig: k8s.KubeConfig): k8s.SecurityAuthentication {
  return {
    getName: () => 'kubeconfig authentication, one connection pool',
    applySecurityAuthentication: async (context) => {
      await kubeConfig.applySecurityAuthentication(context);
      const pool = connectionPools.get(kubeConfig);
      if (pool !== undefined) context.setDispatcher(pool);
      else {
        const created = context.getDispatcher();
        if (created !== undefined) connectionPools.set(kubeConfig, created);
      }
    },
  };
}

/** What a request may take, end to end, unless the caller says otherwise. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;

type ApiType<T> = new (configuration: k8s.Configuration) => T;

/**
 * `kubeConfig.makeApiClient`, plus a per-request deadline (an AbortSignal the fetch honours
 * for the whole exchange, body included) and kept-alive connections (see above). A timed-out request rejects with a TimeoutError,
 * which callers treat like any other transient failure.
 */
export function makeApiClient<T>(kubeConfig: k8s.KubeConfig, api: ApiType<T>, timeoutMs = DEFAULT_REQUEST_TIMEOUT_MS): T {
  const cluster = kubeConfig.getCurrentCluster();
  if (cluster === null) throw new Error('the kubeconfig has no current cluster');
  const configuration = k8s.createConfiguration({
    baseServer: new k8s.ServerConfiguration(cluster.server, {}),
    authMethods: { default: pooledAuthentication(kubeConfig) },
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
