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
import type { Cluster, Redis } from 'ioredis';
import { slotOwner } from '../redis/cluster-slot.ts';
import type { DaemonKeys } from '../redis/keys.ts';
import { SETTLE_LUA, type SettlementKeys } from './acknowledge.ts';
import type { Holding } from './ordering.ts';
import { outcomeFields, type OutcomeRecord, type OutcomeStream } from './outcome.ts';
import { NEWER_STREAM_ID_LUA } from '../util/stream-id.ts';
import { fieldsToRecord } from './event.ts';

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
if current == id and id ~= '0-0' then
  local stored = redis.call('HMGET', vpsKey, 'state', 'name', 'address')
  if stored[1] == state and stored[2] == ARGV[5] and stored[3] == ARGV[6] then
    -- This very commit ran before (ioredis re-sent it after a reconnect, or the daemon sent it
    -- again after its reply timed out): the state is this event's, and it settled then. Settle
    -- again (acknowledging nothing, recording nothing) and say so, not 'superseded'.
    settle(stream, group, id, attempts, outcomes, outcomeMax, outcome)
    return 'again'
  end
end
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

/** 'again': this very commit had run before (a re-sent or retried command); its effect and outcome stand. */
export type CommitResult = 'ok' | 'again' | 'stale';

/**
 * Makes one index entry (`addresses` or `names`, ARGV[1] the record field it mirrors) agree with
 * the records, atomically: the entry for ARGV[2] names the VPS whose registered record holds that
 * value, or nothing. ARGV[3] is a VPS whose record is believed to hold it; ARGV[4] the records'
 * key prefix (every record is in the stream's slot, as the index is). Returns 1 when it changed
 * the entry, 0 when it was right, -1 when two registered records hold the value (left as it is).
 */
const FIX_INDEX_ENTRY = `
local function holds(vps)
  if not vps then return false end
  local r = redis.call('HMGET', ARGV[4] .. vps, 'state', ARGV[1])
  return r[1] == 'registered' and r[2] == ARGV[2]
end
local holder = redis.call('HGET', KEYS[1], ARGV[2])
if holder and holds(holder) then
  if ARGV[3] ~= '' and ARGV[3] ~= holder and holds(ARGV[3]) then return -1 end
  return 0
end
if ARGV[3] ~= '' and holds(ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  return 1
end
if holder then
  redis.call('HDEL', KEYS[1], ARGV[2])
  return 1
end
return 0
`;

/** Makes the registered set (KEYS[1]) agree with VPS ARGV[1]'s record (KEYS[2]). Returns 1 when it changed it. */
const FIX_REGISTERED = `
local registered = redis.call('HGET', KEYS[2], 'state') == 'registered'
if registered then return redis.call('SADD', KEYS[1], ARGV[1]) end
return redis.call('SREM', KEYS[1], ARGV[1])
`;

