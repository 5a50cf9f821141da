/**
 * The faults the soak injects, each a small function that breaks one part of the stack and
 * returns once it is back (so faults never pile up unnoticed). A fault waits for what it
 * needs to have happened (a takeover, the rotated certificate being served) rather than for
 * a time, except where the fault is a duration (a pause).
 */
import type { SoakStack } from './stack.ts';

export interface FaultContext {
  stack: SoakStack;
  /** Stops the producer (sigma-api) around Redis faults: its own bookkeeping is not under test. */
  holdProducer(): Promise<void>;
  releaseProducer(): void;
  log(line: string): void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Longer than the consumer's watchdog on the blocking read (blockMs 500 + 10 s). */
const REDIS_PAUSE_MS = 12_000;
const API_SERVER_PAUSE_MS = 8_000;
const WEBHOOK_DOWN_MS = 6_000;

export const FAULTS = {
  /** The leader is killed mid-flight; its pending entries are claimed after its restart. */
  'sync-sigkill': async ({ stack }) => {
    stack.replica('a').kill();
    await stack.replica('a').waitLeader();
  },
  /**
   * A second replica starts as standby; the leader is stopped while events flow, so the new
   * leader takes over with the old one's writes in flight; then the first comes back and
   * the second goes, handing over again.
   */
  'replica-handover': async ({ stack }) => {
    const [a, b] = [stack.replica('a'), stack.replica('b')];
    b.start();
    await b.waitServing();
    await a.stop();
    await b.waitLeader();
    a.start();
    await a.waitServing();
    await b.stop();
    await a.waitLeader();
  },
  'redis-restart': async ({ stack, holdProducer, releaseProducer }) => {
    await holdProducer();
    try {
      await stack.restartRedis();
    } finally {
      releaseProducer();
    }
  },
  'redis-pause': async ({ stack, holdProducer, releaseProducer }) => {
    await holdProducer();
    stack.pauseRedis();
    try {
      await sleep(REDIS_PAUSE_MS);
    } finally {
      stack.resumeRedis();
      releaseProducer();
    }
  },
  'apiserver-restart': async ({ stack }) => {
    await stack.stopCluster();
    await sleep(2_000);
    await stack.startCluster();
  },
  'apiserver-pause': async ({ stack }) => {
    stack.pauseCluster();
    try {
      await sleep(API_SERVER_PAUSE_MS);
    } finally {
      stack.resumeCluster();
    }
  },
  /** failurePolicy Fail: every write is refused while it is down, and must be retried. */
  'webhook-down': async ({ stack }) => {
    await stack.stopWebhook();
    await sleep(WEBHOOK_DOWN_MS);
    await stack.startWebhook();
  },
  'webhook-cert-rotation': async ({ stack }) => {
    await stack.rotateWebhookCertificate();
  },
} satisfies Record<string, (context: FaultContext) => Promise<void>>;

export type FaultKind = keyof typeof FAULTS;
export const FAULT_KINDS = Object.keys(FAULTS) as FaultKind[];
