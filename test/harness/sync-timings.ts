/**
 * Timings for a sync daemon under test: the production defaults scaled down so that a
 * Lease handover, a claim of a dead replica's entries or a retry takes seconds, not
 * minutes. The ratios between them keep client-go's rules (retry < renew deadline < lease).
 */
import type { SyncConfig } from '../../src/config/sync.ts';

export const FAST_SYNC_TIMINGS = {
  blockMs: 200,
  watchdogGraceMs: 2_000,
  leaseRenewMs: 300,
  leaseDurationMs: 2_000,
  leaseRenewDeadlineMs: 1_500,
  retryBaseMs: 50,
  retryMaxMs: 1_000,
  strayCheckMs: 2_000,
  resyncIntervalMs: 3_600_000,
} satisfies Partial<SyncConfig>;

/** A StreamConsumer's retry and housekeeping timings in the consumer tests: retries within milliseconds, no housekeeping while a test runs. */
export const TEST_CONSUMER_RETRIES = {
  strayCheckMs: 600_000,
  consumerRetentionMs: 3_600_000,
  maxInterruptedAttempts: 3,
  maxAttempts: 3,
  retryBaseMs: 20,
  retryMaxMs: 100,
} as const;
