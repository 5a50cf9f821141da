/**
 * Who may open connections to a pod's port under the NetworkPolicies of its namespace, judged
 * the way Kubernetes evaluates them: a pod is isolated for ingress once any policy selecting it
 * lists Ingress, and then admits the union of those policies' rules. Pure: doctor reads the
 * policies and the cluster's pod addresses, this says which of those pods get through.
 */
import type ipaddr from 'ipaddr.js';
import { cidrContains, parseAddress } from '../policy/address.ts';

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: string; values?: string[] }[];
}

export interface NetworkPeer {
  ipBlock?: { cidr: string; except?: string[] };
  namespaceSelector?: LabelSelector;
  podSelector?: LabelSelector;
}

/** What doctor reads of a NetworkPolicy. */
export interface NetworkPolicyObj {
  metadata?: { name?: string };
  spec?: {
    podSelector?: LabelSelector;
    policyTypes?: string[];
    ingress?: { ports?: PolicyPort[]; from?: NetworkPeer[] }[];
  };
}

export interface PolicyPort {
  port?: number | string;
  protocol?: string;
}

/** A pod of the cluster with its own address (not a host-network pod, whose address is its node's). */
export interface PodAddress {
  /** namespace/name */
  pod: string;
  ip: string;
}

export type Reach =
  /** No policy isolates the pod, or a rule admits every source. */
  | { kind: 'anyone'; why: string }
  /** Only the address blocks and selectors of these rules. */
  | { kind: 'limited'; blocks: AddressBlock[]; selectors: number };

export interface AddressBlock {
  cidr: string;
  except: string[];
  /** The NetworkPolicy the block is in. */
  policy: string;
}

/** Whether a label selector selects an object with `labels` (matchLabels and matchExpressions). */
export function selects(selector: LabelSelector | undefined, labels: Record<string, string>): boolean {
  for (const [key, value] of Object.entries(selector?.matchLabels ?? {})) if (labels[key] !== value) return false;
  for (const { key, operator, values = [] } of selector?.matchExpressions ?? []) {
    const has = key in labels;
    const ok = operator === 'In' ? has && values.includes(labels[key] ?? '') : operator === 'NotIn' ? !has || !values.includes(labels[key] ?? '') : operator === 'Exists' ? has : operator === 'DoesNotExist' ? !has : false;
    if (!ok) return false;
  }
  return true;
}

const isEmptySelector = (selector: LabelSelector | undefined): boolean => selector !== undefined && Object.keys(selector.matchLabels ?? {}).length === 0 && (selector.matchExpressions ?? []).length === 0;

/**
 * Who the policies admit to the ports `portMatches` accepts on a pod with `labels`. A rule with
 * no ports covers every port; a rule with no `from` admits every source, as does an empty
 * namespaceSelector with no (or an empty) podSelector. Address blocks are kept as they are:
 * which pods they hold depends on the cluster's addresses (podsInBlocks), and a /0 of a family
 * the cluster does not use holds none.
 */
export function ingressReach(policies: readonly NetworkPolicyObj[], labels: Record<string, string>, portMatches: (port: PolicyPort) => boolean): Reach {
  const isolating = policies.filter((p) => selects(p.spec?.podSelector, labels) && (p.spec?.policyTypes ?? ['Ingress']).includes('Ingress'));
  if (isolating.length === 0) return { kind: 'anyone', why: 'no NetworkPolicy isolates it' };
  const blocks: AddressBlock[] = [];
  let selectors = 0;
  for (const policy of isolating) {
    const name = policy.metadata?.name ?? '?';
    for (const rule of policy.spec?.ingress ?? []) {
      const ports = rule.ports ?? [];
      if (ports.length > 0 && !ports.some(portMatches)) continue;
      const from = rule.from ?? [];
      if (from.length === 0) return { kind: 'anyone', why: `NetworkPolicy ${name} has a rule with no from` };
      for (const peer of from) {
        if (peer.ipBlock !== undefined) {
          blocks.push({ cidr: peer.ipBlock.cidr, except: peer.ipBlock.except ?? [], policy: name });
        } else if (isEmptySelector(peer.namespaceSelector) && (peer.podSelector === undefined || isEmptySelector(peer.podSelector))) {
          return { kind: 'anyone', why: `NetworkPolicy ${name} admits every pod of every namespace` };
        } else {
          selectors += 1;
        }
      }
    }
  }
  return { kind: 'limited', blocks, selectors };
}

function contains(cidr: string, ip: ipaddr.IPv4 | ipaddr.IPv6): boolean {
  try {
    return cidrContains(cidr, ip);
  } catch {
    return false; // not a CIDR: the API server validates ipBlocks, so only a hand-made state gets here
  }
}

/** The pods whose address an address block of `reach` admits (inside the block, outside its exceptions). */
export function podsInBlocks(reach: Reach, pods: readonly PodAddress[]): string[] {
  if (reach.kind === 'anyone') return pods.map((p) => p.pod);
  return pods
    .filter(({ ip }) => {
      const parsed = parseAddress(ip);
      if (!parsed.ok) return false;
      const address = parsed.ip;
      return reach.blocks.some((block) => contains(block.cidr, address) && !block.except.some((e) => contains(e, address)));
    })
    .map((p) => p.pod);
}

/** An address block of /0 with no exceptions: every address of its family, whatever the cluster's pods. */
export function everyAddressBlock(reach: Reach): AddressBlock | undefined {
  return reach.kind === 'limited' ? reach.blocks.find((b) => /\/0$/.test(b.cidr) && b.except.length === 0) : undefined;
}
