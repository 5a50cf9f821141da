/**
 * Reading manifests the way kubectl does: YAML or JSON, several documents per file
 * separated by `---`, and `kind: List` flattened into its items. Parse errors carry the
 * file, the document number and the line.
 */
import { parseAllDocuments } from 'yaml';

export interface ManifestDocument {
  file: string;
  /** 1-based position of the document in its file. */
  index: number;
  object: Record<string, unknown>;
}

export interface ParseResult {
  documents: ManifestDocument[];
  errors: string[];
}

function flatten(object: Record<string, unknown>): Record<string, unknown>[] {
  if (typeof object.kind === 'string' && object.kind.endsWith('List') && Array.isArray(object.items)) {
    return object.items.filter((i): i is Record<string, unknown> => i !== null && typeof i === 'object' && !Array.isArray(i));
  }
  return [object];
}

export function parseManifests(file: string, text: string): ParseResult {
  const documents: ManifestDocument[] = [];
  const errors: string[] = [];
  const docs = parseAllDocuments(text, { prettyErrors: true });
  const list = Array.isArray(docs) ? docs : [docs];
  list.forEach((doc, i) => {
    const index = i + 1;
    if (doc.errors.length > 0) {
      for (const e of doc.errors) errors.push(`${file}: document ${index}: ${e.message.split('\n')[0] ?? e.message}`);
      return;
    }
    const value: unknown = doc.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) return; // empty document (e.g. a trailing ---)
    if (typeof value !== 'object' || Array.isArray(value)) {
      errors.push(`${file}: document ${index}: is not a Kubernetes object (got ${Array.isArray(value) ? 'a list' : typeof value})`);
      return;
    }
    for (const object of flatten(value as Record<string, unknown>)) documents.push({ file, index, object });
  });
  return { documents, errors };
}
