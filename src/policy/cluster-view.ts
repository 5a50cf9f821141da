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
   * The leadership term a Lease in the namespace shows now (`<holderIdentity>@<leaseTransitions>@<acquireTime>`,
   * markers.ts), null when it does not exist or has no holder. Optional: views that do not
   * watch Leases (the offline check) leave it out.
   */
  leaseToken?(namespace: string, name: string): string | null | undefined;
  /**
   * How long the Lease has gone without a change this view saw, when that is longer than the
   * Lease's own duration (undefined while it is fresher, or has no holder). A holder renews well
   * within its duration, so past it either the view's watch is broken or the holder stopped:
   * either way the term the view shows cannot be vouched for.
   */
  leaseStaleness?(namespace: string, name: string): { unseenMs: number; durationMs: number } | undefined;
}
