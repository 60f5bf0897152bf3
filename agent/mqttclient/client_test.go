package mqttclient

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

const thing = "core-1"

func testConfig(t *testing.T, endpoint string, tlsCfg *tls.Config) Config {
	t.Helper()
	return Config{
		Endpoint:       endpoint,
		ClientID:       thing,
		Thing:          thing,
		TLS:            tlsCfg,
		OutboxDir:      t.TempDir() + "/outbox",
		KeepAlive:      5 * time.Second,
		ConnectTimeout: 5 * time.Second,
		Backoff:        Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	}
}

// runClient runs c until the test ends; stop ends it early and checks that
// Run returned nil.
func runClient(t *testing.T, c *Client) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(waitTimeout):
				t.Errorf("Run did not return within %s of its context ending", waitTimeout)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func connState(t *testing.T, m received) mqttmsg.ConnectionMsg {
	t.Helper()
	c, err := mqttmsg.Decode[mqttmsg.ConnectionMsg](m.payload)
	if err != nil {
		t.Fatalf("connection message %s: %v", m.payload, err)
	}
	return c
}

func TestMTLSSessionPublishSubscribeAndCleanShutdown(t *testing.T) {
	pki := newPKI(t)
	broker := startMosquitto(t, pki)
	obs := newObserver(t, broker.addr, pki.clientTLS(t, "observer"), "observer", mqttmsg.Prefix+thing+"/#")

	cfg := testConfig(t, broker.addr, pki.clientTLS(t, thing))
	cfg.Hello = func() mqttmsg.HelloMsg {
		return mqttmsg.HelloMsg{AgentVersion: "test", Capabilities: []string{"deployments"}}
	}
	var onConnect atomic.Int32
	cfg.OnConnect = func(context.Context) { onConnect.Add(1) }
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	c.Subscribe(mqttmsg.Deployments, func(_ context.Context, p []byte) { got <- p })
	stop := runClient(t, c)

	if s := connState(t, obs.next(t, mqttmsg.Topic(thing, mqttmsg.Connection))); s.State != mqttmsg.Online {
		t.Fatalf("first connection state = %s, want ONLINE", s.State)
	}
	hello, err := mqttmsg.Decode[mqttmsg.HelloMsg](obs.next(t, mqttmsg.Topic(thing, mqttmsg.Hello)).payload)
	if err != nil || hello.Version != 1 || hello.AgentVersion != "test" {
		t.Fatalf("hello = %+v, %v", hello, err)
	}
	eventually(t, "Connected", c.Connected)
	if n := onConnect.Load(); n != 1 {
		t.Errorf("OnConnect ran %d times, want 1", n)
	}

	status := []byte(`{"version":1,"deploymentId":"d-1","status":"SUCCEEDED"}`)
	if err := c.Publish(context.Background(), mqttmsg.DeploymentStatus, status); err != nil {
		t.Fatal(err)
	}
	if m := obs.next(t, mqttmsg.Topic(thing, mqttmsg.DeploymentStatus)); string(m.payload) != string(status) {
		t.Errorf("status payload = %s", m.payload)
	}
	if err := c.PublishNow(context.Background(), "targets/dev-1/probe/result", []byte(`{"ok":true}`), false); err != nil {
		t.Fatal(err)
	}
	obs.next(t, mqttmsg.Topic(thing, "targets/dev-1/probe/result"))

	doc := []byte(`{"version":1,"deploymentId":"d-2","templateName":"t"}`)
	obs.publish(t, mqttmsg.Topic(thing, mqttmsg.Deployments), doc, true)
	select {
	case p := <-got:
		if string(p) != string(doc) {
			t.Errorf("handler got %s", p)
		}
	case <-time.After(waitTimeout):
		t.Fatal("deployments handler not called")
	}
	eventually(t, "delivered count", func() bool { return c.Stats().Delivered == 1 && c.Stats().OutboxLen == 0 })

	stop()
	if s := connState(t, obs.next(t, mqttmsg.Topic(thing, mqttmsg.Connection))); s.State != mqttmsg.Offline {
		t.Fatalf("connection state after shutdown = %s, want OFFLINE", s.State)
	}
	if c.Connected() {
		t.Error("Connected after Run returned")
	}
	st := c.Stats()
	if st.Connects != 1 || st.Disconnects != 1 {
		t.Errorf("stats = %+v, want 1 connect and 1 disconnect", st)
	}
	if err := c.PublishNow(context.Background(), mqttmsg.Connection, nil, true); !errors.Is(err, ErrNotConnected) {
		t.Errorf("PublishNow offline = %v, want ErrNotConnected", err)
	}
}

