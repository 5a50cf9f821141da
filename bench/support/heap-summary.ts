/**
 * What a V8 heap snapshot is made of: self sizes summed by kind (code, strings, arrays, ...)
 * and, for objects and closures, by constructor or function name. Enough to say what holds a
 * process's heap without opening DevTools; the benchmarks print it beside their RSS figures.
 */

interface HeapSnapshotFile {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

export interface HeapGroup {
  /** `code`, `string`, ... or `object Foo` / `closure bar` for objects and functions. */
  group: string;
  bytes: number;
  count: number;
}

/** Groups sorted by bytes, largest first; `total` is the sum of every node's self size. */
export function summarizeHeapSnapshot(file: HeapSnapshotFile): { total: number; groups: HeapGroup[] } {
  const fields = file.snapshot.meta.node_fields;
  const types = file.snapshot.meta.node_types[0];
  const width = fields.length;
  const typeAt = fields.indexOf('type');
  const nameAt = fields.indexOf('name');
  const sizeAt = fields.indexOf('self_size');
  const groups = new Map<string, HeapGroup>();
  let total = 0;
  for (let i = 0; i < file.nodes.length; i += width) {
    const type = types[file.nodes[i + typeAt] ?? -1] ?? 'unknown';
    const size = file.nodes[i + sizeAt] ?? 0;
    total += size;
    // Objects and closures by name (their constructor, their function); everything else by kind.
    const named = type === 'object' || type === 'closure' || type === 'native';
    const key = named ? `${type} ${file.strings[file.nodes[i + nameAt] ?? -1] ?? '?'}` : type;
    const group = groups.get(key) ?? { group: key, bytes: 0, count: 0 };
    group.bytes += size;
    group.count++;
    groups.set(key, group);
  }
  return { total, groups: [...groups.values()].sort((a, b) => b.bytes - a.bytes) };
}
