/** A consumer group as Redis reports it (one row of XINFO GROUPS), for the daemon's gauges and doctor. */
import type { Redis } from 'ioredis';

/** The group's XINFO GROUPS row as a map (name, consumers, pending, lag, ...); undefined when the stream has no such group. */
export async function consumerGroupInfo(redis: Pick<Redis, 'xinfo'>, stream: string, group: string): Promise<Map<string, unknown> | undefined> {
  const groups = (await redis.xinfo('GROUPS', stream)) as unknown[][];
  for (const g of groups) {
    const info = new Map<string, unknown>();
    for (let i = 0; i + 1 < g.length; i += 2) info.set(String(g[i]), g[i + 1]);
    if (info.get('name') === group) return info;
  }
  return undefined;
}

/** How far undelivered entries are counted one by one; past it the figure is a lower bound. */
export const UNDELIVERED_COUNT_LIMIT = 1_000;

/**
 * Entries of the stream the group has not been handed yet: those after its last-delivered-id,
 * counted with XRANGE, exactly up to `limit`.
 *
 * Not XINFO GROUPS' `lag`: Redis 7.0 derives it from a counter (entries-read) that replaying
 * the AOF does not restore, because a group read is written there as XCLAIM ... LASTID, which
 * moves the last-delivered-id but not the counter. After a restart the lag counts every entry
 * read since the last AOF rewrite as still undelivered, for good (the 30-minute soak of
 * 2026-11-22 waited on 395 such entries with nothing pending and the last entry delivered).
 * Past `limit` the count is reported as the larger of `limit` and Redis's lag: a backlog that
 * large is alarming either way, and no gauge refresh reads more than `limit` entries.
 */
export async function undeliveredEntries(redis: Pick<Redis, 'xrange'>, stream: string, info: Map<string, unknown>, limit = UNDELIVERED_COUNT_LIMIT): Promise<number> {
  const reported = info.get('last-delivered-id');
  const lastDelivered = typeof reported === 'string' ? reported : '0-0';
  const after = await redis.xrange(stream, `(${lastDelivered}`, '+', 'COUNT', limit);
  if (after.length < limit) return after.length;
  const lag = info.get('lag');
  return Math.max(limit, lag === null || lag === undefined ? 0 : Number(lag));
}
