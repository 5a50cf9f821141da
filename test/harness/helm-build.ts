/**
 * Builds the helm CLI from its Go module (test/harness/helm/go.mod pins it through the
 * `tool` directive) once and caches it in .cache/helm/. Its own module, so helm's Kubernetes
 * libraries never meet the control plane's module graph.
 */
import { ensureGoTools } from './go-tools.ts';

export const HELM_VERSION = 'v4.3.1';

export async function ensureHelm(log: (line: string) => void = (l) => console.error(l)): Promise<string> {
  const tools = await ensureGoTools(
    {
      name: 'helm',
      version: HELM_VERSION,
      files: ['go.mod', 'go.sum'],
      // The version is stamped the way helm's own release builds do it.
      ldflags: `-X helm.sh/helm/v4/internal/version.version=${HELM_VERSION}`,
      programs: { helm: 'helm.sh/helm/v4/cmd/helm' },
      coldNote: 'a cold build downloads modules and compiles for a minute or two; later runs reuse the cache',
    },
    log,
  );
  return tools.helm;
}
