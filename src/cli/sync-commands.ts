/** `sync`, `publish`, `backfill` and `dlq`: the sync daemon and the tools around its stream. */
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import { namespaceOf } from '../config/common.ts';
import { eventCheckConfig, publishEventConfig, type EventCheckConfig, type EventCheckFlags, type PublishEventFlags } from '../config/publish.ts';
import { publishConfig, redisFlagsToPrint, type RedisFlags } from '../config/redis.ts';
import { loadPolicy } from '../policy-source.ts';
import { outcomeStreamEnd, waitForOutcome, type StoredOutcome } from '../sync/outcome-reader.ts';
import type { OutcomeKind } from '../sync/outcome.ts';
import type { PlanContext } from '../sync/planner.ts';
import { syncConfig, type SyncFlags } from '../config/sync.ts';
import { withRedis } from '../redis/connection.ts';
import { formatOf, planBackfill } from '../sync/backfill.ts';
import { daemonKeys, deadLetterStream } from '../redis/keys.ts';
import { migrateLegacyKeys } from '../sync/migrate-keys.ts';
import { findDeadLetter, originalFields } from '../sync/dead-letter.ts';
import { fieldsToRecord } from '../sync/event.ts';
import { eventFields, publish, publishMany } from '../sync/publisher.ts';
import { runSync } from '../sync/run.ts';
import { StateStore } from '../sync/state-store.ts';
import { createLogger } from '../observability/logger.ts';
import { redactUrlCredentials } from '../util/redact.ts';
import { shellQuote } from '../util/shell-quote.ts';
import { exitAfterStop, runUntilSignal } from './run-until-signal.ts';

export async function runSyncCommand(flags: SyncFlags): Promise<void> {
  const config = syncConfig(flags, process.env, `${hostname()}-${process.pid}`);
  const logger = createLogger(config.logLevel, 'sync');
  const running = await runSync(config, logger);
  // The daemon bounds its own stop by shutdownTimeoutMs; this is the backstop past it.
  await runUntilSignal(running, logger, { stopDeadlineMs: config.shutdownTimeoutMs + 5_000 });
  await exitAfterStop(logger);
}

async function withStream<T>(flags: RedisFlags, use: (redis: Redis, stream: string) => Promise<T>): Promise<T> {
  const config = publishConfig(flags, process.env);
  return withRedis(config.redis, {}, (redis) => use(redis, config.stream));
}

export interface PublishFlags extends RedisFlags, PublishEventFlags {
  vpsId?: string;
  name?: string;
  address?: string;
  country?: string;
  label?: string[];
  occurredAt?: string;
}

/**
 * How `publish` exits. 0: published (and, with --wait, the event took effect or had nothing to
 * do); 2: nothing published, the event is refused (a usage error, the contract or a rule).
 * With --wait, each outcome that is not an effect has its own code, and so does giving up.
 */
export const PUBLISH_EXIT_CODES = { applied: 0, deleted: 0, unchanged: 0, 'dead-lettered': 3, superseded: 4, trimmed: 5, timeout: 6 } as const satisfies Record<OutcomeKind | 'timeout', number>;

/** The content rules' context for `publish` and `backfill` (undefined with --no-check). */
async function rulesContext(config: EventCheckConfig): Promise<PlanContext | undefined> {
  if (!config.rules) return undefined;
  return { policy: await loadPolicy(config.policyPath), namespace: config.namespace, istioApiVersion: 'v1' };
}

/** One line about an outcome, for a person; the dead letter's commands for a dead-lettered one. */
function describeOutcome(outcome: StoredOutcome, flags: RedisFlags): string {
  const details = [outcome.name !== undefined ? `entry ${outcome.name}` : undefined, outcome.rule !== undefined && outcome.reason?.startsWith(`[${outcome.rule}]`) !== true ? `[${outcome.rule}]` : undefined, outcome.reason].filter((d) => d !== undefined);
  const lines = [`${outcome.outcome}${details.length > 0 ? `: ${details.join(' ')}` : ''}`];
  if (outcome.dlq_id !== undefined) lines.push(`dead letter ${outcome.dlq_id}: edge-registrar dlq show ${outcome.dlq_id}${redisFlagsToPrint(flags)}`);
  return lines.join('\n');
}

