package mqttclient

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// waitTimeout bounds every wait for something a real broker does.
const waitTimeout = 15 * time.Second

// testPKI is a throwaway CA with files for mosquitto.
type testPKI struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	pool   *x509.CertPool
	caFile string
	serial int64
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mqttclient test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{dir: dir, ca: ca, caKey: key, pool: x509.NewCertPool(), serial: 1}
	p.pool.AddCert(ca)
	p.caFile = p.write(t, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return p
}

func (p *testPKI) write(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue makes a key and certificate with CN = cn, for a server (IP SAN
// 127.0.0.1) or a client.
func (p *testPKI) issue(t *testing.T, cn string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// clientTLS is what agent/identity would hand over: the device certificate
// and the CA that verifies the broker.
func (p *testPKI) clientTLS(t *testing.T, cn string) *tls.Config {
	t.Helper()
	return &tls.Config{
		Certificates: []tls.Certificate{p.issue(t, cn, false)},
		RootCAs:      p.pool,
		MinVersion:   tls.VersionTLS12,
	}
}

// mosquitto is a broker process with an mTLS listener on a fixed port, so
// that it can be stopped and started again at the same address.
type mosquitto struct {
	t    *testing.T
	bin  string
	conf string
	log  string
	addr string
	cmd  *exec.Cmd
}

// startMosquitto starts a Mosquitto that requires client certificates from
// pki. It skips when mosquitto is not installed, except in CI (CI set),
// where a missing broker is a failure.
func startMosquitto(t *testing.T, pki *testPKI) *mosquitto {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/mosquitto"); serr == nil {
			bin, err = "/usr/sbin/mosquitto", nil
		}
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mosquitto is required in CI: %v", err)
		}
		t.Skip("mosquitto not installed (apt-get install mosquitto); skipping tests against a real broker")
	}
	srv := pki.issue(t, "localhost", true)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate[0]})
	keyDER, err := x509.MarshalPKCS8PrivateKey(srv.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile := pki.write(t, "server.pem", certPEM)
	keyFile := pki.write(t, "server.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	// "user root" keeps a root-run broker from switching to user mosquitto,
	// which could not read t.TempDir; it is ignored when not root.
	conf := fmt.Sprintf(`persistence false
user root
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
listener %s 127.0.0.1
allow_anonymous true
cafile %s
certfile %s
keyfile %s
require_certificate true
use_identity_as_username true
`, port, pki.caFile, certFile, keyFile)
	m := &mosquitto{t: t, bin: bin, conf: pki.write(t, "mosquitto.conf", []byte(conf)),
		log: filepath.Join(pki.dir, "mosquitto.log"), addr: addr}
	m.Start()
	t.Cleanup(func() {
		m.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(m.log)
			t.Logf("mosquitto log:\n%s", b)
		}
	})
	return m
}

// Start runs the broker and waits until it accepts connections.
func (m *mosquitto) Start() {
	m.t.Helper()
	logf, err := os.OpenFile(m.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		m.t.Fatal(err)
	}
	defer logf.Close()
	m.cmd = exec.Command(m.bin, "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("start mosquitto: %v", err)
	}
	deadline := time.Now().Add(waitTimeout)
	for {
		c, err := net.DialTimeout("tcp", m.addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(m.log)
			m.t.Fatalf("mosquitto did not listen on %s: %v\n%s", m.addr, err, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the broker (no clean shutdown) and waits for it to exit.
func (m *mosquitto) Stop() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Kill()
	_ = m.cmd.Wait()
	m.cmd = nil
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// proxy is a TCP relay between a client and the broker that a test can cut
// (an abrupt network failure) or make refuse connections (broker away).
type proxy struct {
	ln       net.Listener
	upstream string
	wg       sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]bool
	refuse bool
}

func startProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, upstream: upstream, conns: map[net.Conn]bool{}}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		ln.Close()
		p.Cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) Addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse
		p.mu.Unlock()
		if refuse {
			down.Close()
			continue
		}
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			down.Close()
			continue
		}
		p.mu.Lock()
		p.conns[down], p.conns[up] = true, true
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		p.wg.Go(func() { pipe(up, down) })
		p.wg.Go(func() { pipe(down, up) })
	}
}

// Cut closes every relayed connection at once, as a failing network would.
func (p *proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// SetRefuse makes the proxy close new connections at once (and cuts the
// current ones), so the broker looks unreachable.
func (p *proxy) SetRefuse(refuse bool) {
	p.mu.Lock()
	p.refuse = refuse
	p.mu.Unlock()
	if refuse {
		p.Cut()
	}
}

// received is one message an observer saw.
type received struct {
	topic    string
	payload  []byte
	retained bool
}

// observer is a plain paho client that records what arrives on a filter.
type observer struct {
	cl  mqtt.Client
	msg chan received
}

func newObserver(t *testing.T, addr string, tlsCfg *tls.Config, id, filter string) *observer {
	t.Helper()
	o := &observer{msg: make(chan received, 20000)}
	opts := mqtt.NewClientOptions().AddBroker("tls://" + addr).SetClientID(id).
		SetTLSConfig(tlsCfg).SetProtocolVersion(4).SetAutoReconnect(false).SetCleanSession(true)
	o.cl = mqtt.NewClient(opts)
	if tok := o.cl.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("observer connect: %v", tok.Error())
	}
	t.Cleanup(func() { o.cl.Disconnect(0) })
	if filter != "" {
		tok := o.cl.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
			o.msg <- received{topic: m.Topic(), payload: m.Payload(), retained: m.Retained()}
		})
		if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
			t.Fatalf("observer subscribe: %v", tok.Error())
		}
	}
	return o
}

// publish sends one QoS 1 message and waits for its PUBACK.
func (o *observer) publish(t *testing.T, topic string, payload []byte, retained bool) {
	t.Helper()
	tok := o.cl.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("observer publish %s: %v", topic, tok.Error())
	}
}

// next returns the next message on topic, skipping others.
func (o *observer) next(t *testing.T, topic string) received {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case m := <-o.msg:
			if m.topic == topic {
				return m
			}
		case <-timeout:
			t.Fatalf("no message on %s within %s", topic, waitTimeout)
		}
	}
}

// eventually polls cond until it holds or the wait times out.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
