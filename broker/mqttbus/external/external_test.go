package external_test

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
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggfleet/ggfleet/broker/mqttbus"
	"github.com/ggfleet/ggfleet/broker/mqttbus/external"
	"github.com/ggfleet/ggfleet/broker/mqttbus/external/mosquittotest"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

const waitLimit = 30 * time.Second

// deviceCA plays ggfleet's CA: it issues the device and broker client
// certificates and signs the CRL Mosquitto checks.
type deviceCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	serial int64
}

func newDeviceCA(t *testing.T) *deviceCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test device CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &deviceCA{cert: c, key: key, serial: 100}
}

func (ca *deviceCA) issue(t *testing.T, cn string) (tls.Certificate, *big.Int) {
	t.Helper()
	ca.serial++
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(ca.serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, tmpl.SerialNumber
}

// writeCRL writes crl.pem revoking serials.
func (ca *deviceCA) writeCRL(t *testing.T, dir string, serials ...*big.Int) {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(time.Now().UnixNano()),
		ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour), RevokedCertificateEntries: entries}, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "crl.pem"), pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}))
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// env is a Mosquitto with the documented configuration and the CAs.
type env struct {
	srv    *mosquittotest.Server
	ca     *deviceCA
	roots  *x509.CertPool
	broker tls.Certificate
}

func newEnv(t *testing.T) *env {
	t.Helper()
	mosquittotest.Binary(t)
	dir := mosquittotest.Dir(t)
	srvCA := mosquittotest.ServerTLS(t, dir)
	ca := newDeviceCA(t)
	writeFile(t, filepath.Join(dir, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}))
	ca.writeCRL(t, dir)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(srvCA)
	brokerCert, _ := ca.issue(t, "ggfleet.broker")
	return &env{srv: mosquittotest.Start(t, dir, ""), ca: ca, roots: roots, broker: brokerCert}
}

// recorder counts what a bus's handlers received.
type recorder struct {
	mu       sync.Mutex
	health   map[string][]int64 // thing → uptimeSeconds of each report
	connects []string
}

func (r *recorder) handlers() mqttbus.Handlers {
	return mqttbus.Handlers{
		OnHealth: func(_ context.Context, thing string, m mqttmsg.HealthMsg) {
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.health == nil {
				r.health = map[string][]int64{}
			}
			r.health[thing] = append(r.health[thing], m.UptimeSeconds)
		},
		OnConnect: func(_ context.Context, thing string) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.connects = append(r.connects, thing)
		},
	}
}

func (r *recorder) reports(thing string) []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int64(nil), r.health[thing]...)
}

