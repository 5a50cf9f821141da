import { webhookConfig, type WebhookFlags } from '../config.ts';
import { createLogger } from '../telemetry/logger.ts';
import { runWebhook } from '../webhook/run.ts';

export async function runWebhookCommand(flags: WebhookFlags): Promise<void> {
  const config = webhookConfig(flags, process.env);
  const logger = createLogger(config.logLevel, 'webhook');
  const running = await runWebhook(config, logger);
  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      logger.info({ signal }, 'stop requested');
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      void running.stop().then(resolve);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}
