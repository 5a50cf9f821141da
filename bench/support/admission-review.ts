/**
 * A realistic AdmissionReview for the webhook benchmarks, shaped as the API server sends one
 * for `kubectl apply` of a WorkloadEntry: managedFields and the last-applied annotation
 * included, about 2 KB (3 KB with the old object of an UPDATE). The request's skeleton is the
 * tests' (test/fixtures/entries.ts).
 */
import { admissionRequest, admissionReview as fixtureReview } from '../../test/fixtures/entries.ts';

const object = {
  apiVersion: 'networking.istio.io/v1',
  kind: 'WorkloadEntry',
  metadata: {
    name: 'vps-jp-9999',
    namespace: 'airport-prod',
    uid: '6f1c0a52-8d1e-4e8e-9a43-3f0b2b8f9e11',
    resourceVersion: '184467',
    generation: 3,
    creationTimestamp: '2026-11-20T09:12:44Z',
    labels: { app: 'xrayr', country: 'jp' },
    annotations: {
      'kubectl.kubernetes.io/last-applied-configuration':
        '{"apiVersion":"networking.istio.io/v1","kind":"WorkloadEntry","metadata":{"annotations":{},"labels":{"app":"xrayr","country":"jp"},"name":"vps-jp-9999","namespace":"airport-prod"},"spec":{"address":"103.21.244.10","labels":{"app":"xrayr","country":"jp","version":"v1"},"serviceAccount":"xrayr-vm"}}\n',
    },
    managedFields: [
      {
        manager: 'kubectl-client-side-apply',
        operation: 'Update',
        apiVersion: 'networking.istio.io/v1',
        time: '2026-11-20T09:12:44Z',
        fieldsType: 'FieldsV1',
        fieldsV1: {
          'f:metadata': { 'f:annotations': { '.': {}, 'f:kubectl.kubernetes.io/last-applied-configuration': {} }, 'f:labels': { '.': {}, 'f:app': {}, 'f:country': {} } },
          'f:spec': { '.': {}, 'f:address': {}, 'f:labels': { '.': {}, 'f:app': {}, 'f:country': {}, 'f:version': {} }, 'f:serviceAccount': {} },
        },
      },
    ],
  },
  spec: { address: '103.21.244.10', labels: { app: 'xrayr', country: 'jp', version: 'v1' }, serviceAccount: 'xrayr-vm' },
};

export function admissionReview(uid: string, operation: 'CREATE' | 'UPDATE' = 'UPDATE'): string {
  const request = admissionRequest(operation, object, operation === 'UPDATE' ? { oldObject: object, user: { username: 'alice', groups: ['system:authenticated', 'developers'] } } : {});
  return JSON.stringify(
    fixtureReview({
      ...request,
      uid,
      requestKind: request.kind,
      requestResource: request.resource,
      dryRun: false,
      options: { apiVersion: 'meta.k8s.io/v1', kind: operation === 'UPDATE' ? 'UpdateOptions' : 'CreateOptions', fieldManager: 'kubectl-client-side-apply' },
    } as typeof request),
  );
}
