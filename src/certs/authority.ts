/**
 * A CA and serving certificates made with node-forge. RSA 2048 with SHA-256 (what
 * kubeadm issues; forge uses Node's native key generation when it can), a CA valid for
 * ten years and leaf certificates for one by default, SANs for every DNS name and IP the
 * webhook is reached by. Pure: returns PEM strings, writes nothing.
 */
import forge from 'node-forge';
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';

const { pki, md } = forge;

export interface PemPair {
  cert: string;
  key: string;
}

export interface ServingCertRequest {
  ca: PemPair;
  /** DNS names; the first is also the subject CN. */
  hosts: readonly string[];
  ips?: readonly string[];
  days: number;
  now?: Date;
}

const DAY_MS = 24 * 60 * 60 * 1000;
/** Back-date certificates a little so a node with a slow clock does not reject them. */
const CLOCK_SKEW_MS = 5 * 60 * 1000;

function serial(): string {
  // Positive 128-bit serial: first bit cleared so DER never reads it as negative.
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return bytes.toString('hex');
}

function keyPair(): forge.pki.rsa.KeyPair {
  return pki.rsa.generateKeyPair({ bits: 2048, e: 0x10001 });
}

function validity(cert: forge.pki.Certificate, now: Date, days: number): void {
  cert.validity.notBefore = new Date(now.getTime() - CLOCK_SKEW_MS);
  cert.validity.notAfter = new Date(now.getTime() + days * DAY_MS);
}

export function createCertificateAuthority(commonName: string, days: number, now: Date = new Date()): PemPair {
  const keys = keyPair();
  const cert = pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = serial();
  validity(cert, now, days);
  const subject = [{ name: 'commonName', value: commonName }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(keys.privateKey, md.sha256.create());
  return { cert: pki.certificateToPem(cert), key: pki.privateKeyToPem(keys.privateKey) };
}

export function createServingCertificate(request: ServingCertRequest): PemPair {
  const { hosts, ips = [], days, now = new Date() } = request;
  const [first] = hosts;
  if (first === undefined) throw new Error('a serving certificate needs at least one host name');
  for (const ip of ips) if (isIP(ip) === 0) throw new Error(`--ip ${JSON.stringify(ip)} is not an IP address`);
  const caCert = pki.certificateFromPem(request.ca.cert);
  const caKey = pki.privateKeyFromPem(request.ca.key);
  const keys = keyPair();
  const cert = pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = serial();
  validity(cert, now, days);
  cert.setSubject([{ name: 'commonName', value: first }]);
  cert.setIssuer(caCert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
    {
      name: 'subjectAltName',
      altNames: [...hosts.map((value) => ({ type: 2, value })), ...ips.map((ip) => ({ type: 7, ip }))],
    },
  ]);
  cert.sign(caKey, md.sha256.create());
  return { cert: pki.certificateToPem(cert), key: pki.privateKeyToPem(keys.privateKey) };
}

/** The DNS names a webhook Service is reached by, for `--service NAME --namespace NS`. */
export function serviceHostNames(service: string, namespace: string): string[] {
  return [service, `${service}.${namespace}`, `${service}.${namespace}.svc`, `${service}.${namespace}.svc.cluster.local`];
}
