/**
 * API clients keep their connections: every call through makeApiClient shares one pool per
 * kubeconfig (client-node alone opens a new TLS connection for every request). Counted at a
 * TCP proxy in front of the real API server.
 */
import * as k8s from '@kubernetes/client-node';
import { expect, inject, it } from 'vitest';
import { loadKubeConfig, makeApiClient } from '../../src/kube/client.ts';
import { kubeconfigFor } from '../harness/kube-cluster.ts';
import { kubeconfigThroughProxy } from '../harness/tcp-proxy.ts';

it('100 API calls from two clients of one kubeconfig use one kept-alive connection, not 100', async () => {
  const { kubeconfig, proxy } = await kubeconfigThroughProxy(kubeconfigFor(inject('cluster'), 'admin'));
  try {
    const kc = loadKubeConfig(kubeconfig);
    const core = makeApiClient(kc, k8s.CoreV1Api);
    const custom = makeApiClient(kc, k8s.CustomObjectsApi);
    for (let i = 0; i < 50; i++) {
      await core.readNamespace({ name: 'airport-prod' });
      await custom.listNamespacedCustomObject({ group: 'networking.istio.io', version: 'v1', namespace: 'airport-prod', plural: 'workloadentries' });
    }
    expect(proxy.accepted).toBe(1);
  } finally {
    await proxy.stop();
  }
});
