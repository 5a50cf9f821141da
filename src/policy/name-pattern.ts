/**
 * The policy's `namePattern`, matched with RE2 (re2js, a pure-JavaScript port of Google's
 * RE2): matching takes time linear in the name, whatever the pattern. A JavaScript RegExp
 * backtracks, and a pattern such as `^(a+)+$` against a long name would stall the event loop
 * and with it every admission. RE2 refuses what it cannot match in linear time
 * (backreferences, lookaround), so such a policy is refused when it is loaded, with RE2's
 * reason, instead of at the first slow request.
 *
 * Each pattern is compiled once, when the policy that names it is parsed, and kept.
 */
import { RE2JS } from 're2js';

/** Compiled patterns by source; a policy reload adds one, so the map stays tiny. */
const compiled = new Map<string, RE2JS>();
const MAX_KEPT = 16;

/** Compiles (once) and returns the pattern; throws RE2's syntax error for one it refuses. */
function compile(source: string): RE2JS {
  let pattern = compiled.get(source);
  if (pattern === undefined) {
    pattern = RE2JS.compile(source);
    if (compiled.size >= MAX_KEPT) compiled.clear();
    compiled.set(source, pattern);
  }
  return pattern;
}

/** Why RE2 refuses this pattern, or undefined when it compiles (it is then kept compiled). */
export function namePatternProblem(source: string): string | undefined {
  try {
    compile(source);
    return undefined;
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    return `must be an RE2 regular expression, which matches in linear time (no backreferences or lookaround): ${reason}`;
  }
}

export interface NameMatch {
  matched: boolean;
  /** The named group `country`, when the pattern has one and it took part in the match. */
  country?: string;
}

export function matchName(source: string, name: string): NameMatch {
  const matcher = compile(source).matcher(name);
  if (!matcher.find()) return { matched: false };
  let country: string | null = null;
  try {
    country = matcher.group('country');
  } catch {
    // The pattern has no group of that name.
  }
  return country === null ? { matched: true } : { matched: true, country };
}
