/**
 * AdmissionReview (admission.k8s.io/v1) decoding and response building. Decoding rejects
 * anything that is not a v1 AdmissionReview request with a message naming the field, so
 * a misconfigured caller learns what is wrong instead of getting a crash or a 500.
 */
import { z } from 'zod';
import { formatZodIssues } from '../util/zod-format.ts';

const groupVersionKind = z.object({ group: z.string(), version: z.string(), kind: z.string() });
const groupVersionResource = z.object({ group: z.string(), version: z.string(), resource: z.string() });

const admissionRequestSchema = z.object({
  uid: z.string().min(1),
  kind: groupVersionKind,
  resource: groupVersionResource,
  subResource: z.string().optional(),
  name: z.string().optional(),
  namespace: z.string().optional(),
  operation: z.enum(['CREATE', 'UPDATE', 'DELETE', 'CONNECT']),
  userInfo: z
    .object({
      username: z.string().default(''),
      uid: z.string().optional(),
      groups: z.array(z.string()).default([]),
    })
    .default({ username: '', groups: [] }),
  object: z.unknown().optional(),
  oldObject: z.unknown().optional(),
  dryRun: z.boolean().optional(),
});

const admissionReviewSchema = z.object({
  apiVersion: z.literal('admission.k8s.io/v1', { message: 'must be "admission.k8s.io/v1"' }),
  kind: z.literal('AdmissionReview', { message: 'must be "AdmissionReview"' }),
  request: admissionRequestSchema,
});

export type AdmissionRequest = z.output<typeof admissionRequestSchema>;

export interface AdmissionStatus {
  code: number;
  reason: 'Invalid' | 'Forbidden' | 'Conflict';
  message: string;
}

export interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  status?: AdmissionStatus;
  patch?: string;
  patchType?: 'JSONPatch';
  warnings?: string[];
  auditAnnotations?: Record<string, string>;
}

export interface AdmissionReviewResponse {
  apiVersion: 'admission.k8s.io/v1';
  kind: 'AdmissionReview';
  response: AdmissionResponse;
}

export type DecodeResult = { ok: true; request: AdmissionRequest } | { ok: false; message: string };

/**
 * The deepest nesting a review may have. A WorkloadEntry review is about ten levels deep
 * (managedFields included); the rules, the defaulting and the JSON patch walk objects
 * recursively, so absurd nesting is refused here, before anything walks it.
 */
export const MAX_NESTING = 100;

/**
 * Where a value nests deeper than `limit`, if it does. Recursion that stops at the limit, so
 * it never goes deeper than `limit` frames itself (cannot overflow), and costs about a
 * microsecond for a real review; the path is built only for a refusal.
 */
function tooDeep(value: unknown, limit: number): string | undefined {
  const walk = (node: unknown, depth: number): string[] | undefined => {
    if (depth > limit) return [];
    if (Array.isArray(node)) {
      for (let i = 0; i < node.length; i++) {
        const child: unknown = node[i];
        const below = child !== null && typeof child === 'object' ? walk(child, depth + 1) : undefined;
        if (below !== undefined) return [`[${i}]`, ...below];
      }
      return undefined;
    }
    const object = node as Record<string, unknown>;
    for (const key in object) {
      const child = object[key];
      const below = child !== null && typeof child === 'object' ? walk(child, depth + 1) : undefined;
      if (below !== undefined) return [key, ...below];
    }
    return undefined;
  };
  return walk(value, 1)?.join('.').replaceAll('.[', '[');
}

export function decodeAdmissionReview(body: unknown): DecodeResult {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return { ok: false, message: 'body is not a JSON object; expected an admission.k8s.io/v1 AdmissionReview' };
  }
  const deep = tooDeep(body, MAX_NESTING);
  if (deep !== undefined) {
    return { ok: false, message: `body nests deeper than ${MAX_NESTING} levels (at ${deep.slice(0, 200)}${deep.length > 200 ? '…' : ''}); no AdmissionReview does` };
  }
  const result = admissionReviewSchema.safeParse(body);
  if (!result.success) {
    return { ok: false, message: `not an admission.k8s.io/v1 AdmissionReview request: ${formatZodIssues(result.error.issues, body)}` };
  }
  return { ok: true, request: result.data.request };
}

export function reviewResponse(response: AdmissionResponse): AdmissionReviewResponse {
  return { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response };
}

/**
 * The API server passes warnings to clients, which print each on its own line; long ones
 * may be cut, so keep each within a readable length.
 */
const MAX_WARNING_CHARS = 240;
export function clampWarnings(warnings: readonly string[]): string[] {
  return [...new Set(warnings)].map((w) => (w.length > MAX_WARNING_CHARS ? `${w.slice(0, MAX_WARNING_CHARS - 1)}…` : w));
}
