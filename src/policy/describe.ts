/** Words for findings: what kubectl prints, what `check` prints, what goes into the dead-letter reason. */
import type { Violation } from './types.ts';

const MAX_VALUE_CHARS = 120;

export function renderValue(value: unknown): string {
  if (value === undefined) return '(missing)';
  // JSON.stringify returns undefined for functions and symbols, which JSON input never holds.
  const text = (JSON.stringify(value) as string | undefined) ?? typeof value;
  return text.length > MAX_VALUE_CHARS ? `${text.slice(0, MAX_VALUE_CHARS)}…` : text;
}

/** `[address.public-unicast] spec.address: "10.0.0.5" is in the private ... range 10.0.0.0/8; expected ...` */
export function describeViolation(v: Omit<Violation, 'rule'> & { rule: string }): string {
  const subject = v.value === undefined ? '' : ` ${renderValue(v.value)}`;
  return `[${v.rule}] ${v.path}:${subject} ${v.problem}; expected ${v.expected}`;
}

/** The message of a denied admission: every violation, one per line, under a heading that names the entry. */
export function denialMessage(entryRef: string, violations: readonly Violation[]): string {
  const count = violations.length === 1 ? '1 edge-registrar rule' : `${violations.length} edge-registrar rules`;
  return [`WorkloadEntry ${entryRef} violates ${count}:`, ...violations.map((v) => `  ${describeViolation(v)}`)].join('\n');
}
