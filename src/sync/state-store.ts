/**
 * The desired state, in Redis: which VPSs are registered, with what, and the stream id of
 * the event that produced each state. Retired VPSs keep a tombstone (with a TTL) so a late
 * register older than the retire cannot resurrect them. Every change is committed by one
 * Lua script together with the XACK of the event, so state and acknowledgement never
 * disagree, and a stale event (older than the stored state) changes nothing.
 *
 * Keys (redis/keys.ts), all in the stream's hash slot, under the namespace's own prefix
 * `{<stream>}:edge-registrar:<namespace>:`:
 *   vps:<vps_id>   hash: state, name, address, country, labels, stream_id, updated_at
 *   addresses      hash: canonical address -> vps_id (registered only)
 *   names          hash: entry name -> vps_id (registered only)
 *   registered     set of registered vps_ids
 *   attempts       hash: stream id -> attempts at it that never ended (attempt-log.ts)
 * The commit settles the event too (its outcome record, acknowledge.ts), in the same script.
 */
import type { Redis } from 'ioredis';
import type { DaemonKeys } from '../redis/keys.ts';
import { SETTLE_LUA, type SettlementKeys } from './acknowledge.ts';
import type { Holding } from './ordering.ts';
import { outcomeFields, type OutcomeRecord, type OutcomeStream } from './outcome.ts';
import { NEWER_STREAM_ID_LUA } from '../util/stream-id.ts';

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

const COMMIT = `${SETTLE_LUA}
${NEWER_STREAM_ID_LUA}
local vpsKey, addrKey, namesKey, regKey, stream, attempts, outcomes = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local group, id, vps, state = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local outcomeMax = ARGV[11]
local outcome = {}
for i = 12, #ARGV do outcome[#outcome + 1] = ARGV[i] end
local current = redis.call('HGET', vpsKey, 'stream_id')
if current and not newer(id, current) then
  -- A newer state is stored: this event is superseded, and settles as such.
  local reason = 'the state of a newer event (' .. current .. ') was stored first'
  local hasReason = false
  for i = 1, #outcome, 2 do
    if outcome[i] == 'outcome' then outcome[i + 1] = 'superseded' end
    if outcome[i] == 'reason' then outcome[i + 1] = reason; hasReason = true end
  end
  if not hasReason then
    outcome[#outcome + 1] = 'reason'
    outcome[#outcome + 1] = reason
  end
  if id ~= '0-0' then settle(stream, group, id, attempts, outcomes, outcomeMax, outcome) end
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
-- settle() removes the event's attempt count with its ack (a repair, id 0-0, has neither).
if id ~= '0-0' then settle(stream, group, id, attempts, outcomes, outcomeMax, outcome) end
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

export interface StateStoreOptions {
  keys: DaemonKeys;
  group: string;
  tombstoneTtlSeconds: number;
  /** The outcome stream is trimmed to about this many records. */
  outcomeMaxLength: number;
}

export class StateStore {
  readonly #redis: Redis;
  readonly #keys: DaemonKeys;
  readonly #group: string;
  readonly #tombstoneTtlSeconds: number;
  readonly #outcomeMaxLength: number;

  constructor(redis: Redis, options: StateStoreOptions) {
    this.#redis = redis;
    this.#keys = options.keys;
    this.#group = options.group;
    this.#tombstoneTtlSeconds = options.tombstoneTtlSeconds;
    this.#outcomeMaxLength = options.outcomeMaxLength;
    redis.defineCommand('edgeRegistrarCommit', { numberOfKeys: 7, lua: COMMIT });
  }

  get keys(): DaemonKeys {
    return this.#keys;
  }

  get outcomes(): OutcomeStream {
    return { key: this.#keys.outcomes, maxLength: this.#outcomeMaxLength };
  }

  /** What settling an event of this stream touches (acknowledge.ts, dead-letter.ts). */
  get settlement(): SettlementKeys {
    return { stream: this.#keys.stream, group: this.#group, attempts: this.#keys.attempts, outcomes: this.outcomes };
  }

  /** The hash of attempts that never ended, per stream id (attempt-log.ts); a commit removes the event's. */
  get attemptsKey(): string {
    return this.#keys.attempts;
  }

  async get(vpsId: string): Promise<VpsRecord | undefined> {
    const h = await this.#redis.hgetall(this.#keys.vps(vpsId));
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
    for (const id of vpsIds) pipeline.hmget(this.#keys.vps(id), 'state', 'name', 'address');
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
    return (await this.#redis.hget(this.#keys.addresses, address)) ?? undefined;
  }

  async holderOfName(name: string): Promise<string | undefined> {
    return (await this.#redis.hget(this.#keys.names, name)) ?? undefined;
  }

  /**
   * Every registered VPS's record. A corrupt record is passed to `onCorrupt` and left out, so
   * one damaged record cannot stop the resync (or the fleet metrics) for every other VPS; the
   * events of that VPS still fail, and are dead-lettered after --max-attempts.
   */
  async registered(onCorrupt: (error: CorruptRecordError) => void = () => undefined): Promise<VpsRecord[]> {
    const ids = await this.#redis.smembers(this.#keys.registered);
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

  /**
   * Records the new state and settles the event with `outcome`, atomically; 'stale' when a
   * newer state is stored (the event then settles as superseded).
   */
  async commit(record: VpsRecord, outcome: OutcomeRecord): Promise<CommitResult> {
    const redis = this.#redis as Redis & { edgeRegistrarCommit(...args: string[]): Promise<string> };
    const result = await redis.edgeRegistrarCommit(
      this.#keys.vps(record.vpsId),
      this.#keys.addresses,
      this.#keys.names,
      this.#keys.registered,
      this.#keys.stream,
      this.#keys.attempts,
      this.#keys.outcomes,
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
      String(this.#outcomeMaxLength),
      ...outcomeFields(outcome),
    );
    return result === 'stale' ? 'stale' : 'ok';
  }
}
