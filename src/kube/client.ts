/**
 * Where the cluster credentials come from: --kubeconfig, else AIRPORT_KUBECONFIG, else the
 * in-cluster ServiceAccount. The choice is made in config.ts; this only loads it.
 */
import * as k8s from '@kubernetes/client-node';

export function loadKubeConfig(kubeconfigPath: string | undefined): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  if (kubeconfigPath !== undefined) kc.loadFromFile(kubeconfigPath);
  else kc.loadFromCluster();
  return kc;
}

export const WORKLOAD_ENTRY_GROUP = 'networking.istio.io';
export const WORKLOAD_ENTRY_PLURAL = 'workloadentries';
