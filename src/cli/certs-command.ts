import { certsConfig, type CertsFlags } from '../config/certs.ts';
import { createCertificateAuthority, createServingCertificate } from '../certs/authority.ts';
import { writeCertificateFiles } from '../certs/files.ts';

export async function runCertsGenerate(flags: CertsFlags): Promise<void> {
  const config = certsConfig(flags);
  const ca = createCertificateAuthority('edge-registrar-webhook-ca', config.caDays);
  const serving = createServingCertificate({ ca, hosts: config.hosts, ips: config.ips, days: config.days });
  const written = await writeCertificateFiles(config.out, ca, serving, config.force);
  for (const path of written) console.log(`wrote ${path}`);
  console.log(`caBundle for the webhook configurations: base64 -w0 ${written[0] ?? 'ca.crt'}`);
}
