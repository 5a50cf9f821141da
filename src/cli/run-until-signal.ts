import type { Logger } from 'pino';

/** Runs until SIGTERM or SIGINT, then stops the service once and resolves when it has stopped. */
export async function runUntilSignal(service: { stop(): Promise<void> }, logger: Logger): Promise<void> {
  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      logger.info({ signal }, 'stop requested');
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      void service.stop().then(resolve);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}
