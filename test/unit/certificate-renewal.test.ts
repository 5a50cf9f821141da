import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decide, pemBlocks, renew, renewalKeys, type CertificateWants } from '../../src/certs/renewal.ts';

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
