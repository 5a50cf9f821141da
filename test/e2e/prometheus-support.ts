/** Prometheus series text for the tests of the per-VPS rules. */

/** `name{k="v", ...}`, leaving out empty labels as Prometheus does. */
export function series(name: string, labels: Record<string, string>): string {
  return `${name}{${Object.entries(labels)
    .filter(([, v]) => v !== '')
    .map(([k, v]) => `${k}="${v}"`)
    .join(', ')}}`;
}
