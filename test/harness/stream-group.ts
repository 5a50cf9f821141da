/** The consumer group as Redis reports it, for tests and the soak. */
import type { Redis } from 'ioredis';

/**
 * Events the group has not acknowledged: delivered but pending, plus not yet delivered
 * (lag); undefined before the group exists.
 */
export async function unacknowledgedEvents(redis: Redis, stream: string, group: string): Promise<number | undefined> {
  const groups = (await redis.xinfo('GROUPS', stream).catch(() => [])) as unknown[][];
  const g = groups.find((x) => x[1] === group);
  if (g === undefined) return undefined;
  const info = new Map<string, unknown>();
  for (let i = 0; i + 1 < g.length; i += 2) info.set(String(g[i]), g[i + 1]);
  return Number(info.get('pending')) + Number(info.get('lag') ?? Number.NaN);
}
