// Command mqttbench compares the embedded MQTT broker with Mosquitto run
// with docs/mosquitto.md's configuration, and prints the figures
// BENCHMARKS.md reports as a Markdown fragment:
//
//   - P5, health ingestion: -publishers agents each publish -messages
//     health reports at QoS 1, one at a time (waiting for each PUBACK);
//     the acked rate at the agents, and the rate at which the broker's
//     handlers got them (the embedded broker's handlers, or an
//     external.Bus subscribed through Mosquitto with shared subscriptions).
//     The handlers only count: this measures the MQTT path, not the
//     database.
//   - P7, reconnect storm: -agents agents connect at once over mutual TLS
//     (-concurrency at a time), each a full TLS handshake and MQTT
//     CONNECT/CONNACK; connects per second, next to the rate of bare TLS
//     handshakes against a Go tls.Listener in this process with the same
//     certificates.
//
// Everything runs on 127.0.0.1 with certificates made here (EC P-256); the
// embedded broker's certificate check is an always-yes authorizer (no
// database). It needs mosquitto installed (apt-get install mosquitto) and
// the source tree (it reads docs/mosquitto). It asserts nothing.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggfleet/ggfleet/broker/mqttbus"
	"github.com/ggfleet/ggfleet/broker/mqttbus/external"
	"github.com/ggfleet/ggfleet/broker/mqttbus/external/mosquittotest"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

func main() {
	agents := flag.Int("agents", 2000, "agents in the reconnect storm (P7)")
	concurrency := flag.Int("concurrency", 64, "connects in flight at once (P7)")
	publishers := flag.Int("publishers", 100, "agents publishing health (P5)")
	messages := flag.Int("messages", 100, "health reports per publishing agent (P5)")
	out := flag.String("out", "", "also write the Markdown fragment to this file")
	flag.Parse()
	if err := run(*agents, *concurrency, *publishers, *messages, *out); err != nil {
		fmt.Fprintln(os.Stderr, "mqttbench:", err)
		os.Exit(1)
	}
}