func TestRejectedWithoutTrustedCertificate(t *testing.T) {
	pki := newPKI(t)
	broker := startMosquitto(t, pki)
	other := newPKI(t) // a certificate the broker does not trust
	tlsCfg := other.clientTLS(t, thing)
	tlsCfg.RootCAs = pki.pool
	c, err := New(testConfig(t, broker.addr, tlsCfg))
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)
	eventually(t, "a few refused attempts", func() bool { return c.Stats().ConnectFailures >= 3 })
	if st := c.Stats(); st.Connects != 0 || st.Connected {
		t.Fatalf("stats = %+v: connected with an untrusted certificate", st)
	}
}

func TestHandlersRunInOrderOneAtATime(t *testing.T) {
	pki := newPKI(t)
	broker := startMosquitto(t, pki)
	obs := newObserver(t, broker.addr, pki.clientTLS(t, "observer"), "observer", "")
	c, err := New(testConfig(t, broker.addr, pki.clientTLS(t, thing)))
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	var (
		mu      sync.Mutex
		order   []string
		running atomic.Int32
		overlap atomic.Bool
		all     = make(chan struct{})
	)
	c.Subscribe("patches/+/start", func(_ context.Context, p []byte) {
		if running.Add(1) > 1 {
			overlap.Store(true)
		}
		defer running.Add(-1)
		time.Sleep(time.Millisecond) // a handler with some work to do
		mu.Lock()
		defer mu.Unlock()
		order = append(order, string(p))
		if len(order) == n {
			close(all)
		}
	})
	runClient(t, c)
	eventually(t, "Connected", c.Connected)

	var want []string
	for i := range n {
		p := fmt.Sprintf("job-%03d", i)
		want = append(want, p)
		obs.publish(t, mqttmsg.Topic(thing, "patches/p1/start"), []byte(p), false)
	}
	select {
	case <-all:
	case <-time.After(waitTimeout):
		t.Fatal("handler did not receive every message")
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(order, want) {
		t.Errorf("handler order = %v", order)
	}
	if overlap.Load() {
		t.Error("handler ran concurrently with itself")
	}
}

func TestLastWillMarksOfflineWhenConnectionDies(t *testing.T) {
	pki := newPKI(t)
	broker := startMosquitto(t, pki)
	px := startProxy(t, broker.addr)
	obs := newObserver(t, broker.addr, pki.clientTLS(t, "observer"), "observer", mqttmsg.Topic(thing, mqttmsg.Connection))
	c, err := New(testConfig(t, px.Addr(), pki.clientTLS(t, thing)))
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)
	if s := connState(t, obs.next(t, mqttmsg.Topic(thing, mqttmsg.Connection))); s.State != mqttmsg.Online {
		t.Fatalf("state = %s, want ONLINE", s.State)
	}
	eventually(t, "Connected", c.Connected)

	px.SetRefuse(true) // cut the connection and keep the client out
	if s := connState(t, obs.next(t, mqttmsg.Topic(thing, mqttmsg.Connection))); s.State != mqttmsg.Offline {
		t.Fatalf("state after cut = %s, want OFFLINE (the will)", s.State)
	}
	eventually(t, "client notices the loss", func() bool { return !c.Connected() })
	// A newcomer sees the will as the retained state.
	late := newObserver(t, broker.addr, pki.clientTLS(t, "late"), "late", mqttmsg.Topic(thing, mqttmsg.Connection))
	m := late.next(t, mqttmsg.Topic(thing, mqttmsg.Connection))
	if s := connState(t, m); s.State != mqttmsg.Offline || !m.retained {
		t.Fatalf("retained state = %s (retained %v), want retained OFFLINE", s.State, m.retained)
	}

	px.SetRefuse(false)
	if s := connState(t, obs.next(t, mqttmsg.Topic(thing, mqttmsg.Connection))); s.State != mqttmsg.Online {
		t.Fatalf("state after reconnect = %s, want ONLINE", s.State)
	}
	eventually(t, "second connect", func() bool { st := c.Stats(); return st.Connects == 2 && st.Disconnects == 1 && st.Connected })
	if st := c.Stats(); st.Connects != 2 || st.Disconnects != 1 {
		t.Errorf("stats = %+v, want 2 connects and 1 disconnect", st)
	}
}

