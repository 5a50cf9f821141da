/** The consumer group as Redis reports it, for tests and the soak. */
import type { Redis } from 'ioredis';
import { consumerGroupInfo, undeliveredEntries } from '../../src/redis/consumer-group.ts';

/**
 * Events the group has not acknowledged: delivered but pending, plus not yet delivered
 * (counted after the last-delivered-id, never XINFO's lag; see undeliveredEntries);
 * undefined before the group exists.
 */
export async function unacknowledgedEvents(redis: Redis, stream: string, group: string): Promise<number | undefined> {
  const info = await consumerGroupInfo(redis, stream, group).catch(() => undefined);
  if (info === undefined) return undefined;
  return Number(info.get('pending')) + (await undeliveredEntries(redis, stream, info, 1_000_000));
}
