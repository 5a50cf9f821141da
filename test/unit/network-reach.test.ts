import { describe, expect, it } from 'vitest';
import { everyAddressBlock, ingressReach, podsInBlocks, type NetworkPolicyObj } from '../../src/doctor/network-reach.ts';

const WEBHOOK = { app: 'edge-registrar-webhook' };
const port8443 = (p: { port?: number | string }) => p.port === undefined || p.port === 8443 || p.port === 'https';
const PODS = [
  { pod: 'airport-prod/xboard-0', ip: '10.244.1.7' },
  { pod: 'monitoring/prometheus-0', ip: '10.244.3.9' },
  { pod: 'airport-prod/xboard-v6', ip: 'fd00:10:244::7' },
];

describe('ingressReach: who a pod admits on a port, as Kubernetes evaluates NetworkPolicies', () => {
  it.each<[string, NetworkPolicyObj[], string]>([
    ['no policy selects the pod', [{ spec: { podSelector: { matchLabels: { app: 'other' } }, ingress: [] } }], 'anyone'],
    ['an egress-only policy does not isolate ingress', [{ spec: { podSelector: {}, policyTypes: ['Egress'] } }], 'anyone'],
    ['a policy with no ingress rules admits nothing', [{ spec: { podSelector: {} } }], 'limited'],
    ['a rule for another port does not open this one', [{ spec: { podSelector: {}, ingress: [{ ports: [{ port: 9090 }] }] } }], 'limited'],
    ['a rule naming the port by name opens it', [{ spec: { podSelector: {}, ingress: [{ ports: [{ port: 'https' }] }] } }], 'anyone'],
    ['every pod of every namespace', [{ spec: { podSelector: {}, ingress: [{ from: [{ namespaceSelector: {} }] }] } }], 'anyone'],
    ['pods of one namespace', [{ spec: { podSelector: {}, ingress: [{ from: [{ namespaceSelector: { matchLabels: { name: 'monitoring' } } }] }] } }], 'limited'],
    ['matchExpressions NotIn selects pods without the value', [{ spec: { podSelector: { matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['x'] }] } } }], 'limited'],
    ['matchExpressions In that misses does not select', [{ spec: { podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: ['x'] }] } } }], 'anyone'],
  ])('%s', (_name, policies, kind) => {
    expect(ingressReach(policies, WEBHOOK, port8443).kind).toBe(kind);
  });

  it('unions the rules of every isolating policy, and says which rule opened the port', () => {
    const reach = ingressReach(
      [
        { metadata: { name: 'a' }, spec: { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '172.18.0.2/32' } }] }] } },
        { metadata: { name: 'b' }, spec: { podSelector: {}, ingress: [{ ports: [{ port: 8443 }] }] } },
      ],
      WEBHOOK,
      port8443,
    );
    expect(reach).toEqual({ kind: 'anyone', why: 'NetworkPolicy b has a rule with no from' });
  });
});

describe('everyAddressBlock: a /0 with no exceptions', () => {
  it('is found in a policy that admits it, and not in one that excepts the pod network', () => {
    const open = ingressReach([{ metadata: { name: 'p' }, spec: { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8' } }, { ipBlock: { cidr: '0.0.0.0/0' } }] }] } }], WEBHOOK, port8443);
    expect(everyAddressBlock(open)).toEqual({ cidr: '0.0.0.0/0', except: [], policy: 'p' });
    const closed = ingressReach([{ metadata: { name: 'p' }, spec: { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '0.0.0.0/0', except: ['10.244.0.0/16'] } }] }] } }], WEBHOOK, port8443);
    expect(everyAddressBlock(closed)).toBeUndefined();
  });
});

describe('podsInBlocks: the pods whose addresses an admitted block holds', () => {
  const limited = (blocks: { cidr: string; except: string[] }[]) => ({ kind: 'limited' as const, blocks: blocks.map((b) => ({ ...b, policy: 'p' })), selectors: 0 });

  it.each<[string, { cidr: string; except: string[] }[], string[]]>([
    ["the API server's /32", [{ cidr: '172.18.0.2/32', except: [] }], []],
    ['an IPv6 /0 in an IPv4 cluster holds no pod but the IPv6 one', [{ cidr: '::/0', except: [] }], ['airport-prod/xboard-v6']],
    ['a VPC-wide block holds the pods', [{ cidr: '10.0.0.0/8', except: [] }], ['airport-prod/xboard-0', 'monitoring/prometheus-0']],
    ['everything except the pod network', [{ cidr: '0.0.0.0/0', except: ['10.244.0.0/16'] }], []],
    ['an IPv6 block holds the IPv6 pod only', [{ cidr: 'fd00:10:244::/64', except: [] }], ['airport-prod/xboard-v6']],
    ['an exception that misses part of the pod network', [{ cidr: '10.0.0.0/8', except: ['10.244.1.0/24'] }], ['monitoring/prometheus-0']],
  ])('%s', (_name, blocks, pods) => {
    expect(podsInBlocks(limited(blocks), PODS)).toEqual(pods);
  });
});