func run(agents, concurrency, publishers, messages int, outPath string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pki, err := newPKI(max(agents, publishers))
	if err != nil {
		return err
	}

	// The embedded broker.
	var embeddedHandled atomic.Int64
	emb, err := mqttbus.New(mqttbus.Config{
		Listen:      "127.0.0.1:0",
		Certificate: func(context.Context) (tls.Certificate, error) { return pki.server, nil },
		ClientCAs:   func(context.Context) (*x509.CertPool, error) { return pki.pool, nil },
		Authorizer:  allowAll{},
		Logger:      slog.New(slog.DiscardHandler),
		Handlers: mqttbus.Handlers{OnHealth: func(context.Context, string, mqttmsg.HealthMsg) {
			embeddedHandled.Add(1)
		}},
	})
	if err != nil {
		return err
	}
	embDone := make(chan error, 1)
	go func() { embDone <- emb.Run(ctx) }()
	defer func() { cancel(); <-embDone }()
	for emb.Addr() == "" {
		select {
		case err := <-embDone:
			return fmt.Errorf("embedded broker: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}

	// Mosquitto with the documented configuration, and ggfleet's client.
	dir, err := os.MkdirTemp("", "mqttbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	srvCA, err := mosquittotest.WriteServerTLS(dir)
	if err != nil {
		return err
	}
	if err := pki.writeMosquittoFiles(dir); err != nil {
		return err
	}
	addr, err := mosquittotest.PickAddr()
	if err != nil {
		return err
	}
	mosq, err := mosquittotest.Launch(dir, addr)
	if err != nil {
		return err
	}
	defer mosq.Stop()
	mosqRoots := x509.NewCertPool()
	mosqRoots.AppendCertsFromPEM(srvCA)
	var extHandled atomic.Int64
	ext, err := external.New(external.Config{URL: mosq.URL(), ClientID: "ggfleet.broker.bench", Certificate: pki.broker, RootCAs: mosqRoots,
		Logger: slog.New(slog.DiscardHandler), Handlers: mqttbus.Handlers{OnHealth: func(context.Context, string, mqttmsg.HealthMsg) {
			extHandled.Add(1)
		}}})
	if err != nil {
		return err
	}
	extCtx, extCancel := context.WithCancel(ctx)
	extDone := make(chan error, 1)
	go func() { extDone <- ext.Run(extCtx) }()
	defer func() { extCancel(); <-extDone }()
	if err := waitFor(30*time.Second, ext.Connected); err != nil {
		return fmt.Errorf("ggfleet's client at Mosquitto: %w", err)
	}

	embTarget := target{name: "embedded (mochi-mqtt)", addr: emb.Addr(), roots: pki.pool, handled: &embeddedHandled}
	mosqTarget := target{name: "Mosquitto " + mosquittoVersion(mosq) + " + ggfleet shared-subscription client", addr: addr, roots: mosqRoots, handled: &extHandled}

	var md []string
	md = append(md, fmt.Sprintf("Measured %s on %s/%s, %d CPUs, Go %s.\n", time.Now().UTC().Format("2006-01-02"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version()))
	md = append(md, fmt.Sprintf("### P5: health ingestion (%d agents × %d reports, QoS 1, one in flight per agent)\n", publishers, messages))
	md = append(md, "| broker | acked reports/s at the agents | handled reports/s at ggfleet | handled |", "|---|---|---|---|")
	for _, tg := range []target{embTarget, mosqTarget} {
		fmt.Fprintf(os.Stderr, "P5 %s ...\n", tg.name)
		r, err := ingest(tg, pki, publishers, messages)
		if err != nil {
			return fmt.Errorf("P5 %s: %w", tg.name, err)
		}
		md = append(md, fmt.Sprintf("| %s | %.0f | %.0f | %d/%d |", tg.name, r.ackedRate, r.handledRate, r.handled, publishers*messages))
	}

	md = append(md, "", fmt.Sprintf("### P7: reconnect storm (%d agents over mutual TLS, %d connecting at once)\n", agents, concurrency))
	md = append(md, "| what | connects/s | failed | wall time |", "|---|---|---|---|")
	fmt.Fprintln(os.Stderr, "P7 bare TLS handshakes ...")
	tlsRate, tlsFailed, tlsWall, err := tlsStorm(pki, agents, concurrency)
	if err != nil {
		return err
	}
	md = append(md, fmt.Sprintf("| bare TLS handshakes (Go tls.Listener, in process) | %.0f | %d | %s |", tlsRate, tlsFailed, tlsWall.Round(time.Millisecond)))
	for _, tg := range []target{embTarget, mosqTarget} {
		fmt.Fprintf(os.Stderr, "P7 %s ...\n", tg.name)
		rate, failed, wall := storm(tg, pki, agents, concurrency)
		md = append(md, fmt.Sprintf("| %s: TLS + CONNECT/CONNACK | %.0f | %d | %s |", tg.name, rate, failed, wall.Round(time.Millisecond)))
	}
	text := ""
	for _, l := range md {
		text += l + "\n"
	}
	fmt.Print(text)
	if outPath != "" {
		if err := os.MkdirAll(filepath.Dir(outPath), 0o755); err != nil {
			return err
		}
		return os.WriteFile(outPath, []byte(text), 0o644)
	}
	return nil
}

// target is one broker under test.
type target struct {
	name    string
	addr    string
	roots   *x509.CertPool
	handled *atomic.Int64
}

// ingestResult is P5's figures for one broker.
type ingestResult struct {
	ackedRate, handledRate float64
	handled                int64
}

// ingest connects the publishers, then has each publish its reports one
// at a time.
func ingest(tg target, pki *pki, publishers, messages int) (ingestResult, error) {
	clients := make([]paho.Client, publishers)
	for i := range clients {
		c, err := connect(tg, pki.things[i], pki.agents[i])
		if err != nil {
			return ingestResult{}, fmt.Errorf("connect %s: %w", pki.things[i], err)
		}
		clients[i] = c
	}
	defer func() {
		for _, c := range clients {
			c.Disconnect(0)
		}
	}()
	payload, _ := json.Marshal(mqttmsg.HealthMsg{Version: 1, Timestamp: time.Now().UTC(), IntervalSeconds: 60, Status: mqttmsg.Healthy})
	before := tg.handled.Load()
	var failed atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := mqttmsg.Topic(pki.things[i], mqttmsg.Health)
			for range messages {
				tok := c.Publish(topic, 1, false, payload)
				if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	acked := time.Since(start)
	want := before + int64(publishers*messages)
	_ = waitFor(60*time.Second, func() bool { return tg.handled.Load() >= want })
	handledWall := time.Since(start)
	n := int64(publishers*messages) - failed.Load()
	got := tg.handled.Load() - before
	if failed.Load() > 0 {
		return ingestResult{}, fmt.Errorf("%d publishes were not acknowledged", failed.Load())
	}
	return ingestResult{ackedRate: float64(n) / acked.Seconds(), handledRate: float64(got) / handledWall.Seconds(), handled: got}, nil
}

// storm connects every agent, concurrency at a time, and keeps them
// connected until all have tried; then disconnects them.
func storm(tg target, pki *pki, agents, concurrency int) (rate float64, failed int, wall time.Duration) {
	clients := make([]paho.Client, agents)
	var nFailed atomic.Int64
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range agents {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := connect(tg, pki.things[i], pki.agents[i])
			if err != nil {
				nFailed.Add(1)
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	wall = time.Since(start)
	for _, c := range clients {
		if c != nil {
			c.Disconnect(0)
		}
	}
	ok := agents - int(nFailed.Load())
	return float64(ok) / wall.Seconds(), int(nFailed.Load()), wall
}

// tlsStorm does agents bare TLS handshakes against an in-process listener.
func tlsStorm(pki *pki, agents, concurrency int) (float64, int, time.Duration, error) {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pki.server},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pki.pool})
	if err != nil {
		return 0, 0, 0, err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if tc, ok := c.(*tls.Conn); ok && tc.Handshake() == nil {
					_, _ = io.Copy(io.Discard, c)
				}
			}()
		}
	}()
	var failed atomic.Int64
	sem := make(chan struct{}, concurrency)
	conns := make([]net.Conn, agents)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range agents {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{Certificates: []tls.Certificate{pki.agents[i]}, RootCAs: pki.pool, ServerName: "127.0.0.1"})
			if err != nil {
				failed.Add(1)
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	ok := agents - int(failed.Load())
	return float64(ok) / wall.Seconds(), int(failed.Load()), wall, nil
}

// connect opens an agent-like MQTT session (client id = thing).
func connect(tg target, thing string, cert tls.Certificate) (paho.Client, error) {
	opts := paho.NewClientOptions().AddBroker("tls://" + tg.addr).SetClientID(thing).SetProtocolVersion(4).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(60 * time.Second).
		SetKeepAlive(5 * time.Minute).
		SetTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: tg.roots, ServerName: "127.0.0.1"})
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(90 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return c, nil
}

func waitFor(limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// mosquittoVersion reads the version from Mosquitto's start-up log line.
func mosquittoVersion(s *mosquittotest.Server) string {
	var v string
	if _, err := fmt.Sscanf(afterPrefix(s.Log(), "mosquitto version "), "%s", &v); err != nil {
		return ""
	}
	return v
}

func afterPrefix(s, p string) string {
	for i := 0; i+len(p) <= len(s); i++ {
		if s[i:i+len(p)] == p {
			return s[i+len(p):]
		}
	}
	return ""
}

// allowAll admits every certificate (the bench has no database).
type allowAll struct{}

func (allowAll) CertificateActive(context.Context, string) (bool, error) { return true, nil }

// pki is the bench's CA and certificates.
type pki struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	pool   *x509.CertPool
	server tls.Certificate // for the embedded broker and the bare TLS listener
	broker tls.Certificate // ggfleet's client at Mosquitto (CN ggfleet.broker)
	things []string
	agents []tls.Certificate
}

func newPKI(n int) (*pki, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mqttbench CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(der)
	p := &pki{ca: ca, caKey: key, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	serial := int64(10)
	issue := func(cn string, server bool) (tls.Certificate, error) {
		serial++
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, err
		}
		t := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if server {
			t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			t.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		}
		d, err := x509.CreateCertificate(rand.Reader, t, ca, k.Public(), key)
		if err != nil {
			return tls.Certificate{}, err
		}
		leaf, _ := x509.ParseCertificate(d)
		return tls.Certificate{Certificate: [][]byte{d}, PrivateKey: k, Leaf: leaf}, nil
	}
	if p.server, err = issue("127.0.0.1", true); err != nil {
		return nil, err
	}
	if p.broker, err = issue("ggfleet.broker", false); err != nil {
		return nil, err
	}
	for i := range n {
		name := fmt.Sprintf("bench-%05d", i)
		c, err := issue(name, false)
		if err != nil {
			return nil, err
		}
		p.things = append(p.things, name)
		p.agents = append(p.agents, c)
	}
	return p, nil
}

// writeMosquittoFiles writes ca.pem and an empty crl.pem, as ggfleet's
// --mqtt-ca-file and --mqtt-crl-file would.
func (p *pki) writeMosquittoFiles(dir string) error {
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1),
		ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(24 * time.Hour)}, p.ca, p.caKey)
	if err != nil {
		return err
	}
	for name, block := range map[string]*pem.Block{"ca.pem": {Type: "CERTIFICATE", Bytes: p.ca.Raw}, "crl.pem": {Type: "X509 CRL", Bytes: crl}} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o644); err != nil {
			return err
		}
	}
	return nil
}
