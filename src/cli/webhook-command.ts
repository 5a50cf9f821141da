import { webhookConfig, type WebhookFlags } from '../config/webhook.ts';
import { createLogger } from '../observability/logger.ts';
import { runUntilSignal } from './run-until-signal.ts';
import { runWebhook } from '../webhook/run.ts';

export async function runWebhookCommand(flags: WebhookFlags): Promise<void> {
  const config = webhookConfig(flags, process.env);
  const logger = createLogger(config.logLevel, 'webhook');
  const running = await runWebhook(config, logger);
  await runUntilSignal(running, logger);
}
