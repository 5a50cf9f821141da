// meshview runs istiod's configuration pipeline in-process (istio's pilot/test/xds fake
// discovery server: the real config store, ServiceEntry and Kubernetes registries, push
// context and xDS generators) on a set of Kubernetes and Istio objects, and prints as JSON what
// one proxy would receive: its clusters with their transport sockets, the endpoints of each EDS
// cluster (address, weight, tlsMode and the transport Envoy would pick for it, plus the labels
// and serviceAccount istiod holds for it), and its listeners: listener filters, filter chains,
// each HTTP connection manager's client-address settings and its HTTP filters' configuration.
//
// Input, as JSON on stdin:
//
//	{"objects": "<multi-document YAML>", "meshConfig": "<YAML, optional>",
//	 "meshNetworks": "<YAML, optional>",
//	 "proxy": {"type": "sidecar"|"router", "namespace": "...", "ip": "...", "labels": {...}}}
//
// It is a test harness, not a product: edge-registrar's e2e tests use it to show with Istio's
// own code what the mesh does with the objects edge-registrar writes.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxy "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"sigs.k8s.io/yaml"

	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/config/mesh/meshwatcher"
	istiolog "istio.io/istio/pkg/log"
)

type proxySpec struct {
	Type      string            `json:"type"`
	Namespace string            `json:"namespace"`
	IP        string            `json:"ip"`
	Labels    map[string]string `json:"labels"`
	ID        string            `json:"id"`
}

type input struct {
	Objects    string `json:"objects"`
	MeshConfig string `json:"meshConfig"`
	// MeshNetworks is the meshNetworks YAML (the istio ConfigMap's meshNetworks key); its
	// fromCidr ranges become the HTTP connection managers' internal addresses.
	MeshNetworks string    `json:"meshNetworks"`
	Proxy        proxySpec `json:"proxy"`
}

type transportMatch struct {
	Name      string            `json:"name"`
	Match     map[string]string `json:"match"`
	Transport string            `json:"transport"`
}

type clusterView struct {
	Name            string           `json:"name"`
	Type            string           `json:"type"`
	Transport       string           `json:"transport"`
	TransportMatchs []transportMatch `json:"transportSocketMatches"`
}

type endpointView struct {
	Address        string            `json:"address"`
	Port           uint32            `json:"port"`
	Weight         uint32            `json:"weight"`
	TLSMode        string            `json:"tlsModeMetadata"`
	Transport      string            `json:"transport"`
	Workload       string            `json:"workload"`
	Labels         map[string]string `json:"labels"`
	ServiceAccount string            `json:"serviceAccount"`
}

type loadAssignmentView struct {
	Cluster   string         `json:"cluster"`
	Endpoints []endpointView `json:"endpoints"`
}

type filterView struct {
	Name        string           `json:"name"`
	Cluster     string           `json:"cluster,omitempty"`
	RouteConfig string           `json:"routeConfig,omitempty"`
	HTTPFilters []typedConfig    `json:"httpFilters,omitempty"`
	Manager     *managerView     `json:"manager,omitempty"`
	Config      *json.RawMessage `json:"config,omitempty"`
}

// managerView is what an HTTP connection manager decides about the client's address: whether
// the connection's peer is the client (use_remote_address), how many X-Forwarded-For hops it
// trusts, and which peers count as internal (Envoy then keeps a client's
// x-envoy-external-address instead of writing its own).
type managerView struct {
	UseRemoteAddress      bool            `json:"useRemoteAddress"`
	XffNumTrustedHops     uint32          `json:"xffNumTrustedHops"`
	SkipXffAppend         bool            `json:"skipXffAppend"`
	InternalAddressConfig json.RawMessage `json:"internalAddressConfig"`
}

type typedConfig struct {
	Name    string          `json:"name"`
	TypeURL string          `json:"typeUrl"`
	Config  json.RawMessage `json:"config"`
}

type filterChainView struct {
	Name              string       `json:"name"`
	DestinationPort   uint32       `json:"destinationPort,omitempty"`
	PrefixRanges      []string     `json:"prefixRanges,omitempty"`
	TransportProtocol string       `json:"transportProtocol,omitempty"`
	ServerNames       []string     `json:"serverNames,omitempty"`
	Filters           []filterView `json:"filters"`
}

