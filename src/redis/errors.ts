/**
 * Which Redis failures say "Redis is away or busy right now" (retry, however long it lasts)
 * rather than "this command is wrong" (a bug, or data that cannot be applied). A command that
 * timed out on a connection that is still up is the first kind: counting it as unexpected
 * would dead-letter a valid event after a few scattered timeouts.
 */

/** ioredis's own messages for a connection that is down, going down, or too slow. */
const CLIENT_SIDE = new Set(['Command timed out', 'Connection is closed.', "Stream isn't writeable and enableOfflineQueue options is false", 'None of startup nodes is available']);

/** Error replies Redis gives while it loads, fails over, or is otherwise not serving for a moment. */
const SERVER_BUSY = /^(LOADING|BUSY|MASTERDOWN|READONLY|CLUSTERDOWN|TRYAGAIN|NOREPLICAS|MOVED|ASK) /;

export function isRedisUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (CLIENT_SIDE.has(error.message)) return true;
  // MaxRetriesPerRequestError and the aborts of a closing connection extend redis-errors' AbortError.
  if (error.name === 'MaxRetriesPerRequestError' || error.name === 'AbortError' || error.message.startsWith('Too many Cluster redirections')) return true;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && ['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH'].includes(code)) return true;
  return error.name === 'ReplyError' && SERVER_BUSY.test(error.message);
}
