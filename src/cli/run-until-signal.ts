import type { Logger } from 'pino';

export interface RunUntilSignalOptions {
  /**
   * Exit non-zero if stopping takes longer than this: a backstop for a stop that waits on a
   * server that never answers. Kubernetes kills the pod at its grace period anyway; exiting
   * first says why in the log.
   */
  stopDeadlineMs?: number;
}

/** Runs until SIGTERM or SIGINT, then stops the service once and resolves when it has stopped. */
export async function runUntilSignal(service: { stop(): Promise<void> }, logger: Logger, options: RunUntilSignalOptions = {}): Promise<void> {
  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      logger.info({ signal }, 'stop requested');
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      if (options.stopDeadlineMs !== undefined) {
        setTimeout(() => {
          logger.error({ stopDeadlineMs: options.stopDeadlineMs }, 'did not stop in time; exiting');
          process.exit(1);
        }, options.stopDeadlineMs).unref();
      }
      void service.stop().then(resolve);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}

/**
 * Ends the process once a service has stopped: whatever handle is still open (a socket to a
 * server that never answered, a timer of a library) must not keep a stopped daemon alive past
 * its pod's grace period. The log is flushed first (bounded: stdout may be gone).
 */
export async function exitAfterStop(logger: Logger, code = 0): Promise<never> {
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 1_000);
    logger.flush(() => {
      clearTimeout(timer);
      resolve();
    });
  });
  process.exit(code);
}
