import { describe, expect, it } from 'vitest';
import { evaluateEntry } from '../../src/policy/evaluate.ts';
import { DEFAULT_POLICY, parsePolicy, type Policy } from '../../src/policy/policy-file.ts';
import { ClusterIndex } from '../../src/kube/cluster-index.ts';
import type { RuleId } from '../../src/policy/types.ts';
import { NAMESPACE, completeEntry } from '../fixtures/entries.ts';

type Mutator = (entry: Record<string, any>) => void;

function clusterWith(setup: (index: ClusterIndex) => void = () => undefined): ClusterIndex {
  const index = new ClusterIndex(NAMESPACE);
  index.replace('WorkloadEntry', NAMESPACE, []);
  index.replace('Service', NAMESPACE, []);
  index.replace('ServiceAccount', NAMESPACE, [{ metadata: { name: 'xrayr-vm', namespace: NAMESPACE } }]);
  setup(index);
  return index;
}

function evaluate(mutate: Mutator, options: { policy?: Policy; view?: ClusterIndex } = {}) {
  const entry = completeEntry();
  mutate(entry);
  return evaluateEntry(entry, { policy: options.policy ?? DEFAULT_POLICY, namespace: NAMESPACE, view: options.view ?? clusterWith() });
}

function rulesOf(mutate: Mutator, options: { policy?: Policy; view?: ClusterIndex } = {}): RuleId[] {
  return evaluate(mutate, options).violations.map((v) => v.rule);
}

describe('a complete sample entry', () => {
  it('passes with no violations, warnings or skipped rules', () => {
    const verdict = evaluate(() => undefined);
    expect(verdict).toEqual({ violations: [], warnings: [], skipped: [] });
  });

  it.each(['networking.istio.io/v1', 'networking.istio.io/v1beta1', 'networking.istio.io/v1alpha3'])('passes as %s', (apiVersion) => {
    expect(rulesOf((e) => (e.apiVersion = apiVersion))).toEqual([]);
  });

  it('passes with an IPv6 address', () => {
    expect(rulesOf((e) => (e.spec.address = '2606:4700::1111'))).toEqual([]);
  });
});

