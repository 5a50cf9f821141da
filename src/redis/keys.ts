/**
 * Every Redis key the daemon uses, derived from sigma-api's stream name, in the stream's hash
 * slot. Redis Cluster hashes only the part of a key inside its first `{…}`, and refuses a
 * script or a transaction whose keys are in more than one slot (CROSSSLOT); the daemon's
 * scripts touch the stream, the dead letters, the outcomes and the desired state together.
 * So derived keys carry the stream's name as their hash tag, `{sigma:vps-events}:…`, which
 * hashes exactly like `sigma:vps-events` itself: sigma-api's stream name does not change.
 * A stream name that already has a hash tag of its own (`{sigma}:vps-events`) keeps it, and
 * the derived keys append to the whole name.
 *
 * Before this, the desired state lived under `edge-registrar:<namespace>:` and the dead letters
 * in `<stream>:dlq`: LEGACY_KEYS names them, for the migration (migrate-keys.ts).
 */

/** The hash tag Redis Cluster would use for `key` (the part inside its first non-empty `{…}`), if any. */
export function hashTagOf(key: string): string | undefined {
  const open = key.indexOf('{');
  if (open < 0) return undefined;
  const close = key.indexOf('}', open + 1);
  if (close < 0 || close === open + 1) return undefined;
  return key.slice(open + 1, close);
}

/** A key in the stream's slot: `{stream}:suffix`, or `stream:suffix` when the stream has a hash tag already. */
export function inStreamSlot(stream: string, suffix: string): string {
  return hashTagOf(stream) === undefined ? `{${stream}}:${suffix}` : `${stream}:${suffix}`;
}

/** The dead-letter stream of `stream`. */
export function deadLetterStream(stream: string): string {
  return inStreamSlot(stream, 'dlq');
}

/** The outcome stream of `stream`: the one configured, or `{<stream>}:outcomes`. */
export function outcomeStreamOf(stream: string, configured?: string): string {
  return configured ?? inStreamSlot(stream, 'outcomes');
}

export interface DaemonKeys {
  stream: string;
  /** Events that cannot be applied, with why. */
  deadLetters: string;
  /** One record per acknowledged event: what became of it. */
  outcomes: string;
  /** Everything of the desired state for one namespace starts with this. */
  statePrefix: string;
  vps(vpsId: string): string;
  /** canonical address -> vps_id (registered VPSs). */
  addresses: string;
  /** entry name -> vps_id (registered VPSs). */
  names: string;
  /** vps_ids of registered VPSs. */
  registered: string;
  /** stream id -> attempts at it that never ended (attempt-log.ts). */
  attempts: string;
}

/** The keys for `stream` and the managed `namespace`; `outcomes` overrides the outcome stream's name. */
export function daemonKeys(stream: string, namespace: string, outcomes?: string): DaemonKeys {
  const statePrefix = inStreamSlot(stream, `edge-registrar:${namespace}:`);
  return {
    stream,
    deadLetters: deadLetterStream(stream),
    outcomes: outcomeStreamOf(stream, outcomes),
    statePrefix,
    vps: (vpsId) => `${statePrefix}vps:${vpsId}`,
    addresses: `${statePrefix}addresses`,
    names: `${statePrefix}names`,
    registered: `${statePrefix}registered`,
    attempts: `${statePrefix}attempts`,
  };
}

/** The names before the keys moved into the stream's slot. */
export function legacyKeys(stream: string, namespace: string): { deadLetters: string; statePrefix: string } {
  return { deadLetters: `${stream}:dlq`, statePrefix: `edge-registrar:${namespace}:` };
}
