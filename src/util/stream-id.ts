/** Redis stream ids ("<ms>-<seq>") compared as numbers, which is their order in the stream. */
export function compareStreamIds(a: string, b: string): number {
  const [am = '0', as = '0'] = a.split('-');
  const [bm = '0', bs = '0'] = b.split('-');
  const ms = BigInt(am) - BigInt(bm);
  if (ms !== 0n) return ms < 0n ? -1 : 1;
  const seq = BigInt(as) - BigInt(bs);
  return seq === 0n ? 0 : seq < 0n ? -1 : 1;
}

export function isStreamId(value: string): boolean {
  return /^\d+-\d+$/.test(value);
}

/**
 * The same order in Lua, for the scripts that compare stream ids inside Redis: `newer(a, b)` is
 * true when a comes after b. (Lua numbers are doubles: a stream id's milliseconds and sequence
 * fit them exactly for any real clock.)
 */
export const NEWER_STREAM_ID_LUA = `
local function newer(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  if am ~= bm then return am > bm end
  return as > bs
end`;