export async function runPublish(event: string, flags: PublishFlags): Promise<void> {
  const labels: Record<string, string> = {};
  for (const pair of flags.label ?? []) {
    const [k, ...v] = pair.split('=');
    if (k === undefined || k === '' || v.length === 0) {
      console.error(`edge-registrar publish: --label ${JSON.stringify(pair)}: expected KEY=VALUE`);
      process.exitCode = 2;
      return;
    }
    labels[k] = v.join('=');
  }
  const options = publishEventConfig(flags, process.env);
  const input = {
    event,
    vps_id: flags.vpsId,
    name: flags.name,
    address: flags.address,
    country: flags.country,
    labels: Object.keys(labels).length > 0 ? labels : undefined,
    occurred_at: flags.occurredAt,
  };
  const fields = eventFields(input, await rulesContext(options));
  if (!fields.ok) {
    // One violation a line, as kubectl shows the webhook's denial.
    console.error(`edge-registrar publish ${event}: refused, nothing published (${fields.rule}):\n  ${fields.message.split(/; (?=\[)/).join('\n  ')}`);
    process.exitCode = 2;
    return;
  }
  const config = publishConfig(flags, process.env);
  const outcomes = daemonKeys(config.stream, options.namespace, config.outcomeStream).outcomes;
  await withRedis(config.redis, {}, async (redis) => {
    // Where the outcome stream ends before the event exists: its outcome comes after that.
    const end = options.waitMs === undefined ? undefined : await outcomeStreamEnd(redis, outcomes);
    const id = await publish(redis, config.stream, fields.fields);
    console.log(id);
    if (end === undefined || options.waitMs === undefined) return;
    const outcome = await waitForOutcome(redis, outcomes, id, end, options.waitMs);
    if (outcome === undefined) {
      console.error(`no outcome for ${id} on ${outcomes} within ${options.waitMs / 1000} s (--wait-timeout): is a sync daemon consuming ${config.stream}? The event stays on the stream and will be applied when one does.`);
      process.exitCode = PUBLISH_EXIT_CODES.timeout;
      return;
    }
    console.log(describeOutcome(outcome, flags));
    process.exitCode = PUBLISH_EXIT_CODES[outcome.outcome];
  });
}

/** A fleet list is a few hundred KB; a server that has not sent it in this long will not. */
const DEFAULT_FETCH_TIMEOUT_SECONDS = 30;

export async function runBackfill(flags: RedisFlags & EventCheckFlags & { from: string; dryRun?: boolean; timeout?: string }): Promise<void> {
  const rules = await rulesContext(eventCheckConfig(flags, process.env));
  let text: string;
  let contentType: string | undefined;
  if (/^https?:\/\//.test(flags.from)) {
    const seconds = flags.timeout === undefined ? DEFAULT_FETCH_TIMEOUT_SECONDS : Number(flags.timeout);
    if (!Number.isFinite(seconds) || seconds <= 0) throw new Error(`--timeout: ${JSON.stringify(flags.timeout)} is not a positive number of seconds`);
    // The deadline covers the whole exchange, body included.
    const signal = AbortSignal.timeout(seconds * 1000);
    try {
      // fetch refuses a URL with credentials in it: they go in an Authorization header.
      const url = new URL(flags.from);
      const headers: Record<string, string> = { accept: 'application/json, text/csv' };
      if (url.username !== '' || url.password !== '') {
        headers.authorization = `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64')}`;
        url.username = '';
        url.password = '';
      }
      const res = await fetch(url, { headers, signal });
      if (!res.ok) throw new Error(`--from ${redactUrlCredentials(flags.from)}: HTTP ${res.status}`);
      contentType = res.headers.get('content-type') ?? undefined;
      text = await res.text();
    } catch (error) {
      if (signal.aborted) throw new Error(`--from ${redactUrlCredentials(flags.from)}: no complete answer within ${seconds} s (--timeout)`, { cause: error });
      throw error;
    }
  } else {
    text = await readFile(flags.from, 'utf8');
  }
  const plan = planBackfill(text, formatOf(flags.from, contentType), rules);
  if (plan.errors.length > 0) {
    for (const e of plan.errors) console.error(`${redactUrlCredentials(flags.from)}: ${e}`);
    console.error(`edge-registrar backfill: ${plan.errors.length} invalid row(s); nothing published`);
    process.exitCode = 2;
    return;
  }
  if (flags.dryRun === true) {
    for (const fields of plan.events) console.log(`XADD <stream> * ${fields.map(shellQuote).join(' ')}`);
    console.error(`dry run: ${plan.events.length} register event(s) would be published`);
    return;
  }
  const ids = await withStream(flags, (redis, stream) => publishMany(redis, stream, plan.events));
  console.error(`published ${ids.length} register event(s) (${ids[0] ?? '-'} .. ${ids[ids.length - 1] ?? '-'})`);
}

type DlqEntry = [string, string[]];