// report is what the tests publish through the outbox: every report carries
// its own sequence number, as real reports carry ids and timestamps.
func report(i int) []byte { return fmt.Appendf(nil, `{"version":1,"seq":%d}`, i) }

// collectReports reads n reports from obs (health and deployment status,
// skipping other topics) and checks they are reports 0..n-1 in order.
func collectReports(t *testing.T, obs *observer, n int) {
	t.Helper()
	timeout := time.After(waitTimeout)
	var seqs []int
	for len(seqs) < n {
		select {
		case m := <-obs.msg:
			if !strings.HasSuffix(m.topic, "/"+mqttmsg.Health) && !strings.HasSuffix(m.topic, "/"+mqttmsg.DeploymentStatus) {
				continue
			}
			var r struct{ Seq int }
			if err := json.Unmarshal(m.payload, &r); err != nil {
				t.Fatalf("report %s: %v", m.payload, err)
			}
			seqs = append(seqs, r.Seq)
		case <-timeout:
			t.Fatalf("got %d of %d reports: %v", len(seqs), n, seqs)
		}
	}
	for i, s := range seqs {
		if s != i {
			t.Fatalf("reports out of order, lost or duplicated: %v", seqs)
		}
	}
	select {
	case m := <-obs.msg:
		if strings.HasSuffix(m.topic, "/"+mqttmsg.Health) || strings.HasSuffix(m.topic, "/"+mqttmsg.DeploymentStatus) {
			t.Fatalf("extra report after the last one: %s", m.payload)
		}
	case <-time.After(100 * time.Millisecond):
	}
}

func suffixFor(i int) string {
	if i%3 == 0 {
		return mqttmsg.DeploymentStatus
	}
	return mqttmsg.Health
}

func TestReconnectAfterBrokerRestartDeliversKeptReportsInOrder(t *testing.T) {
	pki := newPKI(t)
	broker := startMosquitto(t, pki)
	px := startProxy(t, broker.addr)
	c, err := New(testConfig(t, px.Addr(), pki.clientTLS(t, thing)))
	if err != nil {
		t.Fatal(err)
	}
	docs := make(chan []byte, 10)
	c.Subscribe(mqttmsg.Deployments, func(_ context.Context, p []byte) { docs <- p })
	runClient(t, c)
	eventually(t, "Connected", c.Connected)

	broker.Stop()
	px.SetRefuse(true) // hold the client off until the observer is back
	eventually(t, "client notices the broker is gone", func() bool { return !c.Connected() })
	const n = 300
	for i := range n {
		if err := c.Publish(context.Background(), suffixFor(i), report(i)); err != nil {
			t.Fatalf("Publish %d while offline: %v", i, err)
		}
	}
	if st := c.Stats(); st.OutboxLen != n {
		t.Fatalf("outbox holds %d reports, want %d", st.OutboxLen, n)
	}

	broker.Start()
	obs := newObserver(t, broker.addr, pki.clientTLS(t, "observer"), "observer", mqttmsg.Prefix+thing+"/#")
	doc := []byte(`{"version":1,"deploymentId":"d-9","templateName":"t"}`)
	obs.publish(t, mqttmsg.Topic(thing, mqttmsg.Deployments), doc, true)
	px.SetRefuse(false)

	collectReports(t, obs, n)
	select {
	case p := <-docs:
		if string(p) != string(doc) {
			t.Errorf("resubscribed handler got %s", p)
		}
	case <-time.After(waitTimeout):
		t.Fatal("no deployment document after reconnect: not resubscribed")
	}
	eventually(t, "outbox drained", func() bool {
		st := c.Stats()
		return st.OutboxLen == 0 && st.OutboxBytes == 0 && st.Delivered == n && st.Connects >= 2
	})
}

