/**
 * Reading the outcome stream the way a producer does: note where it ends, publish, then read
 * on from there until the record whose `source_id` is the event's own. Noting the end first
 * (not starting from the event's id) is what makes it exact: the record is appended after the
 * XADD, so it is after that point whatever the two streams' ids are.
 */
import type { Redis } from 'ioredis';
import { fieldsToRecord } from './event.ts';
import type { OutcomeRecord } from './outcome.ts';

export type StoredOutcome = OutcomeRecord & { id: string };

/** The id of the outcome stream's last record, or 0-0 when it is empty or absent. */
export async function outcomeStreamEnd(redis: Redis, outcomes: string): Promise<string> {
  const [last] = (await redis.xrevrange(outcomes, '+', '-', 'COUNT', 1)) as [string, string[]][];
  return last?.[0] ?? '0-0';
}

/** How long one blocked read lasts: short, so the deadline is kept to about this much. */
const READ_BLOCK_MS = 1_000;

/**
 * The outcome of event `sourceId`, read from the records after `after`; undefined when none
 * came within `timeoutMs`.
 */
export async function waitForOutcome(redis: Redis, outcomes: string, sourceId: string, after: string, timeoutMs: number): Promise<StoredOutcome | undefined> {
  const deadline = Date.now() + timeoutMs;
  let cursor = after;
  for (let left = timeoutMs; left > 0; left = deadline - Date.now()) {
    const reply = await redis.xread('COUNT', 500, 'BLOCK', Math.max(1, Math.min(READ_BLOCK_MS, left)), 'STREAMS', outcomes, cursor);
    for (const [id, raw] of reply?.[0]?.[1] ?? []) {
      cursor = id;
      const record = fieldsToRecord(raw);
      if (record.source_id === sourceId) return { ...(record as unknown as OutcomeRecord), id };
    }
  }
  return undefined;
}