export async function runDlqList(flags: RedisFlags & { count?: string }): Promise<void> {
  await withStream(flags, async (redis, stream) => {
    const entries = (await redis.xrange(deadLetterStream(stream), '-', '+', 'COUNT', Number(flags.count ?? 100))) as DlqEntry[];
    for (const [id, raw] of entries) {
      const f = fieldsToRecord(raw);
      console.log(`${id}  ${f.dlq_at ?? ''}  ${f.dlq_rule ?? ''}  ${f.event ?? '(no event)'} vps_id=${f.vps_id ?? '-'} name=${f.name ?? '-'}  ${f.dlq_reason ?? ''}`);
    }
    if (entries.length === 0) console.error('the dead-letter stream is empty');
  });
}

/** What to say when neither a letter nor an event has the id given. */
function noLetter(id: string, dlq: string): string {
  return `no dead letter in ${dlq} has the id ${id}, and none was made from an event with that id (an outcome's source_id or dlq_id both work); edge-registrar dlq list shows the letters there are`;
}

export async function runDlqShow(id: string, flags: RedisFlags): Promise<void> {
  await withStream(flags, async (redis, stream) => {
    const entry = await findDeadLetter(redis, deadLetterStream(stream), id);
    if (entry === undefined) {
      console.error(noLetter(id, deadLetterStream(stream)));
      process.exitCode = 1;
      return;
    }
    console.log(JSON.stringify({ id: entry[0], ...fieldsToRecord(entry[1]) }, null, 2));
  });
}

/** `dlq replay` and `dlq purge` take exactly one of an ID and --all; anything else is a usage error. */
function oneIdOrAll(command: string, id: string | undefined, all: boolean | undefined): boolean {
  if ((id === undefined) !== (all !== true)) return true;
  console.error(`edge-registrar dlq ${command}: give one ID or --all`);
  process.exitCode = 2;
  return false;
}

/** Puts dead-lettered events back on the stream (after the producer or the policy was fixed). */
export async function runDlqReplay(id: string | undefined, flags: RedisFlags & { all?: boolean }): Promise<void> {
  if (!oneIdOrAll('replay', id, flags.all)) return;
  await withStream(flags, async (redis, stream) => {
    const dlq = deadLetterStream(stream);
    const one = id === undefined ? undefined : await findDeadLetter(redis, dlq, id);
    const entries = id !== undefined ? (one === undefined ? [] : [one]) : ((await redis.xrange(dlq, '-', '+')) as DlqEntry[]);
    if (entries.length === 0) {
      console.error(id !== undefined ? noLetter(id, dlq) : 'the dead-letter stream is empty');
      process.exitCode = id !== undefined ? 1 : 0;
      return;
    }
    for (const [dlqId, raw] of entries) {
      const fields = Object.entries(originalFields(fieldsToRecord(raw))).flat();
      const results = await redis.multi().xadd(stream, '*', ...fields).xdel(dlq, dlqId).exec();
      console.log(`${dlqId} -> ${String(results?.[0]?.[1])}`);
    }
  });
}

export async function runDlqPurge(id: string | undefined, flags: RedisFlags & { all?: boolean }): Promise<void> {
  if (!oneIdOrAll('purge', id, flags.all)) return;
  await withStream(flags, async (redis, stream) => {
    const removed = id !== undefined ? await redis.xdel(deadLetterStream(stream), id) : await redis.del(deadLetterStream(stream));
    console.error(`purged ${removed} entr${removed === 1 ? 'y' : 'ies'}`);
  });
}

/** Moves an install's keys from their old names into the stream's hash slot (the sync leader also does it at the start of every term). */
export async function runMigrateKeys(flags: RedisFlags & { namespace?: string }): Promise<void> {
  const config = publishConfig(flags, process.env);
  const namespace = namespaceOf(flags, process.env);
  const { stream } = config;
  // The old names were never in use on a Redis Cluster (it could not run them), and on one they
  // span slots: a SCAN of one node and a script over both would be refused with CROSSSLOT.
  const cluster = config.redis.clusterNodes !== undefined;
  await withRedis(config.redis, {}, async (redis) => {
    const keys = daemonKeys(stream, namespace, config.outcomeStream);
    // Only its index check is used here: nothing is committed, so the TTL and the cap do not matter.
    const store = new StateStore(redis, { keys, group: config.group, tombstoneTtlSeconds: 1, outcomeMaxLength: 1 });
    const report = await migrateLegacyKeys(redis, { stream, namespace, keys, cluster, logger: createLogger('info', 'migrate-keys'), repairIndexes: () => store.repairIndexes({ scanRecords: true }) });
    console.error(`moved ${report.records} state record(s), ${report.attempts} attempt count(s) and ${report.deadLetters} dead letter(s) into the keys of ${stream}'s hash slot${report.indexesRepaired > 0 ? `; repaired ${report.indexesRepaired} index entr${report.indexesRepaired === 1 ? 'y' : 'ies'} from the records` : ''}`);
  });
}
