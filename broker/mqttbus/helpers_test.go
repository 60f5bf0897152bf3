package mqttbus

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggfleet/ggfleet/shared/certs"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

const waitFor = 10 * time.Second

// testCA is a throwaway certificate authority made with crypto/x509.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: c, key: key}
}

func newKey(t *testing.T) crypto.Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// issue makes a leaf certificate: a server one for 127.0.0.1, or a device
// one with CN = cn.
func (ca *testCA) issue(t *testing.T, cn string, server bool) tls.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// fakeAuth is the Authorizer: certificates are active once allowed.
type fakeAuth struct {
	mu     sync.Mutex
	active map[string]bool
}

func (a *fakeAuth) CertificateActive(_ context.Context, id string) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.active[id], nil
}

func (a *fakeAuth) set(c tls.Certificate, active bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.active[certs.ID(c.Leaf)] = active
}

// event is one handler call.
type event struct {
	kind  string // connect, disconnect, connection, health, status, hello, message
	thing string
	msg   any
}

// recorder records handler calls in order.
type recorder struct {
	mu     sync.Mutex
	events []event
}

func (r *recorder) add(e event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) find(kind, thing string) []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []event
	for _, e := range r.events {
		if e.kind == kind && e.thing == thing {
			out = append(out, e)
		}
	}
	return out
}

// kinds lists the kinds of thing's events in order.
func (r *recorder) kinds(thing string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		if e.thing == thing {
			out = append(out, e.kind)
		}
	}
	return out
}

func (r *recorder) handlers() Handlers {
	return Handlers{
		OnConnect:    func(_ context.Context, thing string) { r.add(event{"connect", thing, nil}) },
		OnDisconnect: func(_ context.Context, thing string) { r.add(event{"disconnect", thing, nil}) },
		OnConnection: func(_ context.Context, thing string, m mqttmsg.ConnectionMsg) {
			r.add(event{"connection", thing, m})
		},
		OnHealth: func(_ context.Context, thing string, m mqttmsg.HealthMsg) { r.add(event{"health", thing, m}) },
		OnDeploymentStatus: func(_ context.Context, thing string, m mqttmsg.DeploymentStatusMsg) {
			r.add(event{"status", thing, m})
		},
		OnHello: func(_ context.Context, thing string, m mqttmsg.HelloMsg) { r.add(event{"hello", thing, m}) },
		OnMessage: func(_ context.Context, thing, suffix string, payload []byte) {
			r.add(event{"message", thing, suffix + " " + string(payload)})
		},
	}
}

// syncBuffer collects log output from the broker's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is a running Bus with its CA, authorizer and recorded handler calls.
type env struct {
	bus  *Bus
	ca   *testCA
	auth *fakeAuth
	rec  *recorder
	logs *syncBuffer
	stop func() error // cancels Run and returns its result
}

func start(t *testing.T, mod ...func(*Config)) *env {
	t.Helper()
	e := &env{
		ca:   newTestCA(t, "ggfleet test CA"),
		auth: &fakeAuth{active: map[string]bool{}},
		rec:  &recorder{},
		logs: &syncBuffer{},
	}
	server := e.ca.issue(t, "127.0.0.1", true)
	cfg := Config{
		Listen:      "127.0.0.1:0",
		Certificate: func(context.Context) (tls.Certificate, error) { return server, nil },
		ClientCAs: func(context.Context) (*x509.CertPool, error) {
			p := x509.NewCertPool()
			p.AddCert(e.ca.cert)
			return p, nil
		},
		Authorizer: e.auth,
		Handlers:   e.rec.handlers(),
		Logger:     slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, m := range mod {
		m(&cfg)
	}
	bus, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.bus = bus
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bus.Run(ctx) }()
	var once sync.Once
	var runErr error
	e.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(waitFor):
				runErr = errors.New("Run did not return after its context ended")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := e.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() {
			t.Logf("broker log:\n%s", e.logs.String())
		}
	})
	eventually(t, "the broker to listen", func() bool {
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		default:
		}
		return bus.Addr() != ""
	})
	return e
}

// device returns a certificate for thing from the env's CA, active.
func (e *env) device(t *testing.T, thing string) tls.Certificate {
	t.Helper()
	c := e.ca.issue(t, thing, false)
	e.auth.set(c, true)
	return c
}

// client is a paho client with the connection it dialled, so a test can
// cut the TCP connection without a DISCONNECT.
type client struct {
	paho.Client
	mu   sync.Mutex
	conn net.Conn
	msgs chan paho.Message
}

// kill closes the TCP connection abruptly.
func (c *client) kill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.conn.Close()
}

// connect dials the broker as clientID with cert (nil for none).
func (e *env) connect(t *testing.T, clientID string, cert *tls.Certificate, opts ...func(*paho.ClientOptions)) (*client, error) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(e.ca.cert)
	tlsCfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		// Always send it, even when the broker did not list its CA as acceptable.
		tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	c := &client{msgs: make(chan paho.Message, 100)}
	o := paho.NewClientOptions().
		AddBroker("tls://" + e.bus.Addr()).
		SetClientID(clientID).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(waitFor).
		SetKeepAlive(30 * time.Second).
		SetTLSConfig(tlsCfg).
		SetCustomOpenConnectionFn(func(uri *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			d := &tls.Dialer{Config: tlsCfg}
			conn, err := d.Dial("tcp", uri.Host)
			if err != nil {
				return nil, err
			}
			c.mu.Lock()
			c.conn = conn
			c.mu.Unlock()
			return conn, nil
		})
	for _, m := range opts {
		m(o)
	}
	c.Client = paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(waitFor) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

// mustConnect connects thing with a fresh active certificate.
func (e *env) mustConnect(t *testing.T, thing string, opts ...func(*paho.ClientOptions)) *client {
	t.Helper()
	cert := e.device(t, thing)
	c, err := e.connect(t, thing, &cert, opts...)
	if err != nil {
		t.Fatalf("connect %s: %v", thing, err)
	}
	return c
}

// subscribe subscribes at QoS 1 and returns the granted code per filter.
func (c *client) subscribe(t *testing.T, filter string) byte {
	t.Helper()
	tok := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) { c.msgs <- m })
	if !tok.WaitTimeout(waitFor) {
		t.Fatalf("subscribe %s timed out", filter)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	return tok.(*paho.SubscribeToken).Result()[filter]
}

// publish publishes and waits for the broker's acknowledgement (QoS 1).
func (c *client) publish(t *testing.T, topic string, qos byte, retained bool, payload string) error {
	t.Helper()
	tok := c.Publish(topic, qos, retained, payload)
	if !tok.WaitTimeout(waitFor) {
		return errors.New("publish timed out")
	}
	return tok.Error()
}

// next returns the next message the client received.
func (c *client) next(t *testing.T) paho.Message {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(waitFor):
		t.Fatal("no message arrived")
		return nil
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func healthJSON(thing string) string {
	return `{"version":1,"thingName":"` + thing + `","status":"HEALTHY","intervalSeconds":30,"nucleus":{"state":"RUNNING"}}`
}

const offlineJSON = `{"version":1,"state":"OFFLINE","timestamp":"2026-11-29T12:00:00Z"}`

func contains(s, sub string) bool { return strings.Contains(s, sub) }