// startBus runs an external.Bus until the test ends and waits until it is
// subscribed.
func (e *env) startBus(t *testing.T, id string, h mqttbus.Handlers) *external.Bus {
	t.Helper()
	b, err := external.New(external.Config{URL: e.srv.URL(), ClientID: id, Certificate: e.broker, RootCAs: e.roots,
		Handlers: h, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = b.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitUntil(t, id+" subscribed", b.Connected)
	return b
}

// device connects as thing with cert; err is the connect error.
func (e *env) device(t *testing.T, thing string, cert tls.Certificate) (paho.Client, error) {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker("tls://" + e.srv.Addr).SetClientID(thing).SetProtocolVersion(4).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).
		SetTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: e.roots, ServerName: "127.0.0.1"})
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(waitLimit) {
		return nil, fmt.Errorf("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

func publish(t *testing.T, c paho.Client, topic string, retained bool, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	tok := c.Publish(topic, 1, retained, b)
	if !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
		t.Fatalf("publish to %s: %v", topic, tok.Error())
	}
}

func health(uptime int64) mqttmsg.HealthMsg {
	return mqttmsg.HealthMsg{Version: 1, Timestamp: time.Now().UTC(), IntervalSeconds: 60, Status: mqttmsg.Healthy, UptimeSeconds: uptime}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two replicas share the subscriptions: every report is handled exactly
// once, and both replicas take a share.
func TestSharedSubscriptionsHandleEachMessageOnce(t *testing.T) {
	e := newEnv(t)
	var r1, r2 recorder
	e.startBus(t, "ggfleet.broker.r1", r1.handlers())
	e.startBus(t, "ggfleet.broker.r2", r2.handlers())
	cert, _ := e.ca.issue(t, "thing-a")
	dev, err := e.device(t, "thing-a", cert)
	if err != nil {
		t.Fatalf("thing-a cannot connect: %v", err)
	}
	const n = 40
	for i := int64(1); i <= n; i++ {
		publish(t, dev, mqttmsg.Topic("thing-a", mqttmsg.Health), false, health(i))
	}
	waitUntil(t, "all reports handled", func() bool { return len(r1.reports("thing-a"))+len(r2.reports("thing-a")) >= n })
	time.Sleep(300 * time.Millisecond) // a duplicate would arrive now
	seen := map[int64]int{}
	for _, u := range append(r1.reports("thing-a"), r2.reports("thing-a")...) {
		seen[u]++
	}
	for i := int64(1); i <= n; i++ {
		if seen[i] != 1 {
			t.Errorf("report %d handled %d times, want once", i, seen[i])
		}
	}
	if len(seen) != n {
		t.Errorf("handled %d distinct reports, want %d", len(seen), n)
	}
	if len(r1.reports("thing-a")) == 0 || len(r2.reports("thing-a")) == 0 {
		t.Errorf("replicas handled %d and %d reports: the subscription is not shared", len(r1.reports("thing-a")), len(r2.reports("thing-a")))
	}
}

// The documented ACL keeps a device to its own topics; the broker's
// deployments reach the device, and ONLINE runs OnConnect.
func TestACLAndDeliveryThroughMosquitto(t *testing.T) {
	e := newEnv(t)
	var r recorder
	bus := e.startBus(t, "ggfleet.broker.acl", r.handlers())
	certA, _ := e.ca.issue(t, "thing-a")
	a, err := e.device(t, "thing-a", certA)
	if err != nil {
		t.Fatalf("thing-a cannot connect: %v", err)
	}

	// Nor publish as thing-b: Mosquitto drops it, the broker never sees it.
	publish(t, a, mqttmsg.Topic("thing-b", mqttmsg.Health), false, health(666))
	// Its own report arrives, and so does its ONLINE.
	publish(t, a, mqttmsg.Topic("thing-a", mqttmsg.Health), false, health(1))
	publish(t, a, mqttmsg.Topic("thing-a", mqttmsg.Connection), true, mqttmsg.ConnectionMsg{Version: 1, State: mqttmsg.Online, Timestamp: time.Now()})
	waitUntil(t, "thing-a's report", func() bool { return len(r.reports("thing-a")) == 1 })
	waitUntil(t, "OnConnect for thing-a", func() bool { r.mu.Lock(); defer r.mu.Unlock(); return len(r.connects) == 1 })
	time.Sleep(300 * time.Millisecond)
	if got := r.reports("thing-b"); len(got) != 0 {
		t.Errorf("a report published by thing-a as thing-b reached the broker: %v", got)
	}

	// The broker's retained deployment reaches thing-a's subscription;
	// thing-b's does not, though Mosquitto 2.0 grants the subscription (it
	// applies the ACL to each delivery).
	var mu sync.Mutex
	received := map[string]string{}
	for _, thing := range []string{"thing-a", "thing-b"} {
		topic := mqttmsg.Topic(thing, mqttmsg.Deployments)
		tok := a.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
			mu.Lock()
			defer mu.Unlock()
			received[m.Topic()] = string(m.Payload())
		})
		if !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
			t.Fatalf("subscribe to %s: %v", topic, tok.Error())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for _, thing := range []string{"thing-b", "thing-a"} {
		if err := bus.Publish(ctx, thing, mqttmsg.Deployments, []byte(`{"version":1,"for":"`+thing+`"}`), true); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "thing-a's deployment delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return received[mqttmsg.Topic("thing-a", mqttmsg.Deployments)] == `{"version":1,"for":"thing-a"}`
	})
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	if p, ok := received[mqttmsg.Topic("thing-b", mqttmsg.Deployments)]; ok {
		t.Errorf("thing-a received thing-b's deployment %q", p)
	}
	mu.Unlock()
	if err := bus.Publish(ctx, "thing-a", "deployments/#", []byte(`{}`), false); err == nil {
		t.Error("Publish to a wildcard suffix succeeded")
	}
}

// A certificate in the CRL is refused once Mosquitto re-read it (SIGHUP);
// others still connect.
func TestRevokedCertificateRefusedAfterReload(t *testing.T) {
	e := newEnv(t)
	certA, serialA := e.ca.issue(t, "thing-a")
	certB, _ := e.ca.issue(t, "thing-b")
	if _, err := e.device(t, "thing-a", certA); err != nil {
		t.Fatalf("thing-a cannot connect before revocation: %v", err)
	}
	e.ca.writeCRL(t, e.srv.Dir, serialA)
	if err := e.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "thing-a refused", func() bool {
		c, err := e.device(t, "thing-a", certA)
		if err == nil {
			c.Disconnect(0)
		}
		return err != nil
	})
	if _, err := e.device(t, "thing-b", certB); err != nil {
		t.Fatalf("thing-b (not revoked) cannot connect: %v", err)
	}
}

