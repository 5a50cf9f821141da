/**
 * Certificate files on disk, named as in a Kubernetes TLS Secret (tls.crt, tls.key) plus
 * the CA (ca.crt, ca.key), so the same directory layout works for `certs generate`, a
 * mounted Secret and the local stack.
 */
import { mkdir, writeFile, access } from 'node:fs/promises';
import { join } from 'node:path';
import type { PemPair } from './authority.ts';

export const CERT_FILES = { caCert: 'ca.crt', caKey: 'ca.key', cert: 'tls.crt', key: 'tls.key' } as const;

export async function writeCertificateFiles(dir: string, ca: PemPair, serving: PemPair, force: boolean): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const files: [string, string][] = [
    [CERT_FILES.caCert, ca.cert],
    [CERT_FILES.caKey, ca.key],
    [CERT_FILES.cert, serving.cert],
    [CERT_FILES.key, serving.key],
  ];
  if (!force) {
    for (const [name] of files) {
      const path = join(dir, name);
      const exists = await access(path).then(
        () => true,
        () => false,
      );
      if (exists) throw new Error(`${path} exists; pass --force to replace it`);
    }
  }
  const written: string[] = [];
  for (const [name, pem] of files) {
    const path = join(dir, name);
    // Private keys readable by the owner only.
    await writeFile(path, pem, { mode: name.endsWith('.key') ? 0o600 : 0o644 });
    written.push(path);
  }
  return written;
}