describe('each rule, rejected and accepted', () => {
  const cases: [string, Mutator, RuleId[]][] = [
    ['missing address', (e) => delete e.spec.address, ['address.required']],
    ['empty address', (e) => (e.spec.address = ''), ['address.required']],
    ['hostname address', (e) => (e.spec.address = 'vps-jp-01.example.com'), ['address.ip-literal']],
    ['address with port', (e) => (e.spec.address = '103.21.244.10:443'), ['address.ip-literal']],
    ['unix socket address', (e) => (e.spec.address = 'unix:///var/run/xrayr.sock'), ['address.ip-literal']],
    ['private address', (e) => (e.spec.address = '10.0.0.5'), ['address.public-unicast']],
    ['CGNAT address', (e) => (e.spec.address = '100.64.3.4'), ['address.public-unicast']],
    ['benchmarking address', (e) => (e.spec.address = '198.18.1.1'), ['address.public-unicast']],
    ['ULA address', (e) => (e.spec.address = 'fd00::1'), ['address.public-unicast']],
    ['mapped private address', (e) => (e.spec.address = '::ffff:192.168.1.1'), ['address.public-unicast']],
    ['address of wrong type', (e) => (e.spec.address = 42), ['schema']],
    ['metadata label with bad key', (e) => (e.metadata.labels['bad key'] = 'x'), ['labels.syntax']],
    ['spec label with bad value', (e) => (e.spec.labels.tier = 'not ok!'), ['labels.syntax']],
    ['label value too long', (e) => (e.spec.labels.tier = 'x'.repeat(64)), ['labels.syntax']],
    ['label key with bad prefix', (e) => (e.spec.labels['Example.COM/tier'] = 'a'), ['labels.syntax']],
    ['label value not a string', (e) => (e.spec.labels.tier = 3), ['schema']],
    ['metadata and spec disagree', (e) => (e.metadata.labels.app = 'other'), ['labels.conflict', 'labels.app']],
    ['wrong app', (e) => ((e.metadata.labels.app = 'nginx'), (e.spec.labels.app = 'nginx')), ['labels.app']],
    ['missing app', (e) => (delete e.metadata.labels.app, delete e.spec.labels.app), ['labels.required']],
    ['missing country', (e) => (delete e.metadata.labels.country, delete e.spec.labels.country), ['labels.required']],
    ['upper-case country', (e) => ((e.metadata.labels.country = 'JP'), (e.spec.labels.country = 'JP')), ['labels.country', 'name.pattern']],
    ['not a country', (e) => ((e.metadata.labels.country = 'xx'), (e.spec.labels.country = 'xx')), ['labels.country', 'name.pattern']],
    ['uk is not ISO', (e) => ((e.metadata.name = 'vps-uk-01'), (e.metadata.labels.country = 'uk'), (e.spec.labels.country = 'uk')), ['labels.country']],
    ['name off pattern', (e) => (e.metadata.name = 'jp-node-1'), ['name.pattern']],
    ['name disagrees with country', (e) => (e.metadata.name = 'vps-hk-01'), ['name.pattern']],
    ['Istio-reserved label', (e) => (e.spec.labels['topology.istio.io/network'] = 'external'), ['labels.istio-reserved']],
    ['istio.io label', (e) => (e.metadata.labels['istio.io/rev'] = 'canary'), ['labels.istio-reserved']],
    ['tlsMode missing', (e) => delete e.spec.labels['security.istio.io/tlsMode'], ['labels.tls-mode']],
    ['tlsMode istio', (e) => (e.spec.labels['security.istio.io/tlsMode'] = 'istio'), ['labels.tls-mode']],
    ['wrong serviceAccount', (e) => (e.spec.serviceAccount = 'default'), ['serviceAccount.value']],
    ['missing serviceAccount', (e) => delete e.spec.serviceAccount, ['serviceAccount.value']],
    ['ports', (e) => (e.spec.ports = { http: 8080 }), ['ports.forbidden']],
    ['weight 0', (e) => (e.spec.weight = 0), ['weight.zero']],
    ['negative weight', (e) => (e.spec.weight = -1), ['schema']],
    ['network not allowed', (e) => (e.spec.network = 'external'), ['network.allowed']],
    ['spec missing', (e) => delete e.spec, ['schema']],
  ];
  it.each(cases)('%s', (_name, mutate, expected) => {
    expect(rulesOf(mutate)).toEqual(expected);
  });

  const accepted: [string, Mutator][] = [
    ['empty ports map', (e) => (e.spec.ports = {})],
    ['positive weight', (e) => (e.spec.weight = 5)],
    ['locality', (e) => (e.spec.locality = 'ap-northeast-1/ap-northeast-1a')],
    ['extra valid label', (e) => (e.spec.labels['example.com/tier'] = 'gold')],
    ['empty label value', (e) => (e.spec.labels.note = '')],
    ['labels only in metadata', (e) => ((e.spec.labels = { 'security.istio.io/tlsMode': 'disabled', version: 'v1' }), (e.metadata.labels['service.istio.io/canonical-name'] = 'xrayr'), (e.metadata.labels['service.istio.io/canonical-revision'] = 'v1'))],
    ['generateName instead of name', (e) => (delete e.metadata.name, (e.metadata.generateName = 'vps-jp-'))],
  ];
  it.each(accepted)('accepts %s', (_name, mutate) => {
    expect(rulesOf(mutate)).toEqual([]);
  });
});

describe('violations say what, where, the value and what would be accepted', () => {
  it('private address', () => {
    const [v] = evaluate((e) => (e.spec.address = '10.0.0.5')).violations;
    expect(v).toMatchObject({ rule: 'address.public-unicast', path: 'spec.address', value: '10.0.0.5' });
    expect(v?.problem).toContain('10.0.0.0/8');
    expect(v?.expected).toContain('public unicast');
  });

  it('country names the label path and hints at the right code', () => {
    const [v] = evaluate((e) => ((e.metadata.name = 'vps-uk-01'), (e.metadata.labels.country = 'uk'), (e.spec.labels.country = 'uk'))).violations;
    expect(v).toMatchObject({ rule: 'labels.country', path: 'spec.labels["country"]', value: 'uk' });
    expect(v?.problem).toContain('"gb"');
  });
});

