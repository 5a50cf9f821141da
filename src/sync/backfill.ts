/**
 * Backfill: entries for the VPSs that existed before the daemon, through the same path. A
 * JSON array (or {items: [...]}) or a CSV with a header row of vps_id,name,address,country
 * [,labels] becomes register events. Every row is checked before anything is published, as
 * the daemon would check it (the contract and, given the policy, the content rules); the errors
 * name the row, the rule, the field and the value.
 */
import { parse as parseCsv } from 'csv-parse/sync';
import type { PlanContext } from './planner.ts';
import { eventFields } from './publisher.ts';

export interface BackfillRow {
  vps_id: string;
  name: string;
  address: string;
  country: string;
  labels?: Record<string, string> | string;
}

export interface BackfillPlan {
  events: string[][];
  errors: string[];
}

function rowsFromJson(text: string): unknown[] {
  const value: unknown = JSON.parse(text);
  if (Array.isArray(value)) return value;
  if (value !== null && typeof value === 'object' && Array.isArray((value as { items?: unknown }).items)) return (value as { items: unknown[] }).items;
  throw new Error('expected a JSON array of VPSs, or an object with an "items" array');
}

function rowsFromCsv(text: string): unknown[] {
  const rows: unknown[] = parseCsv(text, { columns: (header: string[]) => header.map((c) => c.trim()), bom: true, skip_empty_lines: true, trim: true });
  return rows;
}

/** `rules`: also check each register against the content rules the daemon runs (publisher.ts). */
export function planBackfill(text: string, format: 'json' | 'csv', rules?: PlanContext): BackfillPlan {
  const rows = format === 'json' ? rowsFromJson(text) : rowsFromCsv(text);
  const plan: BackfillPlan = { events: [], errors: [] };
  rows.forEach((row, i) => {
    const where = format === 'csv' ? `line ${i + 2}` : `item ${i}`;
    if (row === null || typeof row !== 'object') {
      plan.errors.push(`${where}: not an object`);
      return;
    }
    const r = row as Record<string, unknown>;
    const labels = r.labels === undefined || r.labels === '' ? undefined : typeof r.labels === 'string' ? r.labels : JSON.stringify(r.labels);
    const fields = eventFields({
      event: 'register',
      vps_id: typeof r.vps_id === 'string' ? r.vps_id : typeof r.vps_id === 'number' ? String(r.vps_id) : undefined,
      name: typeof r.name === 'string' ? r.name : undefined,
      address: typeof r.address === 'string' ? r.address : undefined,
      country: typeof r.country === 'string' ? r.country : undefined,
      labels,
    }, rules);
    if (fields.ok) plan.events.push(fields.fields);
    else plan.errors.push(`${where}: ${fields.message}`);
  });
  return plan;
}

export function formatOf(source: string, contentType?: string): 'json' | 'csv' {
  if (contentType?.includes('csv') === true || source.toLowerCase().endsWith('.csv')) return 'csv';
  return 'json';
}