type listenerView struct {
	Name string `json:"name"`
	// Bytes is the listener's serialized size: what one LDS push carries for it.
	Bytes        int               `json:"bytes"`
	Address string `json:"address"`
	Port    uint32 `json:"port"`
	// ListenerFilters are the names of the listener filters, in order (PROXY protocol, TLS inspector ...).
	ListenerFilters []string          `json:"listenerFilters"`
	FilterChains    []filterChainView `json:"filterChains"`
}

type output struct {
	Proxy     string               `json:"proxy"`
	Clusters  []clusterView        `json:"clusters"`
	Endpoints []loadAssignmentView `json:"endpoints"`
	Listeners []listenerView       `json:"listeners"`
}

func main() {
	// istiod logs to stdout by default; stdout carries our JSON, so its logs go to stderr.
	logOptions := istiolog.DefaultOptions()
	logOptions.OutputPaths = []string{"stderr"}
	logOptions.ErrorOutputPaths = []string{"stderr"}
	logOptions.SetDefaultOutputLevel("all", istiolog.ErrorLevel)
	if err := istiolog.Configure(logOptions); err != nil {
		fail("configuring istio's logger: %v", err)
	}

	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin: %v", err)
	}
	var in input
	if err := json.Unmarshal(raw, &in); err != nil {
		fail("stdin is not the expected JSON: %v", err)
	}

	t := newFailer()
	defer t.runCleanups()
	kubeObjects, istioConfigs := splitObjects(in.Objects)
	opts := xds.FakeOptions{KubernetesObjectString: kubeObjects, ConfigString: istioConfigs}
	if in.MeshConfig != "" {
		meshConfig, err := mesh.ApplyMeshConfigDefaults(in.MeshConfig)
		if err != nil {
			fail("meshConfig: %v", err)
		}
		opts.MeshConfig = meshConfig
	}
	if in.MeshNetworks != "" {
		networks, err := mesh.ParseMeshNetworks(in.MeshNetworks)
		if err != nil {
			fail("meshNetworks: %v", err)
		}
		opts.NetworksWatcher = meshwatcher.NewFixedNetworksWatcher(networks)
	}
	server := xds.NewFakeDiscoveryServer(t, opts)
	proxy := server.SetupProxy(toProxy(in.Proxy))

	clusters := server.Clusters(proxy)
	out := output{Proxy: proxy.ID, Clusters: []clusterView{}, Endpoints: []loadAssignmentView{}, Listeners: []listenerView{}}
	clustersByName := map[string]*cluster.Cluster{}
	for _, c := range clusters {
		clustersByName[c.Name] = c
		out.Clusters = append(out.Clusters, viewCluster(c))
	}
	known := knownEndpoints(server)
	for _, assignment := range server.Endpoints(proxy) {
		view := loadAssignmentView{Cluster: assignment.ClusterName, Endpoints: []endpointView{}}
		for _, locality := range assignment.Endpoints {
			for _, lb := range locality.LbEndpoints {
				view.Endpoints = append(view.Endpoints, viewEndpoint(lb.GetEndpoint().GetAddress().GetSocketAddress(), lb.GetLoadBalancingWeight().GetValue(),
					lb.GetMetadata(), clustersByName[assignment.ClusterName], known))
			}
		}
		out.Endpoints = append(out.Endpoints, view)
	}
	for _, l := range server.Listeners(proxy) {
		out.Listeners = append(out.Listeners, viewListener(l))
	}
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetIndent("", "  ")
	if err := encoder.Encode(out); err != nil {
		fail("writing output: %v", err)
	}
}

// splitObjects sends Istio kinds to the config store and everything else to the fake
// Kubernetes client, which is where istiod reads each from.
func splitObjects(documents string) (kube string, istio string) {
	var kubeDocs, istioDocs []string
	for _, doc := range strings.Split(documents, "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			fail("object is not YAML: %v\n%s", err, doc)
		}
		if strings.Contains(strings.SplitN(head.APIVersion, "/", 2)[0], "istio.io") {
			istioDocs = append(istioDocs, doc)
		} else {
			kubeDocs = append(kubeDocs, doc)
		}
	}
	return strings.Join(kubeDocs, "\n---\n"), strings.Join(istioDocs, "\n---\n")
}

