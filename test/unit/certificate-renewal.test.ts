import { X509Certificate } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { decide, pemBlocks, renew, renewalKeys, type CertificateWants } from '../../src/certs/renewal.ts';
import { webhookConfig } from '../../src/config/webhook.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { selfManagedSource } from '../../src/webhook/certificate-source.ts';

const DAY = 24 * 60 * 60 * 1000;
const T0 = new Date('2026-01-01T00:00:00Z');
const at = (days: number): Date => new Date(T0.getTime() + days * DAY);
const wants: CertificateWants = { hosts: ['hook', 'hook.ns', 'hook.ns.svc'], days: 365, caDays: 3650, renewBeforeDays: 30, caCommonName: 'hook.ns CA' };

describe('self-managed certificate renewal', () => {
  const first = renew(undefined, { action: 'new-ca', reason: 'none' }, wants, T0);

  it('nothing stored: a new CA and serving certificate for every Service name', () => {
    expect(decide(undefined, wants, T0)).toMatchObject({ action: 'new-ca' });
    const leaf = new X509Certificate(first.cert);
    expect(leaf.subjectAltName).toBe('DNS:hook, DNS:hook.ns, DNS:hook.ns.svc');
    expect(leaf.verify(new X509Certificate(first.caBundle).publicKey)).toBe(true);
    expect(pemBlocks(first.caBundle)).toHaveLength(1);
  });

  it('a stored, healthy pair is used as it is (a restarted replica serves the same certificate)', () => {
    expect(decide(first, wants, at(100))).toEqual({ action: 'use' });
  });

  it('renews the serving certificate within the renewal window, from the same CA', () => {
    const decision = decide(first, wants, at(340));
    expect(decision).toMatchObject({ action: 'new-leaf', reason: expect.stringContaining('expires in') });
    const next = renew(first, decision as Exclude<typeof decision, { action: 'use' }>, wants, at(340));
    expect(next.caBundle).toBe(first.caBundle);
    expect(new Date(new X509Certificate(next.cert).validTo).getTime()).toBeGreaterThan(at(700).getTime());
    expect(decide(next, wants, at(340))).toEqual({ action: 'use' });
  });

  it('reissues when a Service name is missing or the key does not match', () => {
    expect(decide(first, { ...wants, hosts: [...wants.hosts, 'hook.ns.svc.cluster.local'] }, at(1))).toMatchObject({ action: 'new-leaf', reason: expect.stringContaining('hook.ns.svc.cluster.local') });
    const other = renew(undefined, { action: 'new-ca', reason: 'x' }, wants, T0);
    expect(decide({ ...first, key: other.key }, wants, at(1))).toMatchObject({ action: 'new-leaf' });
    expect(decide({ ...first, caKey: other.caKey }, wants, at(1))).toMatchObject({ action: 'new-ca' });
  });

  it('replaces the CA before it could outlive a serving certificate, keeping the old CA in the bundle until it expires', () => {
    const decision = decide(first, wants, at(3650 - 380));
    expect(decision).toMatchObject({ action: 'new-ca', reason: expect.stringContaining('the CA expires') });
    const rotated = renew(first, decision as Exclude<typeof decision, { action: 'use' }>, wants, at(3650 - 380));
    const bundle = pemBlocks(rotated.caBundle);
    expect(bundle).toHaveLength(2);
    expect(bundle[1]?.trim()).toBe(first.caBundle.trim());
    // After the old CA expired, the next renewal drops it.
    const later = renew(rotated, { action: 'new-leaf', reason: 'x' }, wants, at(3651));
    expect(pemBlocks(later.caBundle)).toHaveLength(1);
  });

  it("a serving process's renewal makes its keys off the event loop: timers keep firing while they are generated, and the result is a valid pair", async () => {
    let ticks = 0;
    const timer = setInterval(() => { ticks++; }, 1);
    let keys: Awaited<ReturnType<typeof renewalKeys>>;
    try {
      keys = await renewalKeys(undefined, { action: 'new-ca', reason: 'none' });
    } finally {
      clearInterval(timer);
    }
    // Synchronous generation (forge's, or generateKeyPairSync) lets no timer run until it is done.
    expect(ticks).toBeGreaterThan(0);
    expect(keys.ca).toBeDefined();
    const made = renew(undefined, { action: 'new-ca', reason: 'none' }, wants, T0, keys);
    expect(decide(made, wants, at(1))).toEqual({ action: 'use' });
    expect(new X509Certificate(made.cert).verify(new X509Certificate(made.caBundle).publicKey)).toBe(true);
    // A new leaf under the same CA needs one key only.
    expect((await renewalKeys(made, { action: 'new-leaf', reason: 'x' })).ca).toBeUndefined();
  });
});

