/**
 * Events are a courtesy: when the API server cannot take them, the recorder counts the failure,
 * warns once, and the process goes on. In a soak (seed 415701734) the sync daemon instead
 * exited 1 when the API server restarted: the failure's log line threw inside the recorder's
 * catch block, and the rejection escaped its write loop unhandled.
 */
import * as k8s from '@kubernetes/client-node';
import { Counter, Registry } from 'prom-client';
import { expect, it } from 'vitest';
import { EventRecorder } from '../../src/kube/event-recorder.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { freePort } from '../harness/redis-server.ts';

/** A kubeconfig for an API server at 127.0.0.1:`port` (one that refuses, or never answers). */
function kubeConfigAt(port: number): k8s.KubeConfig {
  const kubeConfig = new k8s.KubeConfig();
  kubeConfig.loadFromOptions({
    clusters: [{ name: 'test', server: `https://127.0.0.1:${port}`, skipTLSVerify: true }],
    users: [{ name: 'sync', token: 'test' }],
    contexts: [{ name: 'test', cluster: 'test', user: 'sync' }],
    currentContext: 'test',
  });
  return kubeConfig;
}

/** The sync daemon's recorder, as configured in production, with the counter of its writes. */
function recorderAt(port: number, options: Partial<ConstructorParameters<typeof EventRecorder>[0]> = {}): { recorder: EventRecorder; written: Counter<'result'> } {
  const written = new Counter({ name: 'kube_events_total', help: 'test', labelNames: ['result'], registers: [new Registry()] });
  const lease = { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', namespace: 'airport-prod', name: 'edge-registrar-sync' };
  const recorder = new EventRecorder({
    kubeConfig: kubeConfigAt(port),
    reportingController: 'edge-registrar.io/sync',
    reportingInstance: 'test',
    correlator: { objectBurst: 25, objectRefillSeconds: 300, globalBurst: 100, globalPerMinute: 60, dropsRegarding: lease },
    logger: createLogger('silent', 'test'),
    written,
    ...options,
  });
  return { recorder, written };
}

it('an API server that refuses the connection: the write is counted as failed, one warning names the error, nothing escapes', async () => {
  const port = await freePort(); // nothing listens there
  const lines: { level: string; msg: string; err?: { message?: string } }[] = [];
  const logger = createLogger('info', 'test', { write: (line: string) => { lines.push(JSON.parse(line) as (typeof lines)[number]); } });
  const { recorder, written } = recorderAt(port, { logger, requestTimeoutMs: 2_000 });
  for (const name of ['vps-jp-01', 'vps-jp-02']) {
    recorder.record({ regarding: { apiVersion: 'networking.istio.io/v1', kind: 'WorkloadEntry', namespace: 'airport-prod', name }, type: 'Normal', reason: 'Applied', action: 'Apply', note: `${name} applied` });
  }
  await expect.poll(async () => (await written.get()).values.find((v) => v.labels.result === 'failed')?.value, { timeout: 10_000 }).toBe(2);
  const warnings = lines.filter((l) => l.level === 'warn');
  expect(warnings).toHaveLength(1);
  expect(warnings[0]?.msg).toMatch(/^Kubernetes Event not written/);
  expect(warnings[0]?.err?.message).toBeTypeOf('string');
  await recorder.stop(1_000);
});

/**
 * The names kept for series patches are bounded by what the correlator remembers and what is
 * queued: ids forgotten while their creates were still queued (an API server that does not
 * answer, 6 quiet minutes) used to have their names set when the create finally ran, and never
 * removed.
 */
it('names of Events whose ids were forgotten while their creates waited in the queue are not kept', async () => {
  // An API server that takes connections and never answers: every write waits out its deadline.
  const { createServer } = await import('node:net');
  const sockets: import('node:net').Socket[] = [];
  const silent = createServer((socket) => { sockets.push(socket); });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const port = (silent.address() as import('node:net').AddressInfo).port;
  let clock = Date.now();
  const { recorder, written } = recorderAt(port, { requestTimeoutMs: 100, tickMs: 20, now: () => clock });
  recorder.start();
  try {
    for (let i = 0; i < 20; i++) {
      recorder.record({ regarding: { apiVersion: 'networking.istio.io/v1', kind: 'WorkloadEntry', namespace: 'airport-prod', name: `vps-jp-${i}` }, type: 'Normal', reason: 'Applied', action: 'Apply', note: `applied ${i}` });
    }
    // Seven quiet minutes pass while the creates wait: the correlator forgets every id.
    clock += 7 * 60_000;
    await expect.poll(async () => (await written.get()).values.find((v) => v.labels.result === 'failed')?.value, { timeout: 15_000 }).toBe(20);
    await expect.poll(() => recorder.namesKept, { timeout: 2_000 }).toBe(0);
  } finally {
    await recorder.stop(100);
    for (const socket of sockets) socket.destroy();
    silent.close();
  }
});