func toProxy(spec proxySpec) *model.Proxy {
	proxyType := model.SidecarProxy
	if spec.Type == "router" {
		proxyType = model.Router
	}
	ip := spec.IP
	if ip == "" {
		ip = "10.244.0.10"
	}
	id := spec.ID
	if id == "" {
		id = "proxy"
	}
	return &model.Proxy{
		Type:            proxyType,
		IPAddresses:     []string{ip},
		ID:              id + "." + spec.Namespace,
		ConfigNamespace: spec.Namespace,
		Labels:          spec.Labels,
		Metadata:        &model.NodeMetadata{Namespace: spec.Namespace, Labels: spec.Labels, IstioVersion: "1.31.0"},
	}
}

// transportOf names what a transport socket does: Istio mutual TLS (the workload certificate
// from SDS "default"), other TLS, or plaintext.
func transportOf(socket *core.TransportSocket) string {
	if socket == nil || socket.Name == "envoy.transport_sockets.raw_buffer" {
		return "plaintext"
	}
	if socket.Name != "envoy.transport_sockets.tls" {
		return socket.Name
	}
	tls := &tlsv3.UpstreamTlsContext{}
	if err := socket.GetTypedConfig().UnmarshalTo(tls); err != nil {
		return "tls"
	}
	for _, sds := range tls.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs() {
		if sds.GetName() == "default" {
			return "istio-mtls"
		}
	}
	return "tls"
}

func viewCluster(c *cluster.Cluster) clusterView {
	view := clusterView{Name: c.Name, Type: c.GetType().String(), Transport: transportOf(c.TransportSocket), TransportMatchs: []transportMatch{}}
	for _, m := range c.TransportSocketMatches {
		view.TransportMatchs = append(view.TransportMatchs, transportMatch{Name: m.Name, Match: structStrings(m.Match), Transport: transportOf(m.TransportSocket)})
	}
	return view
}

// transportFor resolves an endpoint's transport the way Envoy does: the first transport socket
// match whose fields all appear in the endpoint's envoy.transport_socket_match metadata, else
// the cluster's own transport socket.
func transportFor(c *cluster.Cluster, metadata map[string]string) string {
	if c == nil {
		return "unknown"
	}
	for _, m := range c.TransportSocketMatches {
		matches := true
		for key, value := range structStrings(m.Match) {
			if metadata[key] != value {
				matches = false
				break
			}
		}
		if matches {
			return transportOf(m.TransportSocket)
		}
	}
	return transportOf(c.TransportSocket)
}

func structStrings(s *structpb.Struct) map[string]string {
	out := map[string]string{}
	for key, value := range s.GetFields() {
		out[key] = value.GetStringValue()
	}
	return out
}

type endpointKey struct {
	address string
	port    uint32
}

// knownEndpoints indexes istiod's own endpoint records (labels, serviceAccount), which EDS
// does not carry, by address and port.
func knownEndpoints(server *xds.FakeDiscoveryServer) map[endpointKey]*model.IstioEndpoint {
	out := map[endpointKey]*model.IstioEndpoint{}
	for _, byNamespace := range server.Discovery.Env.EndpointIndex.Shardz() {
		for _, shards := range byNamespace {
			for _, endpoints := range shards.Shards {
				for _, ep := range endpoints {
					for _, address := range ep.Addresses {
						out[endpointKey{address, ep.EndpointPort}] = ep
					}
				}
			}
		}
	}
	return out
}

func viewEndpoint(address *core.SocketAddress, weight uint32, metadata *core.Metadata, c *cluster.Cluster,
	known map[endpointKey]*model.IstioEndpoint,
) endpointView {
	socketMatch := structStrings(metadata.GetFilterMetadata()["envoy.transport_socket_match"])
	view := endpointView{
		Address:   address.GetAddress(),
		Port:      address.GetPortValue(),
		Weight:    weight,
		TLSMode:   socketMatch["tlsMode"],
		Transport: transportFor(c, socketMatch),
		Workload:  metadata.GetFilterMetadata()["istio"].GetFields()["workload"].GetStringValue(),
		Labels:    map[string]string{},
	}
	if ep, ok := known[endpointKey{view.Address, view.Port}]; ok {
		view.Labels = ep.Labels
		view.ServiceAccount = ep.ServiceAccount
	}
	return view
}

