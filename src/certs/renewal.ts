/**
 * What the webhook's self-managed certificate needs, decided from what is stored: use it,
 * issue a new serving certificate from the stored CA, or start a new CA. Pure: the caller
 * reads and writes the Secret.
 *
 * A CA is replaced well before it could outlive a serving certificate (remaining lifetime
 * under the serving validity plus the renewal margin). The old CA stays in the bundle until
 * it expires, so clients that still hold the previous caBundle keep trusting what is served.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { createCertificateAuthority, createServingCertificate, generateKeys, type PemPair, type RsaKeys } from './authority.ts';

/** The four keys of the Secret (type kubernetes.io/tls plus the CA's key). */
export interface StoredCertificates {
  /** PEM bundle: the current CA first, then a previous one still valid. */
  caBundle: string;
  caKey: string;
  cert: string;
  key: string;
}

export interface CertificateWants {
  hosts: readonly string[];
  days: number;
  caDays: number;
  renewBeforeDays: number;
  caCommonName: string;
}

export type Decision =
  | { action: 'use' }
  | { action: 'new-leaf'; reason: string }
  | { action: 'new-ca'; reason: string };

const DAY_MS = 24 * 60 * 60 * 1000;

/** The certificates of a PEM bundle, each with \n line endings and a final newline. */
export function pemBlocks(bundle: string): string[] {
  return (bundle.replaceAll('\r\n', '\n').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((pem) => `${pem}\n`);
}

function parse(pem: string): X509Certificate | undefined {
  try {
    return new X509Certificate(pem);
  } catch {
    return undefined;
  }
}

function keyMatches(cert: X509Certificate, keyPem: string): boolean {
  try {
    return cert.checkPrivateKey(createPrivateKey(keyPem));
  } catch {
    return false;
  }
}

function daysLeft(cert: X509Certificate, now: Date): number {
  return (new Date(cert.validTo).getTime() - now.getTime()) / DAY_MS;
}

function stillValid(pem: string, now: Date): boolean {
  const cert = parse(pem);
  return cert !== undefined && daysLeft(cert, now) > 0;
}

function dnsNames(cert: X509Certificate): Set<string> {
  return new Set((cert.subjectAltName ?? '').split(', ').filter((s) => s.startsWith('DNS:')).map((s) => s.slice(4)));
}

export function decide(stored: StoredCertificates | undefined, wants: CertificateWants, now: Date): Decision {
  if (stored === undefined) return { action: 'new-ca', reason: 'no certificate stored yet' };
  const [currentCaPem] = pemBlocks(stored.caBundle);
  const ca = currentCaPem === undefined ? undefined : parse(currentCaPem);
  if (ca === undefined || !keyMatches(ca, stored.caKey)) return { action: 'new-ca', reason: 'the stored CA or its key does not parse or does not match' };
  const caLeft = daysLeft(ca, now);
  if (caLeft < wants.days + wants.renewBeforeDays) return { action: 'new-ca', reason: `the CA expires in ${caLeft.toFixed(1)} days` };

  const leaf = parse(stored.cert);
  if (leaf === undefined || !keyMatches(leaf, stored.key)) return { action: 'new-leaf', reason: 'the serving certificate or its key does not parse or does not match' };
  if (!leaf.verify(ca.publicKey)) return { action: 'new-leaf', reason: 'the serving certificate is not signed by the current CA' };
  const names = dnsNames(leaf);
  const missing = wants.hosts.filter((h) => !names.has(h));
  if (missing.length > 0) return { action: 'new-leaf', reason: `the serving certificate lacks ${missing.join(', ')}` };
  const leafLeft = daysLeft(leaf, now);
  if (leafLeft < wants.renewBeforeDays) return { action: 'new-leaf', reason: `the serving certificate expires in ${leafLeft.toFixed(1)} days` };
  return { action: 'use' };
}

/** Whether a decision makes a new CA (and so needs a CA key as well as a leaf key). */
export function needsNewCa(stored: StoredCertificates | undefined, decision: Exclude<Decision, { action: 'use' }>): boolean {
  return decision.action === 'new-ca' || stored === undefined;
}

/** The key pairs a renewal needs, generated off the event loop. */
export async function renewalKeys(stored: StoredCertificates | undefined, decision: Exclude<Decision, { action: 'use' }>): Promise<{ ca?: RsaKeys; leaf: RsaKeys }> {
  const [leaf, ca] = await Promise.all([generateKeys(), needsNewCa(stored, decision) ? generateKeys() : Promise.resolve(undefined)]);
  return ca === undefined ? { leaf } : { ca, leaf };
}

/**
 * The certificates to store after a decision other than 'use'. Pass keys from
 * `renewalKeys` in a serving process; without them keys are generated synchronously.
 */
export function renew(stored: StoredCertificates | undefined, decision: Exclude<Decision, { action: 'use' }>, wants: CertificateWants, now: Date, keys?: { ca?: RsaKeys; leaf: RsaKeys }): StoredCertificates {
  let ca: PemPair;
  let bundle: string[];
  if (decision.action === 'new-ca' || stored === undefined) {
    ca = createCertificateAuthority(wants.caCommonName, wants.caDays, now, keys?.ca);
    // Keep the previous CA (the first of the old bundle) while it is still valid.
    const previous = stored === undefined ? undefined : pemBlocks(stored.caBundle)[0];
    bundle = [...pemBlocks(ca.cert), ...(previous !== undefined && stillValid(previous, now) ? [previous] : [])];
  } else {
    ca = { cert: pemBlocks(stored.caBundle)[0] ?? '', key: stored.caKey };
    // Drop CAs from the bundle once they have expired.
    bundle = pemBlocks(stored.caBundle).filter((pem, i) => i === 0 || stillValid(pem, now));
  }
  const serving = createServingCertificate({ ca, hosts: wants.hosts, days: wants.days, now, ...(keys !== undefined ? { keys: keys.leaf } : {}) });
  return { caBundle: bundle.join(''), caKey: ca.key, cert: serving.cert, key: serving.key };
}
