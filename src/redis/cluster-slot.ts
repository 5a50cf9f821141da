/**
 * Redis Cluster's hash slots, as the cluster computes them (CRC16 of the key, or of its hash
 * tag, modulo 16384; the same library ioredis routes with), and the node that serves a key's
 * slot now, from the Cluster client's slot map.
 */
import calculateSlot from 'cluster-key-slot';
import type { Cluster, Redis } from 'ioredis';

export function hashSlot(key: string): number {
  return calculateSlot(key);
}

/**
 * The primary serving `key`'s slot, from `client`'s slot map (a Cluster handed out as a Redis,
 * see connection.ts). 'stale' refreshes the map first: after a redirection or a node that
 * would not connect, the map is known to be behind.
 */
export async function slotOwner(client: Redis, key: string, knowledge: 'current' | 'stale'): Promise<{ host: string; port: number }> {
  const cluster = client as unknown as Cluster;
  if (knowledge === 'stale') {
    await new Promise<void>((resolve) => {
      cluster.refreshSlotsCache(() => {
        resolve();
      });
    });
  }
  const primary = cluster.slots[hashSlot(key)]?.[0];
  if (primary === undefined) throw new Error(`no Redis Cluster node serves the hash slot of ${key} (${String(hashSlot(key))}) yet`);
  const colon = primary.lastIndexOf(':');
  return { host: primary.slice(0, colon), port: Number(primary.slice(colon + 1)) };
}
