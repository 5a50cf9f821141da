/**
 * charts/edge-registrar with the real helm CLI (built from its Go module): lint, template in
 * every certificate mode, the values schema, and fullnameOverride. No cluster needed here;
 * helm-install.test.ts installs it into a real API server.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { CHART, TEST_IMAGE, TEST_VALUES, helm, render, type K8sObject } from './helm-support.ts';

const WEBHOOK_CONFIG = fileURLToPath(new URL('../../webhook-config/', import.meta.url));

const find = (objects: K8sObject[], kind: string, name?: string): K8sObject => {
  const found = objects.find((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  if (found === undefined) throw new Error(`no ${kind} ${name ?? ''} in the rendered chart`);
  return found;
};
const container = (objects: K8sObject[], deployment: string): any => find(objects, 'Deployment', deployment).spec.template.spec.containers[0];
const env = (c: any): Record<string, unknown> => Object.fromEntries(c.env.map((e: any) => [e.name, e.value ?? e.valueFrom]));

describe('what the chart refuses to render', () => {
  // The default image was a name a cluster would pull from a public registry that has none:
  // the pods sat in ImagePullBackOff behind webhooks with failurePolicy Fail.
  it('no image named: refused, saying what to set and why', async () => {
    const res = await helm(['template', 'edge-registrar', CHART]);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain("image.repository: name the image you built from the repository's Dockerfile and pushed");
  });

  // networkPolicy.apiServerCIDRs defaulted to [], which admitted any source to the webhook's
  // port: any pod could hold its connections and memory, and with failurePolicy Fail take every
  // WorkloadEntry write of the namespace down.
  it("nothing says who may reach the webhook: refused, naming the three ways to say it", async () => {
    const res = await helm(['template', 'edge-registrar', CHART, '--set', TEST_IMAGE]);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain("networkPolicy: nothing says who may reach the webhook's port, so it would be open to every pod");
    expect(res.stderr).toContain('networkPolicy.apiServerCIDRs');
    expect(res.stderr).toContain('networkPolicy.apiServerFromEndpoints=true');
    expect(res.stderr).toContain('networkPolicy.allowAnySourceToWebhook=true');
    // Endpoints asked for, but helm template cannot look them up: said so.
    const noLookup = await helm(['template', 'edge-registrar', CHART, '--set', TEST_IMAGE, '--set', 'networkPolicy.apiServerFromEndpoints=true']);
    expect(noLookup.stderr).toContain('none were found: helm template cannot look them up');
  });

  it('the webhook port admits exactly the CIDRs given, and the webhook trusts them; or every source when that is said explicitly', async () => {
    const webhookPolicy = (objects: K8sObject[]): any => find(objects, 'NetworkPolicy', 'edge-registrar-webhook').spec.ingress[0];
    const given = await render(['networkPolicy.apiServerCIDRs={172.16.0.0/28,fd00:1::/64}']);
    expect(webhookPolicy(given)).toEqual({ ports: [{ port: 8443, protocol: 'TCP' }], from: [{ ipBlock: { cidr: '172.16.0.0/28' } }, { ipBlock: { cidr: 'fd00:1::/64' } }] });
    // The webhook trusts the same addresses (more connections, kept alive), and nobody else.
    const webhookEnv = (objects: K8sObject[]) => (find(objects, 'Deployment', 'edge-registrar-webhook').spec.template.spec.containers[0].env as { name: string; value?: string }[]).find((e) => e.name === 'EDGE_REGISTRAR_API_SERVER_CIDRS')?.value;
    expect(webhookEnv(given)).toBe('172.16.0.0/28,fd00:1::/64');
    const open = await render(['networkPolicy.apiServerCIDRs=null', 'networkPolicy.allowAnySourceToWebhook=true']);
    expect(webhookPolicy(open)).toEqual({ ports: [{ port: 8443, protocol: 'TCP' }] });
    expect(webhookEnv(open)).toBeUndefined();
  });

  it('a name pattern RE2 cannot compile: refused with the field and RE2\'s reason', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'edge-registrar-values-'));
    const values = join(dir, 'values.yaml');
    await writeFile(values, 'policy:\n  namePattern: "^(vps)-\\\\1$"\n');
    const res = await helm(['template', 'edge-registrar', CHART, '--set', TEST_VALUES, '-f', values]);
    await rm(dir, { recursive: true, force: true });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('executing "policy.namePattern must be an RE2 regular expression"');
    expect(res.stderr).toContain('error parsing regexp: invalid escape sequence: `\\1`');
  });
});

describe('helm lint and template', () => {
  it('helm lint --strict passes', async () => {
    const res = await helm(['lint', '--strict', CHART, '--set', TEST_VALUES]);
    expect(res.stderr + res.stdout).toContain('0 chart(s) failed');
    expect(res.code).toBe(0);
  });

  it('default values: both Deployments, Services, PDB, RBAC, the mesh Istio objects, standard labels', async () => {
    const objects = await render();
    const kinds = objects.map((o) => `${o.kind}/${o.metadata.name}`).sort();
    expect(kinds).toEqual(
      expect.arrayContaining([
        'Deployment/edge-registrar-webhook',
        'Deployment/edge-registrar-sync',
        'Service/edge-registrar-webhook',
        'Service/edge-registrar-sync',
        'PodDisruptionBudget/edge-registrar-webhook',
        'MutatingWebhookConfiguration/edge-registrar',
        'ValidatingWebhookConfiguration/edge-registrar',
        'ServiceAccount/xrayr-vm',
        'WorkloadGroup/xrayr',
        'ServiceEntry/xrayr-nodes',
        'NetworkPolicy/edge-registrar-webhook',
        'ConfigMap/edge-registrar-policy',
      ]),
    );
    for (const o of objects) {
      expect(o.metadata.labels, `${o.kind}/${o.metadata.name}`).toMatchObject({ 'app.kubernetes.io/name': 'edge-registrar', 'app.kubernetes.io/instance': 'edge-registrar', 'app.kubernetes.io/managed-by': 'Helm' });
    }
    const webhook = find(objects, 'Deployment', 'edge-registrar-webhook');
    expect(webhook.spec.replicas).toBe(2);
    expect(webhook.spec.template.spec.affinity.podAntiAffinity).toBeDefined();
    const c = container(objects, 'edge-registrar-webhook');
    expect(c.readinessProbe.httpGet.path).toBe('/readyz');
    expect(c.livenessProbe.httpGet.path).toBe('/healthz');
    expect(c.securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
    expect(webhook.spec.template.spec.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(c.resources.requests).toBeDefined();
    expect(find(objects, 'ServiceEntry').spec).toMatchObject({ hosts: ['xrayr.airport-prod.mesh'], resolution: 'STATIC', workloadSelector: { labels: { app: 'xrayr' } } });
    // The policy names the chart's sync ServiceAccount as the owner of managed entries.
    const policy = parse(find(objects, 'ConfigMap', 'edge-registrar-policy').data['policy.yaml'] as string);
    expect(policy.ownership.syncUsers).toEqual(['system:serviceaccount:edge-registrar:edge-registrar-sync']);
  });

  it('least privilege by default: the sync Role grants exactly the verbs the daemon calls; only Prometheus may reach the metrics ports', async () => {
    const objects = await render();
    const role = objects.find((o) => o.kind === 'Role' && o.metadata.name === 'edge-registrar-sync');
    expect(role?.rules).toEqual([
      { apiGroups: ['networking.istio.io'], resources: ['workloadentries'], verbs: ['get', 'list', 'create', 'patch', 'delete'] },
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: ['edge-registrar-sync'], verbs: ['get', 'update'] },
      { apiGroups: ['events.k8s.io'], resources: ['events'], verbs: ['create', 'patch'] },
    ]);
    // Kubernetes Events off: the daemon is told, and loses the grant.
    const quiet = await render(['sync.kubeEvents.enabled=false']);
    expect(quiet.find((o) => o.kind === 'Role' && o.metadata.name === 'edge-registrar-sync')?.rules.map((r: { apiGroups: string[] }) => r.apiGroups[0])).not.toContain('events.k8s.io');
    const quietEnv = (find(quiet, 'Deployment', 'edge-registrar-sync').spec.template.spec.containers[0].env as { name: string; value?: string }[]).find((e) => e.name === 'EDGE_REGISTRAR_KUBE_EVENTS');
    expect(quietEnv?.value).toBe('false');
    const prometheusOnly = [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } }, podSelector: { matchLabels: { 'app.kubernetes.io/name': 'prometheus' } } }];
    const webhookPolicy = find(objects, 'NetworkPolicy', 'edge-registrar-webhook');
    expect(webhookPolicy.spec.ingress[1]).toEqual({ ports: [{ port: 9091, protocol: 'TCP' }], from: prometheusOnly });
    expect(find(objects, 'NetworkPolicy', 'edge-registrar-sync').spec.ingress).toEqual([{ ports: [{ port: 9090, protocol: 'TCP' }], from: prometheusOnly }]);
  });

  it('per-VPS metrics: off by default; on, the sync daemon is told the gateway and may write that one Telemetry by name, and the rules and the dashboard come along', async () => {
    expect((await render()).filter((o) => o.metadata.namespace === 'istio-system')).toEqual([]);
    const objects = await render(['perVpsMetrics.enabled=true', 'perVpsMetrics.telemetry.metrics={REQUEST_COUNT,REQUEST_DURATION,REQUEST_SIZE}']);
    const env = Object.fromEntries((find(objects, 'Deployment', 'edge-registrar-sync').spec.template.spec.containers[0].env as { name: string; value?: string }[]).map((e) => [e.name, e.value]));
    expect(env).toMatchObject({
      EDGE_REGISTRAR_TELEMETRY: 'true',
      EDGE_REGISTRAR_TELEMETRY_NAMESPACE: 'istio-system',
      EDGE_REGISTRAR_TELEMETRY_NAME: 'edge-registrar-vps',
      EDGE_REGISTRAR_TELEMETRY_SELECTOR: 'istio=ingressgateway',
      EDGE_REGISTRAR_TELEMETRY_METRICS: 'REQUEST_COUNT,REQUEST_DURATION,REQUEST_SIZE',
    });
    const role = objects.find((o) => o.kind === 'Role' && o.metadata.namespace === 'istio-system');
    expect(role?.metadata.name).toBe('edge-registrar-sync-telemetry');
    // The same rules as the test cluster's Role, which telemetry.test.ts proves with kubectl auth can-i.
    const base = parseAllDocuments(await readFile(new URL('../harness/cluster-base.yaml', import.meta.url), 'utf8')).map((d) => d.toJS() as K8sObject).find((o) => o.kind === 'Role' && o.metadata.name === 'edge-registrar-sync-telemetry');
    expect(role?.rules).toEqual(base?.rules);
    const binding = objects.find((o) => o.kind === 'RoleBinding' && o.metadata.namespace === 'istio-system');
    expect(binding?.subjects).toEqual([{ kind: 'ServiceAccount', name: 'edge-registrar-sync', namespace: 'edge-registrar' }]);
    const withRefs = await render(['perVpsMetrics.enabled=true', 'perVpsMetrics.telemetry.targetRefs[0].group=gateway.networking.k8s.io', 'perVpsMetrics.telemetry.targetRefs[0].kind=Gateway', 'perVpsMetrics.telemetry.targetRefs[0].name=public']);
    const refs = (find(withRefs, 'Deployment', 'edge-registrar-sync').spec.template.spec.containers[0].env as { name: string; value?: string }[]).find((e) => e.name === 'EDGE_REGISTRAR_TELEMETRY_TARGET_REFS');
    expect(refs?.value).toBe('gateway.networking.k8s.io/Gateway/public');
    // The Kiali option: off unless asked for.
    const envNames = (objs: K8sObject[]) => (find(objs, 'Deployment', 'edge-registrar-sync').spec.template.spec.containers[0].env as { name: string }[]).map((e) => e.name);
    expect(envNames(objects)).not.toContain('EDGE_REGISTRAR_TELEMETRY_SOURCE_IDENTITY');
    expect(envNames(await render(['perVpsMetrics.enabled=true', 'perVpsMetrics.telemetry.sourceIdentity=true']))).toContain('EDGE_REGISTRAR_TELEMETRY_SOURCE_IDENTITY');
    await expect(render(['perVpsMetrics.telemetry.metrics={REQUESTS}'])).rejects.toThrow(/perVpsMetrics\/telemetry\/metrics\/0/);
    // The recording rules and alerts come along as a PrometheusRule, exactly the plain rules file.
    const rule = find(objects, 'PrometheusRule', 'edge-registrar-per-vps');
    expect(rule.spec).toEqual(parse(await readFile(new URL('../../charts/edge-registrar/files/per-vps-rules.yaml', import.meta.url), 'utf8')));
    expect((await render(['perVpsMetrics.enabled=true', 'perVpsMetrics.prometheusRule.enabled=false'])).filter((o) => o.kind === 'PrometheusRule')).toEqual([]);
    // And the dashboard, for Grafana's sidecar.
    const dashboard = find(objects, 'ConfigMap', 'edge-registrar-per-vps-dashboard');
    expect(dashboard.metadata.labels).toMatchObject({ grafana_dashboard: '1' });
    expect(JSON.parse(dashboard.data['edge-registrar-per-vps.json'] as string)).toEqual(JSON.parse(await readFile(new URL('../../charts/edge-registrar/files/per-vps-dashboard.json', import.meta.url), 'utf8')));
  });

  it("the gateway's PROXY-protocol listeners closed to the pod network: opt-in, each /0 excepting the pod CIDRs of its family, Istio's ports open", async () => {
    const gatewayPolicy = (objects: K8sObject[]) => objects.find((o) => o.kind === 'NetworkPolicy' && o.metadata.namespace === 'istio-system');
    expect(gatewayPolicy(await render(['perVpsMetrics.enabled=true']))).toBeUndefined();
    await expect(render(['perVpsMetrics.enabled=true', 'perVpsMetrics.gatewayNetworkPolicy.enabled=true'])).rejects.toThrow(/perVpsMetrics.gatewayNetworkPolicy.podCIDRs: give the pod network's ranges/);
    const on = ['perVpsMetrics.enabled=true', 'perVpsMetrics.gatewayNetworkPolicy.enabled=true', 'perVpsMetrics.gatewayNetworkPolicy.podCIDRs={10.244.0.0/16,fd00:10:244::/56}'];
    const policy = gatewayPolicy(await render(on));
    expect(policy?.metadata.name).toBe('edge-registrar-gateway-proxy-protocol');
    expect(policy?.spec).toEqual({
      podSelector: { matchLabels: { istio: 'ingressgateway' } },
      policyTypes: ['Ingress'],
      ingress: [
        { from: [{ ipBlock: { cidr: '0.0.0.0/0', except: ['10.244.0.0/16'] } }, { ipBlock: { cidr: '::/0', except: ['fd00:10:244::/56'] } }] },
        { ports: [{ port: 15021, protocol: 'TCP' }, { port: 15090, protocol: 'TCP' }] },
      ],
    });
    // A load balancer's own range needs no exception; a narrower block never gets one of the other family.
    expect(gatewayPolicy(await render([...on, 'perVpsMetrics.gatewayNetworkPolicy.sourceCIDRs={192.0.2.0/24}']))?.spec.ingress[0]).toEqual({ from: [{ ipBlock: { cidr: '192.0.2.0/24' } }] });
    // A Gateway API gateway is named by targetRefs: its pods' labels must be given.
    const refs = ['perVpsMetrics.telemetry.targetRefs[0].kind=Gateway', 'perVpsMetrics.telemetry.targetRefs[0].name=public'];
    await expect(render([...on, ...refs])).rejects.toThrow(/gatewayNetworkPolicy.podSelector: the Telemetry selects its gateway by targetRefs/);
    expect(gatewayPolicy(await render([...on, ...refs, 'perVpsMetrics.gatewayNetworkPolicy.podSelector.gateway\\.networking\\.k8s\\.io/gateway-name=public']))?.spec.podSelector).toEqual({ matchLabels: { 'gateway.networking.k8s.io/gateway-name': 'public' } });
  });

  it("Node's heap is sized from each container's memory limit, so a pod under load stays inside it", async () => {
    const objects = await render();
    expect(env(container(objects, 'edge-registrar-webhook')).NODE_OPTIONS).toBe('--max-old-space-size=128 --max-semi-space-size=16');
    expect(env(container(objects, 'edge-registrar-sync')).NODE_OPTIONS).toBe('--max-old-space-size=153 --max-semi-space-size=16');
    const bigger = await render(['webhook.resources.limits.memory=1Gi', 'sync.nodeOptions=--max-old-space-size=200']);
    expect(env(container(bigger, 'edge-registrar-webhook')).NODE_OPTIONS).toBe('--max-old-space-size=409 --max-semi-space-size=16');
    expect(env(container(bigger, 'edge-registrar-sync')).NODE_OPTIONS).toBe('--max-old-space-size=200');
  });

  it('the webhook configurations equal webhook-config/ in substance', async () => {
    const objects = await render();
    for (const [kind, file] of [['MutatingWebhookConfiguration', 'mutating-webhook.yaml'], ['ValidatingWebhookConfiguration', 'validating-webhook.yaml']] as const) {
      const plain = parse((await readFile(`${WEBHOOK_CONFIG}${file}`, 'utf8')).replace('${CA_BUNDLE}', 'x'));
      const chart = find(objects, kind);
      expect(chart.metadata.name).toBe(plain.metadata.name);
      for (const w of plain.webhooks) delete w.clientConfig.caBundle;
      // Self mode: no caBundle in the template; the webhook injects it (an upgrade never blanks it).
      expect(chart.webhooks).toEqual(plain.webhooks);
    }
  });

  it('self mode (default): the webhook keeps its Secret and patches only its own configurations', async () => {
    const objects = await render();
    expect(env(container(objects, 'edge-registrar-webhook'))).toMatchObject({ EDGE_REGISTRAR_CERT_MODE: 'self', EDGE_REGISTRAR_CERT_SECRET: 'edge-registrar-webhook-tls', EDGE_REGISTRAR_WEBHOOK_SERVICE: 'edge-registrar-webhook' });
    const injector = find(objects, 'ClusterRole', 'edge-registrar-webhook-ca-injector');
    expect(injector.rules).toEqual([{ apiGroups: ['admissionregistration.k8s.io'], resources: ['mutatingwebhookconfigurations', 'validatingwebhookconfigurations'], resourceNames: ['edge-registrar'], verbs: ['get', 'patch'] }]);
    expect(objects.filter((o) => o.kind === 'ClusterRole')).toHaveLength(1);
  });

  // A self-signed serving certificate changed ca.crt at every renewal (rotationPolicy Always):
  // the cainjector replaced caBundle within seconds, the kubelet refreshed the mounted Secret
  // a minute or two later, and the API server refused writes in between.
  it('cert-manager mode: a private CA signs the serving Certificate (selfSigned → CA Certificate → CA Issuer), the cainjector annotation, the Secret mounted, no CA injector RBAC', async () => {
    const objects = await render(['certificates.mode=cert-manager']);
    const cert = find(objects, 'Certificate', 'edge-registrar-webhook');
    expect(cert.spec).toMatchObject({ secretName: 'edge-registrar-webhook-tls', issuerRef: { name: 'edge-registrar-webhook-ca', kind: 'Issuer' }, privateKey: { rotationPolicy: 'Always' } });
    expect(cert.spec.isCA).toBeUndefined();
    expect(cert.spec.dnsNames).toContain('edge-registrar-webhook.edge-registrar.svc');
    expect(find(objects, 'Certificate', 'edge-registrar-webhook-ca').spec).toMatchObject({ isCA: true, secretName: 'edge-registrar-webhook-ca', duration: '87600h', privateKey: { rotationPolicy: 'Never' }, issuerRef: { name: 'edge-registrar-webhook-selfsigned', kind: 'Issuer' } });
    expect(find(objects, 'Issuer', 'edge-registrar-webhook-selfsigned').spec).toEqual({ selfSigned: {} });
    expect(find(objects, 'Issuer', 'edge-registrar-webhook-ca').spec).toEqual({ ca: { secretName: 'edge-registrar-webhook-ca' } });
    for (const kind of ['MutatingWebhookConfiguration', 'ValidatingWebhookConfiguration']) {
      expect(find(objects, kind).metadata.annotations).toEqual({ 'cert-manager.io/inject-ca-from': 'edge-registrar/edge-registrar-webhook' });
    }
    expect(find(objects, 'Deployment', 'edge-registrar-webhook').spec.template.spec.volumes).toContainEqual({ name: 'tls', secret: { secretName: 'edge-registrar-webhook-tls' } });
    expect(objects.some((o) => o.kind === 'ClusterRole')).toBe(false);
    const withIssuer = await render(['certificates.mode=cert-manager', 'certificates.certManager.issuerRef.name=corp-ca', 'certificates.certManager.issuerRef.kind=ClusterIssuer']);
    expect(find(withIssuer, 'Certificate').spec.issuerRef).toEqual({ name: 'corp-ca', kind: 'ClusterIssuer' });
    expect(withIssuer.some((o) => o.kind === 'Issuer')).toBe(false);
    expect(withIssuer.filter((o) => o.kind === 'Certificate')).toHaveLength(1);
  });

  it('provided mode: the given Secret and caBundle', async () => {
    const objects = await render(['certificates.mode=provided', 'certificates.provided.secretName=my-tls', 'certificates.provided.caBundle=Q0E=']);
    expect(find(objects, 'ValidatingWebhookConfiguration').webhooks[0].clientConfig.caBundle).toBe('Q0E=');
    expect(find(objects, 'Deployment', 'edge-registrar-webhook').spec.template.spec.volumes).toContainEqual({ name: 'tls', secret: { secretName: 'my-tls' } });
    expect(objects.some((o) => o.kind === 'ClusterRole' || o.kind === 'Certificate')).toBe(false);
  });

  it('Redis from an existing Secret, with TLS and Sentinel', async () => {
    const objects = await render(['redis.existingSecret=redis-auth', 'redis.existingSecretKeys.url=url', 'redis.tls.enabled=true', 'redis.tls.caSecret=redis-ca', 'redis.sentinel.enabled=true', 'redis.sentinel.hosts={s1:26379,s2:26379}', 'redis.sentinel.passwordKey=sentinel-password']);
    const e = env(container(objects, 'edge-registrar-sync'));
    expect(e).toMatchObject({
      REDIS_URL: { secretKeyRef: { name: 'redis-auth', key: 'url' } },
      REDIS_PASSWORD: { secretKeyRef: { name: 'redis-auth', key: 'password', optional: true } },
      REDIS_TLS: 'true',
      REDIS_TLS_CA_FILE: '/etc/edge-registrar/redis-ca/ca.crt',
      REDIS_SENTINELS: 's1:26379,s2:26379',
      REDIS_SENTINEL_PASSWORD: { secretKeyRef: { name: 'redis-auth', key: 'sentinel-password' } },
    });
    const inline = await render(['redis.password=s3cret']);
    expect(find(inline, 'Secret', 'edge-registrar-redis').stringData).toEqual({ password: 's3cret' });
  });

  it('Redis Cluster: the nodes, and neither Sentinel nor an empty list', async () => {
    const objects = await render(['redis.cluster.enabled=true', 'redis.cluster.nodes={redis-0.redis:6379,redis-1.redis:6379}', 'redis.password=s3cret']);
    expect(env(container(objects, 'edge-registrar-sync'))).toMatchObject({ REDIS_CLUSTER_NODES: 'redis-0.redis:6379,redis-1.redis:6379' });
    await expect(render(['redis.cluster.enabled=true'])).rejects.toThrow(/redis.cluster.nodes/);
    await expect(render(['redis.cluster.enabled=true', 'redis.cluster.nodes={r:6379}', 'redis.sentinel.enabled=true'])).rejects.toThrow(/choose one/);
    await expect(render(['redis.cluster.nodes={redis-0}'])).rejects.toThrow(/redis\/cluster\/nodes\/0/);
  });

  it('fullnameOverride renames everything, references included', async () => {
    const objects = await render(['fullnameOverride=reg'], 'whatever');
    const names = objects.filter((o) => o.metadata.labels?.['app.kubernetes.io/part-of'] === 'edge-registrar' && o.metadata.namespace === undefined && !['xrayr-vm', 'xrayr', 'xrayr-nodes'].includes(o.metadata.name));
    for (const o of names) expect(o.metadata.name, o.kind).toMatch(/^reg(-|$)/);
    expect(find(objects, 'ValidatingWebhookConfiguration', 'reg').webhooks[0].clientConfig.service.name).toBe('reg-webhook');
    expect(find(objects, 'ClusterRole', 'reg-webhook-ca-injector').rules[0].resourceNames).toEqual(['reg']);
    expect(find(objects, 'Deployment', 'reg-sync').spec.template.spec.serviceAccountName).toBe('reg-sync');
  });

  it('optional pieces: ServiceMonitor, priority classes, no Istio objects, no NetworkPolicy', async () => {
    const objects = await render(['serviceMonitor.enabled=true', 'webhook.priorityClassName=system-cluster-critical', 'istioResources.create=false', 'networkPolicy.enabled=false']);
    expect(objects.filter((o) => o.kind === 'ServiceMonitor').map((o) => o.metadata.name)).toEqual(['edge-registrar-webhook', 'edge-registrar-sync']);
    expect(find(objects, 'Deployment', 'edge-registrar-webhook').spec.template.spec.priorityClassName).toBe('system-cluster-critical');
    expect(objects.some((o) => ['WorkloadGroup', 'ServiceEntry', 'NetworkPolicy'].includes(o.kind))).toBe(false);
  });

  it.each([
    ['an unknown certificate mode', 'certificates.mode=vault', "at '/certificates/mode': value must be one of 'self', 'cert-manager', 'provided'"],
    ['zero webhook replicas', 'webhook.replicas=0', "at '/webhook/replicas': minimum: got 0, want 1"],
    ['a Redis URL that is not redis:// or rediss://', 'redis.url=http://redis:6379', "at '/redis/url'"],
    ['a misspelt key', 'webhok.replicas=3', 'webhok'],
    ['provided mode without a caBundle', 'certificates.mode=provided', 'caBundle'],
    // The policy, with the schema generated from the one the webhook parses it with: a bad one
    // installed fine, and the webhook crash-looped at its next start, refusing every write.
    ['an unknown policy key', 'policy.colour=blue', "at '/policy': additional properties 'colour' not allowed"],
    ['a CIDR that is none', 'policy.address.allowCidrs={10.0.0.0/33}', "at '/policy/address/allowCidrs/0': '10.0.0.0/33' does not match pattern"],
    ['a policy field of the wrong type', 'policy.ports.allowed=maybe', "at '/policy/ports/allowed'"],
    // The tags read request headers: ALL_METRICS (ten metrics, four TCP) and repeats are refused.
    ['ALL_METRICS for the per-VPS tags', 'perVpsMetrics.telemetry.metrics={ALL_METRICS}', "at '/perVpsMetrics/telemetry/metrics/0'"],
    ['a metric named twice', 'perVpsMetrics.telemetry.metrics={REQUEST_COUNT,REQUEST_COUNT}', "at '/perVpsMetrics/telemetry/metrics'"],
    ['an expression budget past what Envoy parses', 'perVpsMetrics.telemetry.maxExpressionCodepoints=100000', "at '/perVpsMetrics/telemetry/maxExpressionCodepoints'"],
  ])('values.schema.json rejects %s with a message naming it', async (_what, set, named) => {
    const res = await helm(['template', 'edge-registrar', CHART, '--set', TEST_VALUES, '--set', set, ...(set.includes('provided') ? ['--set', 'certificates.provided.secretName=x'] : [])]);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('values don\'t meet the specifications of the schema');
    expect(res.stderr).toContain(named);
  });
});
