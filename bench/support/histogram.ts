/**
 * Cumulative buckets of one Prometheus histogram, read from the text exposition format and
 * grouped by one label (the webhook's handler, the API server's webhook name). Series that
 * differ in other labels (operation, rejected, type) are summed into their group, so each
 * group is one histogram over all of them.
 */
export type Buckets = Map<number, number>;

export function histogramBuckets(exposition: string, metric: string, groupBy: string): Map<string, Buckets> {
  const prefix = `${metric}_bucket{`;
  const groupPattern = new RegExp(`[{,]${groupBy}="([^"]+)"`);
  const groups = new Map<string, Buckets>();
  for (const line of exposition.split('\n')) {
    if (!line.startsWith(prefix)) continue;
    const group = groupPattern.exec(line)?.[1];
    const le = /[{,]le="([^"]+)"/.exec(line)?.[1];
    if (group === undefined || le === undefined) continue;
    const buckets = groups.get(group) ?? new Map<number, number>();
    const bound = le === '+Inf' ? Infinity : Number(le);
    buckets.set(bound, (buckets.get(bound) ?? 0) + Number(line.split(' ').at(-1)));
    groups.set(group, buckets);
  }
  return groups;
}

/** The webhook's own request-duration histogram, by handler, from its metrics port. */
export async function webhookBuckets(metricsPort: number): Promise<Map<string, Buckets>> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  return histogramBuckets(text, 'edge_registrar_webhook_request_duration_seconds', 'handler');
}
