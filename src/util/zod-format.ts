import type { z } from 'zod';

/** The value at a zod issue path inside the input, for messages that name what was found. */
function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let current: unknown = input;
  for (const key of path) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<PropertyKey, unknown>)[key];
  }
  return current;
}

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else if (typeof key === 'string' && /^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) out += out ? `.${key}` : key;
    else out += `[${JSON.stringify(String(key))}]`;
  }
  return out || '(root)';
}

/**
 * One line per issue: `field: message (got VALUE)`. zod's own messages name the rule; we add
 * the field path and the value, which is what a user needs to fix the input.
 */
export function formatZodIssues(issues: readonly z.core.$ZodIssue[], input: unknown): string {
  return issues
    .map((issue) => {
      const value = valueAt(input, issue.path);
      const got = value === undefined ? 'missing' : `got ${JSON.stringify(value)}`;
      return `${formatPath(issue.path)}: ${issue.message} (${got})`;
    })
    .join('; ');
}