/** What an index check found and did (StateStore.repairIndexes). */
export interface IndexRepair {
  /** Index entries and set members changed to agree with the records. */
  repaired: number;
  /** Values two registered records hold at once (the records disagree; left as they are, and logged). */
  conflicts: string[];
}

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
    return result === 'stale' || result === 'again' ? result : 'ok';
  }

  /**
   * The ids of every VPS with a record. SCAN over the record keys' prefix, on the node that
   * holds the stream's slot (where every key of the daemon is, Redis Cluster or not).
   */
  async #recordIds(): Promise<string[]> {
    const prefix = this.#keys.vps('');
    const cluster = this.#redis as unknown as Partial<Cluster>;
    let node: Redis = this.#redis;
    if (typeof cluster.nodes === 'function') {
      const owner = await slotOwner(this.#redis, this.#keys.stream, 'current');
      const found = cluster.nodes('master').find((n) => n.options.port === owner.port && n.options.host === owner.host);
      if (found === undefined) throw new Error(`no connection to the node serving ${this.#keys.stream}'s slot (${owner.host}:${owner.port})`);
      node = found;
    }
    const ids: string[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`, 'COUNT', 1_000);
      cursor = next;
      for (const key of keys) ids.push(key.slice(prefix.length));
    } while (cursor !== '0');
    return ids;
  }

  /**
   * Makes the address and name indexes and the registered set a function of the records: every
   * registered record's address and name point at its VPS, nothing else does, and the set holds
   * exactly the registered VPSs. Whatever made them disagree (a migration of older keys, a record
   * edited by hand, a bug), each disagreement is repaired by a script that re-checks the records
   * it touches, so a commit running meanwhile is never undone.
   */
  async repairIndexes(options: { dryRun?: boolean; scanRecords?: boolean } = {}): Promise<IndexRepair> {
    const result: IndexRepair = { repaired: 0, conflicts: [] };
    const [addresses, names, registered] = await Promise.all([this.#redis.hgetall(this.#keys.addresses), this.#redis.hgetall(this.#keys.names), this.#redis.smembers(this.#keys.registered)]);
    // The records that matter: every one the indexes or the set name. A registered record none
    // of them names can only come from a hand edit or a migration, which asks for a SCAN of
    // every record (scanRecords) instead; the periodic check does not walk the keyspace.
    const ids = options.scanRecords === true ? await this.#recordIds() : [...new Set([...registered, ...Object.values(addresses), ...Object.values(names)])];
    const records = new Map<string, { state: string | null; name: string | null; address: string | null }>();
    for (let i = 0; i < ids.length; i += 500) {
      const page = ids.slice(i, i + 500);
      const pipeline = this.#redis.pipeline();
      for (const id of page) pipeline.hmget(this.#keys.vps(id), 'state', 'name', 'address');
      const replies = (await pipeline.exec()) ?? [];
      replies.forEach(([error, fields], j) => {
        if (error !== null) throw error;
        const [state = null, name = null, address = null] = fields as (string | null)[];
        records.set(page[j] as string, { state, name, address });
      });
    }
    // Every value an index should hold (from the records) or does hold (from the index): each is checked once.
    const check = async (index: string, field: 'address' | 'name', actual: Record<string, string>): Promise<void> => {
      const believed = new Map<string, string>();
      for (const [id, r] of records) if (r.state === 'registered' && r[field] !== null) believed.set(r[field], id);
      for (const value of new Set([...believed.keys(), ...Object.keys(actual)])) {
        const candidate = believed.get(value) ?? '';
        if (actual[value] !== undefined && actual[value] === candidate) continue;
        if (options.dryRun === true) {
          result.repaired++;
          continue;
        }
        const changed = (await this.#redis.eval(FIX_INDEX_ENTRY, 1, index, field, value, candidate, this.#keys.vps(''))) as number;
        if (changed === 1) result.repaired++;
        if (changed === -1) result.conflicts.push(`${field} ${value}`);
      }
    };
    await check(this.#keys.addresses, 'address', addresses);
    await check(this.#keys.names, 'name', names);
    const inSet = new Set(registered);
    for (const id of new Set([...inSet, ...[...records].filter(([, r]) => r.state === 'registered').map(([id]) => id)])) {
      if (inSet.has(id) === (records.get(id)?.state === 'registered')) continue;
      if (options.dryRun === true) {
        result.repaired++;
        continue;
      }
      result.repaired += (await this.#redis.eval(FIX_REGISTERED, 2, this.#keys.registered, this.#keys.vps(id), id)) as number;
    }
    return result;
  }

  /** The outcome recorded for event `sourceId`, looked for among the newest `limit` records. */
  async outcomeOf(sourceId: string, limit = 1_000): Promise<OutcomeRecord | undefined> {
    const rows = (await this.#redis.xrevrange(this.#keys.outcomes, '+', '-', 'COUNT', limit)) as [string, string[]][];
    for (const [, raw] of rows) {
      const record = fieldsToRecord(raw);
      if (record.source_id === sourceId) return record as unknown as OutcomeRecord;
    }
    return undefined;
  }
}
