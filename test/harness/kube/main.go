// kube-harness starts a real Kubernetes control plane for edge-registrar's tests and
// local stack: an embedded etcd and kube-apiserver (in this process, from the
// k8s.io/kubernetes module) and, optionally, kube-controller-manager as a child
// process so that namespace deletion and garbage collection really happen.
//
// Everything binds to 127.0.0.1 on free ports. It writes, into --dir:
//
//	ca.crt, ca.key          the cluster CA (serving and client certificates)
//	admin.kubeconfig        system:masters
//	<name>.kubeconfig       one per --user NAME=USERNAME[|GROUP,GROUP...]
//	sa.key, sa.pub          service-account signing keys
//	state.json              ports and paths, written last, when /readyz is ok
//
// and prints the same JSON on one line to stdout. With --resume it starts again from a
// previous run's --dir: the same CA, service-account keys, ports and etcd data, so clients
// holding the old kubeconfigs see an API server that went away and came back; and it
// keeps that data at exit. Without it, --dir starts empty and etcd's data is removed. It stops everything it started on
// SIGINT/SIGTERM, on stdin EOF with --stdin-watch, and when its parent process dies.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	apiapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
)

type userFlag []string

func (u *userFlag) String() string     { return strings.Join(*u, ",") }
func (u *userFlag) Set(v string) error { *u = append(*u, v); return nil }