// A replica that is gone takes no share of the messages: after one of two
// replicas stopped, every report goes to the other, none is queued for the
// one that left. (With persistent sessions Mosquitto kept queueing half of
// them for it, so a replica that was killed and not started again
// swallowed its share of every agent's reports.)
func TestGoneReplicaTakesNoShare(t *testing.T) {
	e := newEnv(t)
	var stays, leaves recorder
	e.startBus(t, "ggfleet.broker.stays", stays.handlers())
	b, err := external.New(external.Config{URL: e.srv.URL(), ClientID: "ggfleet.broker.leaves", Certificate: e.broker, RootCAs: e.roots,
		Handlers: leaves.handlers(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = b.Run(ctx); close(done) }()
	waitUntil(t, "the second replica subscribed", b.Connected)
	cancel()
	<-done

	cert, _ := e.ca.issue(t, "thing-a")
	dev, err := e.device(t, "thing-a", cert)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := int64(1); i <= n; i++ {
		publish(t, dev, mqttmsg.Topic("thing-a", mqttmsg.Health), false, health(i))
	}
	waitUntil(t, "every report handled by the replica that stayed", func() bool { return len(stays.reports("thing-a")) >= n })
	if got := leaves.reports("thing-a"); len(got) != 0 {
		t.Errorf("the stopped replica handled %v", got)
	}
}

// One replica never handles two messages of the same thing at once (they
// are handled in the order Mosquitto delivered them), while other things'
// messages are handled meanwhile.
func TestOneThingsMessagesHandledOneAtATime(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	active := map[string]int{}
	handled := map[string]int{}
	var overlaps, parallel int
	h := mqttbus.Handlers{OnHealth: func(_ context.Context, thing string, m mqttmsg.HealthMsg) {
		mu.Lock()
		active[thing]++
		if active[thing] > 1 {
			overlaps++
		}
		if len(active) > 1 && active["thing-a"] > 0 && active["thing-b"] > 0 {
			parallel++
		}
		mu.Unlock()
		time.Sleep(time.Duration(1+m.UptimeSeconds%3) * time.Millisecond) // uneven handling times
		mu.Lock()
		active[thing]--
		if active[thing] == 0 {
			delete(active, thing)
		}
		handled[thing]++
		mu.Unlock()
	}}
	e.startBus(t, "ggfleet.broker.order", h)
	const n = 60
	var wg sync.WaitGroup
	for _, thing := range []string{"thing-a", "thing-b"} {
		cert, _ := e.ca.issue(t, thing)
		dev, err := e.device(t, thing, cert)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			toks := make([]paho.Token, 0, n)
			for i := int64(1); i <= n; i++ {
				b, _ := json.Marshal(health(i))
				toks = append(toks, dev.Publish(mqttmsg.Topic(thing, mqttmsg.Health), 1, false, b))
			}
			for _, tok := range toks {
				tok.WaitTimeout(waitLimit)
			}
		}()
	}
	wg.Wait()
	waitUntil(t, "every report handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return handled["thing-a"] == n && handled["thing-b"] == n
	})
	mu.Lock()
	defer mu.Unlock()
	if overlaps > 0 {
		t.Errorf("%d times a thing's report was handled while another of its reports still was", overlaps)
	}
	if parallel == 0 {
		t.Errorf("thing-a's and thing-b's reports were never handled at the same time: one thing holds up the others")
	}
}

// A burst faster than the broker handles waits at Mosquitto and is handled
// in full: 15,000 reports from 25 devices against a handler that takes
// 10 ms, so more than 10,000 queue up for the bus at once. With the
// documented configuration's earlier max_queued_messages (10,000),
// Mosquitto dropped thousands of them, each acknowledged to its device.
func TestBurstQueuedNotDropped(t *testing.T) {
	e := newEnv(t)
	const devices, each = 25, 600
	var handled atomic.Int64
	e.startBus(t, "ggfleet.broker.slow", mqttbus.Handlers{OnHealth: func(context.Context, string, mqttmsg.HealthMsg) {
		time.Sleep(10 * time.Millisecond)
		handled.Add(1)
	}})
	payload, err := json.Marshal(health(1))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var unacked atomic.Int64
	for i := range devices {
		thing := fmt.Sprintf("burst-%02d", i)
		cert, _ := e.ca.issue(t, thing)
		dev, err := e.device(t, thing, cert)
		if err != nil {
			t.Fatalf("%s cannot connect: %v", thing, err)
		}
		wg.Go(func() {
			toks := make([]paho.Token, each)
			for j := range toks {
				toks[j] = dev.Publish(mqttmsg.Topic(thing, mqttmsg.Health), 1, false, payload)
			}
			for _, tok := range toks {
				if !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
					unacked.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := unacked.Load(); n > 0 {
		t.Fatalf("%d reports not acknowledged by Mosquitto", n)
	}
	// Handling 15,000 reports at 25 × 100/s takes about 6 s: wait for
	// progress to stop, not for a time.
	last, still := int64(-1), 0
	for handled.Load() < devices*each && still < 20 {
		time.Sleep(100 * time.Millisecond)
		if n := handled.Load(); n == last {
			still++
		} else {
			last, still = n, 0
		}
	}
	if n := handled.Load(); n != devices*each {
		t.Errorf("%d of %d acknowledged reports handled: Mosquitto dropped the rest", n, devices*each)
	}
}
