/**
 * The sync daemon as its own process with test timings (test/harness/sync-timings.ts), for
 * what must kill it (SIGKILL in the soak): `edge-registrar sync` takes no flags for lease
 * and claim timings, on purpose. SYNC_FLAGS is the JSON of the CLI's flags (kubeconfig,
 * redisUrl, consumer, port) and SYNC_OVERRIDES of config fields beyond the test timings.
 * Logs are pino JSON on stdout, as in a pod; SIGTERM stops it gracefully.
 */
import { syncConfig, type SyncConfig, type SyncFlags } from '../../src/config/sync.ts';
import { exitAfterStop, runUntilSignal } from '../../src/cli/run-until-signal.ts';
import { runSync } from '../../src/sync/run.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { FAST_SYNC_TIMINGS } from './sync-timings.ts';

const flags = JSON.parse(process.env.SYNC_FLAGS ?? '{}') as SyncFlags;
const overrides = JSON.parse(process.env.SYNC_OVERRIDES ?? '{}') as Partial<SyncConfig>;
const config: SyncConfig = { ...syncConfig(flags, process.env, `sync-${process.pid}`), ...FAST_SYNC_TIMINGS, ...overrides };
const logger = createLogger(config.logLevel, 'sync');
try {
  await runUntilSignal(await runSync(config, logger), logger, { stopDeadlineMs: config.shutdownTimeoutMs + 5_000 });
  await exitAfterStop(logger);
} catch (err) {
  // As in a pod: a daemon that cannot start exits non-zero and is restarted by its supervisor.
  logger.fatal({ err }, 'sync could not start');
  process.exit(1);
}