type state struct {
	Server          string            `json:"server"`
	EtcdURL         string            `json:"etcdUrl"`
	EtcdPeerURL     string            `json:"etcdPeerUrl"`
	Dir             string            `json:"dir"`
	AdminKubeconfig string            `json:"adminKubeconfig"`
	Kubeconfigs     map[string]string `json:"kubeconfigs"`
	CACert          string            `json:"caCert"`
	CAKey           string            `json:"caKey"`
	PID             int               `json:"pid"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kube-harness:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", "", "working directory for certificates, kubeconfigs and etcd data (required)")
	kcm := flag.String("controller-manager", "", "path to a kube-controller-manager binary to run as a child (optional)")
	stdinWatch := flag.Bool("stdin-watch", false, "exit when stdin reaches EOF (the parent closed it or died)")
	verbose := flag.Bool("v", false, "show kube-apiserver and etcd logs")
	resume := flag.Bool("resume", false, "restart from a previous run's --dir (same CA, ports and etcd data) and keep the data at exit")
	var users userFlag
	flag.Var(&users, "user", "NAME=USERNAME[|GROUP,GROUP...] writes NAME.kubeconfig with a client certificate (repeatable)")
	flag.Parse()
	if *dir == "" {
		return errors.New("--dir is required")
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watchForStop(ctx, cancel, *stdinWatch)

	previous, resuming := (*state)(nil), false
	if *resume {
		previous, err = readState(abs)
		if err != nil {
			return err
		}
		resuming = previous != nil
	}
	var ca *authority
	if resuming {
		if ca, err = readCA(abs); err != nil {
			return err
		}
	} else {
		if ca, err = newCA(); err != nil {
			return err
		}
		if err := ca.write(abs); err != nil {
			return err
		}
	}
	ports, err := choosePorts(previous)
	if err != nil {
		return err
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", ports.api)

	etcdURL, etcdPeerURL, stopEtcd, err := startEtcd(filepath.Join(abs, "etcd"), ports, resuming, *resume, *verbose)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer stopEtcd()

	if err := writeServingCert(ca, abs); err != nil {
		return err
	}
	// Tokens already issued stay valid only if the signing key survives a restart.
	if !resuming {
		if err := writeSAKeys(abs); err != nil {
			return err
		}
	}
	st := state{Server: server, EtcdURL: etcdURL, EtcdPeerURL: etcdPeerURL, Dir: abs, Kubeconfigs: map[string]string{},
		CACert: filepath.Join(abs, "ca.crt"), CAKey: filepath.Join(abs, "ca.key"), PID: os.Getpid()}
	st.AdminKubeconfig, err = writeKubeconfig(ca, abs, "admin", "kube-harness-admin", []string{"system:masters"}, server)
	if err != nil {
		return err
	}
	for _, u := range users {
		name, rest, ok := strings.Cut(u, "=")
		if !ok || name == "" || rest == "" {
			return fmt.Errorf("--user %q: want NAME=USERNAME[|GROUP,GROUP...]", u)
		}
		// '|' separates the groups because usernames such as
		// system:serviceaccount:NS:NAME contain colons themselves.
		username, groupList, _ := strings.Cut(rest, "|")
		var groups []string
		if groupList != "" {
			groups = strings.Split(groupList, ",")
		}
		path, err := writeKubeconfig(ca, abs, name, username, groups, server)
		if err != nil {
			return err
		}
		st.Kubeconfigs[name] = path
	}

	apiErr := make(chan error, 1)
	go func() { apiErr <- runAPIServer(ctx, abs, ports.api, etcdURL, *verbose) }()
	if err := waitReady(ctx, ca, server, apiErr); err != nil {
		return err
	}

	if *kcm != "" {
		stopKCM, err := startControllerManager(ctx, *kcm, abs, ca, server, *verbose)
		if err != nil {
			return err
		}
		defer stopKCM()
	}

	out, _ := json.Marshal(st)
	if err := os.WriteFile(filepath.Join(abs, "state.json"), out, 0o600); err != nil {
		return err
	}
	fmt.Println(string(out))

	select {
	case <-ctx.Done():
		select {
		case <-apiErr:
		case <-time.After(15 * time.Second):
		}
		return nil
	case err := <-apiErr:
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("kube-apiserver exited: %v", err)
	}
}

// watchForStop cancels ctx on SIGINT/SIGTERM, on stdin EOF (when asked) and when the
// parent process goes away, so a crashed test runner never leaves a control plane behind.
// kube-apiserver installs its own SIGTERM context, so the other two raise SIGTERM on this
// process rather than only cancelling ctx.
func watchForStop(ctx context.Context, cancel context.CancelFunc, stdinWatch bool) {
	stop := func() { _ = syscall.Kill(os.Getpid(), syscall.SIGTERM) }
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel()
		<-sigs
		os.Exit(1)
	}()
	parent := os.Getppid()
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if os.Getppid() != parent {
					stop()
					return
				}
			}
		}
	}()
	if stdinWatch {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop()
		}()
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

type harnessPorts struct{ api, etcdClient, etcdPeer int }

// choosePorts reuses a previous run's ports, so its kubeconfigs and etcd membership still
// hold, or picks free ones.
func choosePorts(previous *state) (harnessPorts, error) {
	if previous != nil {
		api, err1 := portOf(previous.Server)
		client, err2 := portOf(previous.EtcdURL)
		peer, err3 := portOf(previous.EtcdPeerURL)
		if err := errors.Join(err1, err2, err3); err != nil {
			return harnessPorts{}, fmt.Errorf("state.json: %w", err)
		}
		return harnessPorts{api, client, peer}, nil
	}
	var p harnessPorts
	var err error
	for _, port := range []*int{&p.api, &p.etcdClient, &p.etcdPeer} {
		if *port, err = freePort(); err != nil {
			return p, err
		}
	}
	return p, nil
}

func portOf(raw string) (int, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return 0, err
	}
	var port int
	if _, err := fmt.Sscanf(u.Port(), "%d", &port); err != nil {
		return 0, fmt.Errorf("no port in %q", raw)
	}
	return port, nil
}

// readState returns the previous run's state.json in dir, or nil when there is none.
func readState(dir string) (*state, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("state.json: %w", err)
	}
	return &st, nil
}

func startEtcd(dataDir string, ports harnessPorts, resuming, keep, verbose bool) (string, string, func(), error) {
	if !resuming {
		_ = os.RemoveAll(dataDir)
	}
	clientPort, peerPort := ports.etcdClient, ports.etcdPeer
	cfg := embed.NewConfig()
	cfg.Name = "harness"
	cfg.Dir = dataDir
	cfg.LogLevel = "error"
	if verbose {
		cfg.LogLevel = "info"
	}
	clientURL, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", clientPort))
	peerURL, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", peerPort))
	cfg.ListenClientUrls = []url.URL{*clientURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	cfg.ListenPeerUrls = []url.URL{*peerURL}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// Test data never has to survive a machine crash, only a process restart (the page
	// cache keeps it): fsync buys nothing and costs seconds.
	cfg.UnsafeNoFsync = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return "", "", nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		return "", "", nil, errors.New("etcd did not become ready in 60s")
	}
	stop := func() {
		e.Close()
		if !keep {
			_ = os.RemoveAll(dataDir)
		}
	}
	return clientURL.String(), peerURL.String(), stop, nil
}

func runAPIServer(ctx context.Context, dir string, port int, etcdURL string, verbose bool) error {
	cmd := apiapp.NewAPIServerCommand()
	v := "0"
	if verbose {
		v = "2"
	}
	cmd.SetArgs([]string{
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--etcd-servers=" + etcdURL,
		"--tls-cert-file=" + filepath.Join(dir, "apiserver.crt"),
		"--tls-private-key-file=" + filepath.Join(dir, "apiserver.key"),
		"--client-ca-file=" + filepath.Join(dir, "ca.crt"),
		"--authorization-mode=RBAC",
		"--anonymous-auth=false",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.0.0.0/24",
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=" + v,
	})
	if !verbose {
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
	}
	cmd.SilenceUsage = true
	return cmd.ExecuteContext(ctx)
}

func waitReady(ctx context.Context, ca *authority, server string, apiErr <-chan error) error {
	cert, err := ca.issue("kube-harness-admin", []string{"system:masters"}, nil, nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{cert.tls()}, MinVersion: tls.VersionTLS12,
	}}}
	deadline := time.Now().Add(120 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-apiErr:
			return fmt.Errorf("kube-apiserver exited before ready: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		resp, err := client.Get(server + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return errors.New("kube-apiserver not ready after 120s")
}

func startControllerManager(ctx context.Context, bin, dir string, ca *authority, server string, verbose bool) (func(), error) {
	kc, err := writeKubeconfig(ca, dir, "controller-manager", "system:kube-controller-manager", nil, server)
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin,
		"--kubeconfig="+kc,
		"--authentication-kubeconfig="+kc,
		"--authorization-kubeconfig="+kc,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+filepath.Join(dir, "sa.key"),
		"--root-ca-file="+filepath.Join(dir, "ca.crt"),
		// Only what the tests rely on: namespaces really go away, owners' dependents are
		// collected, and ServiceAccounts get their tokens.
		"--controllers=namespace,garbagecollector,serviceaccount,serviceaccount-token",
		"--v=0",
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if verbose {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
		}
	}, nil
}

// ---- certificates and kubeconfigs ----

type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

type issued struct {
	certPEM, keyPEM []byte
}

func (i issued) tls() tls.Certificate {
	c, _ := tls.X509KeyPair(i.certPEM, i.keyPEM)
	return c
}

func newCA() (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kube-harness-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &authority{cert: cert, key: key}, nil
}

func readCA(dir string) (*authority, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		return nil, err
	}
	certBlock, _ := pem.Decode(certPEM)
	keyBlock, _ := pem.Decode(keyPEM)
	if certBlock == nil || keyBlock == nil {
		return nil, errors.New("ca.crt or ca.key is not PEM")
	}
	cert, err := x509.ParseCertificate(certBlock.Bytes)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParseECPrivateKey(keyBlock.Bytes)
	if err != nil {
		return nil, err
	}
	return &authority{cert: cert, key: key}, nil
}

func (a *authority) write(dir string) error {
	keyDER, err := x509.MarshalECPrivateKey(a.key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.cert.Raw}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "ca.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
}

func (a *authority) issue(cn string, orgs []string, dns []string, ips []net.IP, usage x509.ExtKeyUsage) (issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return issued{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return issued{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return issued{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return issued{}, err
	}
	return issued{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func writeServingCert(ca *authority, dir string) error {
	c, err := ca.issue("kube-apiserver", nil,
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")}, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "apiserver.crt"), c.certPEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "apiserver.key"), c.keyPEM, 0o600)
}

func writeSAKeys(dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	priv, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: priv}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600)
}

func writeKubeconfig(ca *authority, dir, name, username string, groups []string, server string) (string, error) {
	c, err := ca.issue(username, groups, nil, nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return "", err
	}
	b64 := base64.StdEncoding.EncodeToString
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: harness
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: %s
  context:
    cluster: harness
    user: %s
current-context: %s
`, server, b64(caPEM), name, b64(c.certPEM), b64(c.keyPEM), name, name, name)
	path := filepath.Join(dir, name+".kubeconfig")
	return path, os.WriteFile(path, []byte(kc), 0o600)
}
