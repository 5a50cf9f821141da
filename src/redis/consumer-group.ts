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