func TestOutboxSurvivesClientRestart(t *testing.T) {
	pki := newPKI(t)
	broker := startMosquitto(t, pki)
	outbox := t.TempDir() + "/outbox"

	// The first agent never reaches the broker.
	cfg := testConfig(t, freeAddr(t), pki.clientTLS(t, thing))
	cfg.OutboxDir = outbox
	first, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := runClient(t, first)
	const n = 25
	for i := range n {
		if err := first.Publish(context.Background(), suffixFor(i), report(i)); err != nil {
			t.Fatal(err)
		}
	}
	stop()

	obs := newObserver(t, broker.addr, pki.clientTLS(t, "observer"), "observer", mqttmsg.Prefix+thing+"/#")
	cfg.Endpoint = broker.addr
	second, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if st := second.Stats(); st.OutboxLen != n {
		t.Fatalf("reopened outbox holds %d reports, want %d", st.OutboxLen, n)
	}
	runClient(t, second)
	collectReports(t, obs, n)
	eventually(t, "outbox drained", func() bool { return second.Stats().OutboxLen == 0 })
}

func TestPublishBoundDropsOldestHealthKeepsStatus(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1", nil)
	cfg.MaxOutbox = 4
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, s := range []string{mqttmsg.Health, mqttmsg.DeploymentStatus, mqttmsg.Health, mqttmsg.DeploymentStatus, mqttmsg.DeploymentStatus} {
		if err := c.Publish(ctx, s, report(i)); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	st := c.Stats()
	if st.OutboxLen != 4 || st.Dropped != 1 {
		t.Fatalf("stats = %+v, want 4 kept and 1 dropped", st)
	}
	if err := c.Publish(ctx, mqttmsg.DeploymentStatus, report(5)); err != nil {
		t.Fatalf("second health report should make room: %v", err)
	}
	err = c.Publish(ctx, mqttmsg.DeploymentStatus, report(6))
	if !errors.Is(err, ErrOutboxFull) {
		t.Fatalf("Publish into an outbox full of status reports = %v, want ErrOutboxFull", err)
	}
	var kept []string
	for _, e := range c.box.peek(10) {
		m, err := c.box.read(e)
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, m.suffix+" "+string(m.payload))
	}
	want := []string{
		mqttmsg.DeploymentStatus + " " + string(report(1)),
		mqttmsg.DeploymentStatus + " " + string(report(3)),
		mqttmsg.DeploymentStatus + " " + string(report(4)),
		mqttmsg.DeploymentStatus + " " + string(report(5)),
	}
	if !slices.Equal(kept, want) {
		t.Errorf("kept = %q, want %q", kept, want)
	}
}

func TestPublishRejectsBadInput(t *testing.T) {
	c, err := New(testConfig(t, "127.0.0.1:1", nil))
	if err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		suffix  string
		payload []byte
	}{
		{"empty suffix", context.Background(), "", nil},
		{"wildcard", context.Background(), "health/#", nil},
		{"leading slash", context.Background(), "/health", nil},
		{"newline", context.Background(), "a\nb", nil},
		{"too large", context.Background(), mqttmsg.Health, make([]byte, mqttmsg.MaxPayload+1)},
		{"canceled", canceled, mqttmsg.Health, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.Publish(tt.ctx, tt.suffix, tt.payload); err == nil {
				t.Error("Publish succeeded")
			}
		})
	}
	if n := c.Stats().OutboxLen; n != 0 {
		t.Errorf("outbox holds %d after rejected publishes", n)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	good := testConfig(t, "127.0.0.1:8883", nil)
	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"no endpoint", func(c *Config) { c.Endpoint = "" }, "endpoint is required"},
		{"no client id", func(c *Config) { c.ClientID = "" }, "client id is required"},
		{"bad thing", func(c *Config) { c.Thing = "a/b" }, "thing name"},
		{"no outbox", func(c *Config) { c.OutboxDir = "" }, "outbox directory is required"},
		{"negative bound", func(c *Config) { c.MaxOutbox = -1 }, "must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.modify(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestRunRejectsBadSubscriptionAndSecondRun(t *testing.T) {
	c, err := New(testConfig(t, "127.0.0.1:1", nil))
	if err != nil {
		t.Fatal(err)
	}
	c.Subscribe("", func(context.Context, []byte) {})
	if err := c.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "subscribe") {
		t.Fatalf("Run with a bad subscription = %v", err)
	}

	c2, err := New(testConfig(t, "127.0.0.1:1", nil))
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c2)
	eventually(t, "Run started", func() bool { c2.mu.Lock(); defer c2.mu.Unlock(); return c2.running })
	if err := c2.Run(context.Background()); err == nil {
		t.Fatal("second Run succeeded")
	}
}
