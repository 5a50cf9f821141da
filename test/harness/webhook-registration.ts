/**
 * Registers the webhook exactly as webhook-config/ describes it, with two changes a local
 * run needs: clientConfig.service becomes a url: to the locally running webhook, and
 * caBundle is our own generated CA.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';

const CONFIG_DIR = fileURLToPath(new URL('../../webhook-config/', import.meta.url));
export const WEBHOOK_CONFIG_FILES = ['mutating-webhook.yaml', 'validating-webhook.yaml'];

interface WebhookConfiguration {
  webhooks: { clientConfig: { service?: { path?: string }; url?: string; caBundle?: string } }[];
}

export async function localWebhookManifests(port: number, caCertPem: string): Promise<string> {
  const docs: string[] = [];
  for (const file of WEBHOOK_CONFIG_FILES) {
    const text = (await readFile(join(CONFIG_DIR, file), 'utf8')).replaceAll('${CA_BUNDLE}', Buffer.from(caCertPem).toString('base64'));
    const config = parse(text) as WebhookConfiguration;
    for (const webhook of config.webhooks) {
      const path = webhook.clientConfig.service?.path ?? '/';
      delete webhook.clientConfig.service;
      webhook.clientConfig.url = `https://127.0.0.1:${port}${path}`;
    }
    docs.push(stringify(config));
  }
  return docs.join('---\n');
}