func viewListener(l *listener.Listener) listenerView {
	socket := l.GetAddress().GetSocketAddress()
	view := listenerView{Name: l.Name, Bytes: proto.Size(l), Address: socket.GetAddress(), Port: socket.GetPortValue(), ListenerFilters: []string{}, FilterChains: []filterChainView{}}
	for _, f := range l.ListenerFilters {
		view.ListenerFilters = append(view.ListenerFilters, f.Name)
	}
	chains := append([]*listener.FilterChain{}, l.FilterChains...)
	if l.DefaultFilterChain != nil {
		chains = append(chains, l.DefaultFilterChain)
	}
	for _, chain := range chains {
		match := chain.GetFilterChainMatch()
		chainView := filterChainView{
			Name:              chain.Name,
			DestinationPort:   match.GetDestinationPort().GetValue(),
			TransportProtocol: match.GetTransportProtocol(),
			ServerNames:       match.GetServerNames(),
			Filters:           []filterView{},
		}
		for _, r := range match.GetPrefixRanges() {
			chainView.PrefixRanges = append(chainView.PrefixRanges, fmt.Sprintf("%s/%d", r.AddressPrefix, r.GetPrefixLen().GetValue()))
		}
		for _, f := range chain.Filters {
			chainView.Filters = append(chainView.Filters, viewFilter(f))
		}
		view.FilterChains = append(view.FilterChains, chainView)
	}
	return view
}

func viewFilter(f *listener.Filter) filterView {
	view := filterView{Name: f.Name}
	typed := f.GetTypedConfig()
	switch {
	case typed.MessageIs(&hcm.HttpConnectionManager{}):
		manager := &hcm.HttpConnectionManager{}
		if err := typed.UnmarshalTo(manager); err == nil {
			view.RouteConfig = manager.GetRds().GetRouteConfigName()
			internal := json.RawMessage("null")
			if manager.InternalAddressConfig != nil {
				if encoded, err := protojson.Marshal(manager.InternalAddressConfig); err == nil {
					internal = encoded
				}
			}
			view.Manager = &managerView{
				UseRemoteAddress:      manager.GetUseRemoteAddress().GetValue(),
				XffNumTrustedHops:     manager.GetXffNumTrustedHops(),
				SkipXffAppend:         manager.GetSkipXffAppend(),
				InternalAddressConfig: internal,
			}
			for _, h := range manager.HttpFilters {
				view.HTTPFilters = append(view.HTTPFilters, viewTyped(h.Name, h.GetTypedConfig()))
			}
		}
	case typed.MessageIs(&tcpproxy.TcpProxy{}):
		proxy := &tcpproxy.TcpProxy{}
		if err := typed.UnmarshalTo(proxy); err == nil {
			view.Cluster = proxy.GetCluster()
		}
	default:
		config := viewTyped(f.Name, typed).Config
		view.Config = &config
	}
	return view
}

// viewTyped renders a typed config as JSON through the protobuf registry istiod itself links;
// a type it does not know is reported by name rather than failing the run.
func viewTyped(name string, typed *anypb.Any) typedConfig {
	view := typedConfig{Name: name, TypeURL: typed.GetTypeUrl(), Config: json.RawMessage("null")}
	if typed == nil {
		return view
	}
	message, err := typed.UnmarshalNew()
	if err != nil {
		view.Config = mustJSON(map[string]string{"error": err.Error()})
		return view
	}
	encoded, err := protojson.Marshal(message)
	if err != nil {
		view.Config = mustJSON(map[string]string{"error": err.Error()})
		return view
	}
	view.Config = encoded
	return view
}

func mustJSON(v any) json.RawMessage {
	encoded, _ := json.Marshal(v)
	return encoded
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "meshview: "+format+"\n", args...)
	os.Exit(2)
}

// failer is the test.Failer the fake discovery server expects, for a process rather than a
// go test: a fatal error ends the process with the message on stderr.
type failer struct {
	cleanups []func()
}

func newFailer() *failer { return &failer{} }

// runCleanups runs the registered cleanups last-first, as testing.T does.
func (f *failer) runCleanups() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}
func (f *failer) Fail()                             { fail("failed") }
func (f *failer) FailNow()                          { fail("failed") }
func (f *failer) Fatal(args ...any)                 { fail("%s", fmt.Sprint(args...)) }
func (f *failer) Fatalf(format string, args ...any) { fail(format, args...) }
func (f *failer) Log(args ...any)                   { fmt.Fprintln(os.Stderr, args...) }
func (f *failer) Logf(format string, args ...any)   { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (f *failer) TempDir() string {
	dir, err := os.MkdirTemp("", "meshview-")
	if err != nil {
		fail("temp dir: %v", err)
	}
	f.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
func (f *failer) Helper()           {}
func (f *failer) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }
func (f *failer) Skip(args ...any)  { fail("skip: %s", fmt.Sprint(args...)) }
