/**
 * Builds Istio's own code from the istio.io/istio Go module (test/harness/istio pins it) once
 * and caches it in .cache/istio/:
 * - istioctl, for `istioctl analyze` on files;
 * - meshview (test/harness/istio/main.go), which runs istiod's configuration pipeline
 *   in-process and prints what one proxy would receive.
 * And cel-go's evaluator (test/harness/cel), for the CEL that Envoy evaluates.
 * Their own modules, so Istio's Kubernetes libraries never meet the control plane's or helm's.
 */
import { ensureGoTools } from './go-tools.ts';

/** The istio.io/istio pseudo-version in test/harness/istio/go.mod: the 1.31 development line. */
export const ISTIO_MODULE_VERSION = 'v0.0.0-20260827124520-eed52ebb66ad';
const ISTIO_RELEASE_LINE = '1.31-dev';
export const CEL_GO_VERSION = 'v0.33.2';

export interface IstioTools {
  istioctl: string;
  meshview: string;
  celeval: string;
}

export async function ensureIstioTools(log: (line: string) => void = (l) => console.error(l)): Promise<IstioTools> {
  const istio = await ensureGoTools(
    {
      name: 'istio',
      version: ISTIO_RELEASE_LINE,
      files: ['go.mod', 'go.sum', 'main.go'],
      // Stamped the way Istio's release builds are (common/scripts/report_build_info.sh).
      ldflags: [
        `-X istio.io/istio/pkg/version.buildVersion=${ISTIO_RELEASE_LINE}`,
        `-X istio.io/istio/pkg/version.buildGitRevision=${ISTIO_MODULE_VERSION.split('-').at(-1)}`,
        '-X istio.io/istio/pkg/version.buildStatus=Clean',
      ].join(' '),
      programs: { meshview: '.', istioctl: 'istio.io/istio/istioctl/cmd/istioctl' },
      coldNote: `istio.io/istio ${ISTIO_MODULE_VERSION}: a cold build compiles istiod's packages for about 5 minutes; later runs reuse the cache`,
    },
    log,
  );
  const cel = await ensureGoTools(
    { name: 'cel', version: CEL_GO_VERSION, files: ['go.mod', 'go.sum', 'main.go'], programs: { celeval: '.' }, coldNote: 'cel-go: under a minute cold' },
    log,
  );
  return { ...istio, ...cel };
}
