/**
 * The desired state, in Redis: which VPSs are registered, with what, and the stream id of
 * the event that produced each state. Retired VPSs keep a tombstone (with a TTL) so a late
 * register older than the retire cannot resurrect them. Every change is committed by one
 * Lua script together with the XACK of the event, so state and acknowledgement never
 * disagree, and a stale event (older than the stored state) changes nothing.
 *
 * Keys, all under `<prefix>` (the namespace's own):
 *   vps:<vps_id>   hash: state, name, address, country, labels, stream_id, updated_at
 *   addresses      hash: canonical address -> vps_id (registered only)
 *   names          hash: entry name -> vps_id (registered only)
 *   registered     set of registered vps_ids
 * Multi-key scripts need Redis standalone or Sentinel (not Redis Cluster).
 */
import type { Redis } from 'ioredis';
import type { Holding } from './ordering.ts';

/** Where the daemon keeps its state for a managed namespace. */
export function stateKeyPrefix(namespace: string): string {
  return `edge-registrar:${namespace}:`;
}

export interface VpsRecord {
  vpsId: string;
  state: 'registered' | 'retired';
  name: string;
  address: string;
  country: string;
  labels: Record<string, string>;
  streamId: string;
  updatedAt: string;
}

const COMMIT = `
local function newer(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  if am ~= bm then return am > bm end
  return as > bs
end
local vpsKey, addrKey, namesKey, regKey, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, id, vps, state = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local current = redis.call('HGET', vpsKey, 'stream_id')
if current and not newer(id, current) then
  redis.call('XACK', stream, group, id)
  return 'stale'
end
local oldAddr = redis.call('HGET', vpsKey, 'address')
local oldName = redis.call('HGET', vpsKey, 'name')
if oldAddr and redis.call('HGET', addrKey, oldAddr) == vps then redis.call('HDEL', addrKey, oldAddr) end
if oldName and redis.call('HGET', namesKey, oldName) == vps then redis.call('HDEL', namesKey, oldName) end
redis.call('DEL', vpsKey)
redis.call('HSET', vpsKey, 'state', state, 'stream_id', id, 'name', ARGV[5], 'address', ARGV[6],
  'country', ARGV[7], 'labels', ARGV[8], 'updated_at', ARGV[9])
if state == 'registered' then
  redis.call('HSET', addrKey, ARGV[6], vps)
  redis.call('HSET', namesKey, ARGV[5], vps)
  redis.call('SADD', regKey, vps)
else
  redis.call('SREM', regKey, vps)
  redis.call('EXPIRE', vpsKey, tonumber(ARGV[10]))
end
if id ~= '0-0' then redis.call('XACK', stream, group, id) end
return 'ok'
`;

export type CommitResult = 'ok' | 'stale';

/** A state record that cannot be read (edited by hand, written by a broken version). */
export class CorruptRecordError extends Error {
  override name = 'CorruptRecordError';
  readonly vpsId: string;
  constructor(vpsId: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.vpsId = vpsId;
  }
}

function parseLabels(vpsId: string, text: string): Record<string, string> {
  try {
    return JSON.parse(text) as Record<string, string>;
  } catch (error) {
    throw new CorruptRecordError(vpsId, `the state record of VPS ${vpsId} is corrupt: labels ${JSON.stringify(text.slice(0, 120))} is not JSON`, { cause: error });
  }
}

export class StateStore {
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #stream: string;
  readonly #group: string;
  readonly #tombstoneTtlSeconds: number;

  constructor(redis: Redis, options: { prefix: string; stream: string; group: string; tombstoneTtlSeconds: number }) {
    this.#redis = redis;
    this.#prefix = options.prefix;
    this.#stream = options.stream;
    this.#group = options.group;
    this.#tombstoneTtlSeconds = options.tombstoneTtlSeconds;
    redis.defineCommand('edgeRegistrarCommit', { numberOfKeys: 5, lua: COMMIT });
  }

  #key(suffix: string): string {
    return `${this.#prefix}${suffix}`;
  }

  async get(vpsId: string): Promise<VpsRecord | undefined> {
    const h = await this.#redis.hgetall(this.#key(`vps:${vpsId}`));
    if (h.state === undefined) return undefined;
    return {
      vpsId,
      state: h.state === 'registered' ? 'registered' : 'retired',
      name: h.name ?? '',
      address: h.address ?? '',
      country: h.country ?? '',
      labels: h.labels ? parseLabels(vpsId, h.labels) : {},
      streamId: h.stream_id ?? '0-0',
      updatedAt: h.updated_at ?? '',
    };
  }

  /**
   * The name and address each of these VPSs holds, for those registered: one round trip.
   * Only what the ordering needs, so a damaged record elsewhere cannot fail it.
   */
  async holdings(vpsIds: readonly string[]): Promise<Map<string, Holding>> {
    const held = new Map<string, Holding>();
    if (vpsIds.length === 0) return held;
    const pipeline = this.#redis.pipeline();
    for (const id of vpsIds) pipeline.hmget(this.#key(`vps:${id}`), 'state', 'name', 'address');
    const replies = (await pipeline.exec()) ?? [];
    replies.forEach(([error, fields], i) => {
      if (error !== null) throw error;
      const [state, name, address] = fields as (string | null)[];
      if (state === 'registered') held.set(vpsIds[i] as string, { name: name ?? '', address: address ?? '' });
    });
    return held;
  }

  /** The registered VPS holding an address or a name, if any. */
  async holderOfAddress(address: string): Promise<string | undefined> {
    return (await this.#redis.hget(this.#key('addresses'), address)) ?? undefined;
  }

  async holderOfName(name: string): Promise<string | undefined> {
    return (await this.#redis.hget(this.#key('names'), name)) ?? undefined;
  }

  /**
   * Every registered VPS's record. A corrupt record is passed to `onCorrupt` and left out, so
   * one damaged record cannot stop the resync (or the fleet metrics) for every other VPS; the
   * events of that VPS still fail, and are dead-lettered after --max-attempts.
   */
  async registered(onCorrupt: (error: CorruptRecordError) => void = () => undefined): Promise<VpsRecord[]> {
    const ids = await this.#redis.smembers(this.#key('registered'));
    const records = await Promise.all(
      ids.map((id) =>
        this.get(id).catch((error: unknown) => {
          if (!(error instanceof CorruptRecordError)) throw error;
          onCorrupt(error);
          return undefined;
        }),
      ),
    );
    return records.filter((r): r is VpsRecord => r?.state === 'registered');
  }

  /** Records the new state and acknowledges the event, atomically; 'stale' when a newer state is stored. */
  async commit(record: VpsRecord): Promise<CommitResult> {
    const redis = this.#redis as Redis & { edgeRegistrarCommit(...args: string[]): Promise<string> };
    const result = await redis.edgeRegistrarCommit(
      this.#key(`vps:${record.vpsId}`),
      this.#key('addresses'),
      this.#key('names'),
      this.#key('registered'),
      this.#stream,
      this.#group,
      record.streamId,
      record.vpsId,
      record.state,
      record.name,
      record.address,
      record.country,
      JSON.stringify(record.labels),
      record.updatedAt,
      String(this.#tombstoneTtlSeconds),
    );
    return result === 'stale' ? 'stale' : 'ok';
  }
}