describe('soft findings are warnings', () => {
  it('no version label', () => {
    const verdict = evaluate((e) => delete e.spec.labels.version);
    expect(verdict.violations).toEqual([]);
    expect(verdict.warnings.map((w) => w.rule)).toContain('labels.version');
  });

  it('a non-canonical address', () => {
    const verdict = evaluate((e) => (e.spec.address = '2606:4700:0:0:0:0:0:1111'));
    expect(verdict.violations).toEqual([]);
    expect(verdict.warnings).toContainEqual(expect.objectContaining({ rule: 'address.canonical', message: expect.stringContaining('2606:4700::1111') }));
  });
});

describe('cluster rules', () => {
  it('the same address in another IPv6 spelling is a duplicate', () => {
    const view = clusterWith((i) => i.upsert('WorkloadEntry', { metadata: { name: 'vps-jp-02', namespace: NAMESPACE }, spec: { address: '2606:4700:0:0::1111' } }));
    const verdict = evaluate((e) => (e.spec.address = '2606:4700::1111'), { view });
    expect(verdict.violations).toEqual([expect.objectContaining({ rule: 'address.unique', problem: expect.stringContaining('airport-prod/vps-jp-02') })]);
  });

  it('an IPv4-mapped spelling is a duplicate of the IPv4', () => {
    const view = clusterWith((i) => i.upsert('WorkloadEntry', { metadata: { name: 'vps-jp-02' }, spec: { address: '103.21.244.10' } }));
    expect(rulesOf((e) => (e.spec.address = '::ffff:103.21.244.10'), { view })).toEqual(['address.unique']);
  });

  it('the entry itself (an update) is not its own duplicate', () => {
    const view = clusterWith((i) => i.upsert('WorkloadEntry', { metadata: { name: 'vps-jp-01' }, spec: { address: '103.21.244.10' } }));
    expect(rulesOf(() => undefined, { view })).toEqual([]);
  });

  it('a Service whose selector matches the labels', () => {
    const view = clusterWith((i) => i.upsert('Service', { metadata: { name: 'xboard-probe' }, spec: { selector: { app: 'xrayr' } } }));
    const [v] = evaluate(() => undefined, { view }).violations;
    expect(v?.rule).toBe('labels.service-selected');
    expect(v?.problem).toContain('Service airport-prod/xboard-probe (selector app=xrayr)');
  });

  it('Services that do not match, or select nothing, are fine', () => {
    const view = clusterWith((i) => {
      i.upsert('Service', { metadata: { name: 'xboard' }, spec: { selector: { app: 'xboard' } } });
      i.upsert('Service', { metadata: { name: 'partial' }, spec: { selector: { app: 'xrayr', country: 'hk' } } });
      i.upsert('Service', { metadata: { name: 'headless-external' }, spec: {} });
    });
    expect(rulesOf(() => undefined, { view })).toEqual([]);
  });

  it('the serviceAccount must exist', () => {
    const view = new ClusterIndex(NAMESPACE);
    view.replace('WorkloadEntry', NAMESPACE, []);
    view.replace('Service', NAMESPACE, []);
    view.replace('ServiceAccount', NAMESPACE, []);
    expect(rulesOf(() => undefined, { view })).toEqual(['serviceAccount.exists']);
  });

  it('without cluster state the cluster rules are skipped, not passed', () => {
    const verdict = evaluateEntry(completeEntry(), { policy: DEFAULT_POLICY, namespace: NAMESPACE });
    expect(verdict.violations).toEqual([]);
    expect(verdict.skipped.map((s) => s.rule).sort()).toEqual(['address.unique', 'labels.service-selected', 'serviceAccount.exists']);
  });
});

