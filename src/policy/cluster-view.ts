import type { Labels } from './types.ts';

/**
 * What the cluster-aware rules need to know about the namespace, answered from memory:
 * the webhook backs it with watched informer caches, the offline check with the files it
 * was given (and, with --kubeconfig, one list per resource). A method that returns
 * undefined cannot answer, and the rule that asked is reported as skipped.
 */
export interface ClusterView {
  /** Names of WorkloadEntries in the namespace whose canonical address is `address`. */
  entryNamesWithAddress(namespace: string, address: string): readonly string[] | undefined;
  /** Services in the namespace whose (non-empty) selector matches `labels`, by name. */
  servicesSelecting(namespace: string, labels: Labels): readonly { name: string; selector: Labels }[] | undefined;
  serviceAccountExists(namespace: string, name: string): boolean | undefined;
  /**
   * The leadership term a Lease in the namespace shows now (`<holderIdentity>@<leaseTransitions>`,
   * markers.ts), null when it does not exist or has no holder. Optional: views that do not
   * watch Leases (the offline check) leave it out.
   */
  leaseToken?(namespace: string, name: string): string | null | undefined;
}
