/**
 * Moves an install's keys from their old names (`edge-registrar:<namespace>:…`, `<stream>:dlq`)
 * to the names in the stream's hash slot (redis/keys.ts), once. The sync leader runs it at the
 * start of every term, before reading anything (cheap when there is nothing to move), and
 * `edge-registrar migrate-keys` runs it by hand. Under the Lease nothing else writes the state
 * meanwhile; an older daemon still leading writes the old names, and the next term moves them.
 *
 * Old names never worked on Redis Cluster (their scripts spanned slots), so there is nothing to
 * move there, and a cluster is not scanned. Each record moves in one script (the newer state by
 * stream id wins, and a tombstone keeps its remaining time to live), so a migration cut short
 * is finished by the next one, and nothing is lost: the indexes are rebuilt from the records.
 */
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { legacyKeys, type DaemonKeys } from '../redis/keys.ts';
import { NEWER_STREAM_ID_LUA } from '../util/stream-id.ts';
import { ATTEMPT_SET_LUA } from './attempt-log.ts';
import type { IndexRepair } from './state-store.ts';

const MOVE_RECORD = `
${NEWER_STREAM_ID_LUA}
local old = redis.call('HGETALL', KEYS[1])
if #old == 0 then return 0 end
local fields = {}
for i = 1, #old, 2 do fields[old[i]] = old[i + 1] end
local current = redis.call('HGET', KEYS[2], 'stream_id')
if not current or newer(fields['stream_id'] or '0-0', current) then
  -- The record it replaces gives up its index entries, as a commit's would.
  local replaced = redis.call('HMGET', KEYS[2], 'address', 'name')
  if replaced[1] and redis.call('HGET', KEYS[3], replaced[1]) == ARGV[1] then redis.call('HDEL', KEYS[3], replaced[1]) end
  if replaced[2] and redis.call('HGET', KEYS[4], replaced[2]) == ARGV[1] then redis.call('HDEL', KEYS[4], replaced[2]) end
  local ttl = redis.call('PTTL', KEYS[1])
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], unpack(old))
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
redis.call('DEL', KEYS[1])
local state = redis.call('HMGET', KEYS[2], 'state', 'name', 'address')
if state[1] == 'registered' then
  redis.call('HSETNX', KEYS[3], state[3], ARGV[1])
  redis.call('HSETNX', KEYS[4], state[2], ARGV[1])
  redis.call('SADD', KEYS[5], ARGV[1])
else
  redis.call('SREM', KEYS[5], ARGV[1])
end
return 1
`;

/** Old attempt sets join the new ones (attempt-log.ts's field format); old dead letters join the new stream (a rename when there is none yet). */
const MOVE_ATTEMPTS = `${ATTEMPT_SET_LUA}
local old = redis.call('HGETALL', KEYS[1])
for i = 1, #old, 2 do
  local open, ended = attempts_of(redis.call('HGET', KEYS[2], old[i]))
  local oldOpen, oldEnded = attempts_of(old[i + 1])
  for _, t in ipairs(oldOpen) do if t == '*' or not position_in(open, t) then open[#open + 1] = t end end
  for _, t in ipairs(oldEnded) do if not position_in(ended, t) then ended[#ended + 1] = t end end
  redis.call('HSET', KEYS[2], old[i], attempts_text(open, ended))
end
redis.call('DEL', KEYS[1])
return #old / 2
`;

export interface MigrationReport {
  records: number;
  deadLetters: number;
  attempts: number;
  /** Index entries the check after the move repaired (the indexes end as a function of the records). */
  indexesRepaired: number;
}

export interface MigrationOptions {
  stream: string;
  namespace: string;
  keys: DaemonKeys;
  /** Redis Cluster: nothing was ever stored under the old names. */
  cluster: boolean;
  logger: Logger;
  /** The state's indexes made a function of every record (StateStore.repairIndexes with a SCAN of the records); run after records moved. */
  repairIndexes: () => Promise<IndexRepair>;
}

/**
 * Moves what is under the old names. A user whose ACL reaches neither SCAN nor the old names
 * (an install that started after the move, with the ACL in docs/operating.md) has nothing to move: the
 * NOPERM is logged once and the daemon goes on.
 */
export async function migrateLegacyKeys(redis: Redis, options: MigrationOptions): Promise<MigrationReport> {
  try {
    return await migrate(redis, options);
  } catch (error) {
    if (!(error instanceof Error && error.message.startsWith('NOPERM'))) throw error;
    if (!warnedNoPermission) options.logger.warn({ err: error }, 'cannot look for keys under their old names with this Redis user; if this install predates the move, run edge-registrar migrate-keys with a user that may');
    warnedNoPermission = true;
    return { records: 0, deadLetters: 0, attempts: 0, indexesRepaired: 0 };
  }
}

let warnedNoPermission = false;

async function migrate(redis: Redis, options: MigrationOptions): Promise<MigrationReport> {
  const report: MigrationReport = { records: 0, deadLetters: 0, attempts: 0, indexesRepaired: 0 };
  if (options.cluster) return report;
  const { keys } = options;
  const legacy = legacyKeys(options.stream, options.namespace);
  const recordPrefix = `${legacy.statePrefix}vps:`;
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `${recordPrefix}*`, 'COUNT', 500);
    cursor = next;
    for (const oldKey of found) {
      const vpsId = oldKey.slice(recordPrefix.length);
      report.records += (await redis.eval(MOVE_RECORD, 5, oldKey, keys.vps(vpsId), keys.addresses, keys.names, keys.registered, vpsId)) as number;
    }
  } while (cursor !== '0');
  report.attempts = (await redis.eval(MOVE_ATTEMPTS, 2, `${legacy.statePrefix}attempts`, keys.attempts)) as number;
  // The old indexes are rebuilt from the records above; what is left of them is stale.
  await redis.del(`${legacy.statePrefix}addresses`, `${legacy.statePrefix}names`, `${legacy.statePrefix}registered`);
  report.deadLetters = await moveDeadLetters(redis, legacy.deadLetters, keys.deadLetters);
  // A legacy record that replaced a newer-named one, or two records claiming one address: each
  // script above kept its own record's entries right, and this makes the whole agree.
  if (report.records > 0) report.indexesRepaired = (await options.repairIndexes()).repaired;
  if (report.records + report.deadLetters + report.attempts > 0) {
    options.logger.info({ ...report, from: [legacy.statePrefix, legacy.deadLetters], to: [keys.statePrefix, keys.deadLetters] }, 'moved the state and the dead letters to their keys in the stream\'s hash slot');
  }
  return report;
}

/**
 * Up to 500 of the oldest old letters appended to the new stream and removed from the old one,
 * in one script: a migration cut short between pages neither loses nor repeats a letter.
 */
const MOVE_LETTERS = `
local page = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 500)
for _, entry in ipairs(page) do
  redis.call('XADD', KEYS[2], '*', unpack(entry[2]))
  redis.call('XDEL', KEYS[1], entry[1])
end
if redis.call('XLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[1]) end
return #page
`;

async function moveDeadLetters(redis: Redis, from: string, to: string): Promise<number> {
  const count = await redis.xlen(from);
  if (count === 0) return 0;
  if ((await redis.exists(to)) === 0) {
    await redis.rename(from, to);
    return count;
  }
  // Both exist: the old letters are added after the new ones (new ids: the replay command takes those).
  let moved = 0;
  for (;;) {
    const page = (await redis.eval(MOVE_LETTERS, 2, from, to)) as number;
    if (page === 0) return moved;
    moved += page;
  }
}