describe('the policy is data', () => {
  const policy = parsePolicy(
    `
app: edge-node
serviceAccount: edge-vm
requiredLabels: [app, country, region]
namePattern: '^edge-(?<country>[a-z]{2})-[0-9]{3}$'
address:
  allowCidrs: [103.21.244.0/22]
  denyCidrs: [103.21.245.0/24]
ports: { allowed: true }
networks: [external]
`,
    'test.yaml',
  );
  const view = clusterWith((i) => i.upsert('ServiceAccount', { metadata: { name: 'edge-vm', namespace: NAMESPACE } }));
  const edgeEntry: Mutator = (e) => {
    e.metadata.name = 'edge-jp-004';
    e.metadata.labels.app = 'edge-node';
    e.spec.labels.app = 'edge-node';
    e.spec.labels.region = 'apac';
    e.spec.serviceAccount = 'edge-vm';
  };

  it('accepts what it allows', () => {
    expect(rulesOf((e) => (edgeEntry(e), (e.spec.ports = { http: 8080 }), (e.spec.network = 'external')), { policy, view })).toEqual([]);
  });

  it('enforces its CIDR lists, required labels and pattern', () => {
    expect(rulesOf((e) => (edgeEntry(e), (e.spec.address = '8.8.8.8')), { policy, view })).toEqual(['address.allowed-cidrs']);
    expect(rulesOf((e) => (edgeEntry(e), (e.spec.address = '103.21.245.9')), { policy, view })).toEqual(['address.denied-cidrs']);
    expect(rulesOf((e) => (edgeEntry(e), delete e.spec.labels.region), { policy, view })).toEqual(['labels.required']);
    expect(rulesOf((e) => (edgeEntry(e), (e.metadata.name = 'vps-jp-01')), { policy, view })).toEqual(['name.pattern']);
  });

  it('rejects a bad policy file with the field, value and rule', () => {
    expect(() => parsePolicy('address:\n  allowCidrs: [10.0.0.0/33]\n', 'p.yaml')).toThrow(/p.yaml: invalid policy: address.allowCidrs\[0\]: must be a CIDR.*got "10.0.0.0\/33"/);
    expect(() => parsePolicy('namePattern: "("\n', 'p.yaml')).toThrow(/namePattern: must be an RE2 regular expression.*missing closing \)/);
    expect(() => parsePolicy('colour: blue\n', 'p.yaml')).toThrow(/colour/);
    expect(() => parsePolicy('app: [\n', 'p.yaml')).toThrow(/not valid YAML/);
  });

  it('refuses a name pattern that cannot match in linear time, naming why', () => {
    expect(() => parsePolicy('namePattern: "^(vps)-\\\\1$"\n', 'p.yaml')).toThrow(/namePattern: must be an RE2 regular expression, which matches in linear time.*invalid escape sequence: `\\1`/);
    expect(() => parsePolicy('namePattern: "^vps-(?=[a-z])"\n', 'p.yaml')).toThrow(/namePattern: .*unsupported Perl syntax: `\(\?=`/);
  });

  // Under JavaScript's backtracking RegExp this name takes 2^40 steps against ^(a+)+$ and the
  // test times out; RE2 answers in time linear in the name.
  it('matches a nested-quantifier pattern against a long name in linear time', () => {
    const nested = parsePolicy("namePattern: '^(a+)+$'\n", 'p.yaml');
    const name = `${'a'.repeat(40)}!`;
    expect(rulesOf((e) => (e.metadata.name = name), { policy: nested, view: clusterWith(() => undefined) })).toContain('name.pattern');
  });

  it('an empty file is the defaults', () => {
    expect(parsePolicy('', 'empty.yaml')).toEqual(DEFAULT_POLICY);
  });
});

describe('suggestions a user can take as given', () => {
  it('suggests a name the pattern accepts for an upper-case country label (vps-jp-, not vps-JP-)', () => {
    const nameFinding = evaluate((e) => ((e.metadata.labels.country = 'JP'), (e.spec.labels.country = 'JP'))).violations.find((v) => v.rule === 'name.pattern');
    expect(nameFinding?.expected).toBe('a name starting "vps-jp-" or country label "jp"');
  });
});
