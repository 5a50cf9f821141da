/**
 * The Services index behind labels.service-selected: a review is checked only against the
 * Services that share a label pair with it, so it must stay exact as Services are added,
 * changed, removed and relisted.
 */
import { describe, expect, it } from 'vitest';
import { ClusterIndex } from '../../src/kube/cluster-index.ts';

const NS = 'airport-prod';
const service = (name: string, selector: Record<string, string> | undefined, namespace = NS): unknown => ({ metadata: { name, namespace }, spec: { selector } });
const names = (index: ClusterIndex, labels: Record<string, string>): string[] | undefined => index.servicesSelecting(NS, labels)?.map((s) => s.name);
const xrayr = { app: 'xrayr', version: 'v1', country: 'jp' };

describe('servicesSelecting', () => {
  it('answers nothing until the namespace is loaded', () => {
    expect(names(new ClusterIndex(NS), xrayr)).toBeUndefined();
  });

  it.each<[string, unknown[], string[]]>([
    ['a selector that is a subset of the labels', [service('xrayr', { app: 'xrayr' })], ['xrayr']],
    ['a selector with every pair of the labels', [service('exact', xrayr)], ['exact']],
    ['a selector with one pair the labels lack', [service('more', { app: 'xrayr', tier: 'edge' })], []],
    ['a selector with one pair of another value', [service('other', { app: 'xrayr', country: 'us' })], []],
    ['an empty selector (selects nothing)', [service('empty', {})], []],
    ['no selector at all', [service('none', undefined)], []],
    ['a Service of another namespace', [service('elsewhere', { app: 'xrayr' }, 'default')], []],
    ['several, by name', [service('b', { country: 'jp' }), service('a', { app: 'xrayr' }), service('c', { app: 'web' })], ['a', 'b']],
  ])('%s', (_name, services, expected) => {
    const index = new ClusterIndex(NS);
    index.replace('Service', NS, services);
    expect(names(index, xrayr)).toEqual(expected);
  });

  it('follows changes: a selector changed, a Service removed, a relist', () => {
    const index = new ClusterIndex(NS);
    index.replace('Service', NS, [service('s', { app: 'xrayr' })]);
    expect(names(index, xrayr)).toEqual(['s']);
    index.upsert('Service', service('s', { app: 'web' }));
    expect(names(index, xrayr)).toEqual([]);
    expect(names(index, { app: 'web' })).toEqual(['s']);
    index.upsert('Service', service('s', { country: 'jp' }));
    expect(names(index, { app: 'web' })).toEqual([]);
    expect(names(index, xrayr)).toEqual(['s']);
    index.remove('Service', service('s', undefined));
    expect(names(index, xrayr)).toEqual([]);
    index.upsert('Service', service('t', { app: 'xrayr' }));
    index.replace('Service', NS, [service('u', { version: 'v1' })]);
    expect(names(index, xrayr)).toEqual(['u']);
  });
});