describe('swapping in a renewed certificate', () => {
  // A failed caBundle injection (a 409 or 422 while a helm upgrade rewrites the webhook
  // configurations) was logged as a warning and the new certificate served anyway: from a new
  // CA, the API server could not verify it, and with failurePolicy Fail every write was refused.
  const old = renew(undefined, { action: 'new-ca', reason: 'none' }, wants, T0);
  const rotated = renew(old, { action: 'new-ca', reason: 'CA near expiry' }, wants, at(3300));
  const result = (stored: typeof old, injected: boolean) => ({ stored, action: 'used', caBundleInjected: injected, configurationMissing: false });

  it("serves a new certificate only once its CA is in every webhook configuration, and is not ready while the served one's is not", async () => {
    // Each reconcile is answered by the test, one at a time.
    const asked: ((answer: ReturnType<typeof result>) => void)[] = [];
    const reconcile = (): Promise<ReturnType<typeof result>> => new Promise((resolve) => asked.push(resolve));
    const starting = selfManagedSource({ reconcile }, { checkIntervalMs: 10, untrustedRetryMs: 10, source: 'test' }, createLogger('silent', 't'));
    await vi.waitFor(() => { expect(asked).toHaveLength(1); });
    asked.shift()?.(result(old, true));
    const source = await starting;
    const loaded: string[] = [];
    const stop = source.watch({ onLoad: (c) => loaded.push(c.fingerprint), onError: () => undefined });
    // A renewal from a new CA whose injection failed, twice: the old certificate stays in service.
    for (let i = 0; i < 2; i++) {
      await vi.waitFor(() => { expect(asked).toHaveLength(1); });
      asked.shift()?.(result(rotated, false));
      await new Promise((r) => setTimeout(r, 5));
      expect(loaded).toEqual([]);
    }
    // The CA is in the configurations now: swapped in.
    await vi.waitFor(() => { expect(asked).toHaveLength(1); });
    asked.shift()?.(result(rotated, true));
    await vi.waitFor(() => { expect(loaded).toHaveLength(1); });
    stop();
    expect(loaded[0]).not.toBe(source.initial.fingerprint);
    expect(source.trusted()).toBe(true);
  });

  it('a replica that starts with a certificate whose CA is not injected yet serves it but reports not trusted until it is', async () => {
    const answers = [result(rotated, false), result(rotated, true)];
    const source = await selfManagedSource({ reconcile: () => Promise.resolve(answers.shift() ?? result(rotated, true)) }, { checkIntervalMs: 60_000, untrustedRetryMs: 20, source: 'test' }, createLogger('silent', 't'));
    expect(source.trusted()).toBe(false);
    const stop = source.watch({ onLoad: () => undefined, onError: () => undefined });
    await vi.waitFor(() => { expect(source.trusted()).toBe(true); });
    stop();
  });
});

describe("the CA's validity", () => {
  const selfConfig = (env: Record<string, string>) =>
    webhookConfig({ certMode: 'self', certSecret: 's', certSecretNamespace: 'ns', service: 'hook' }, env).selfCertificate;

  // With a serving certificate of 3,621 days or more, a 3,650-day CA never outlived one new
  // serving certificate plus its renewal window: every replica made a new CA at every check.
  it('is derived from the serving validity, so a long serving certificate does not replace the CA at every check', () => {
    const self = selfConfig({ EDGE_REGISTRAR_CERT_DAYS: '3621' });
    expect(self?.caDays).toBe(3 * (3621 + 30));
    const longWants: CertificateWants = { ...wants, days: self?.days ?? 0, caDays: self?.caDays ?? 0 };
    const stored = renew(undefined, { action: 'new-ca', reason: 'none' }, longWants, T0);
    expect(decide(stored, longWants, at(1))).toEqual({ action: 'use' });
    expect(selfConfig({})?.caDays).toBe(3650);
  });

  it('refuses a serving validity over ten years, naming the flag', () => {
    expect(() => webhookConfig({ certMode: 'self', certSecret: 's', certSecretNamespace: 'ns', service: 'hook', certDays: '3621' }, {})).not.toThrow();
    expect(() => webhookConfig({ certMode: 'self', certSecret: 's', certSecretNamespace: 'ns', service: 'hook', certDays: '4000' }, {})).toThrow(/--cert-days \/ EDGE_REGISTRAR_CERT_DAYS: Too big: expected number to be <=3650/);
  });
});
