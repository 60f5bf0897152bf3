package mqttbus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

func TestConnect(t *testing.T) {
	e := start(t)
	c := e.mustConnect(t, "core-1")
	eventually(t, "OnConnect", func() bool { return len(e.rec.find("connect", "core-1")) == 1 })
	if !e.bus.Connected("core-1") || e.bus.Connected("core-2") {
		t.Fatalf("Connected: core-1 %v, core-2 %v", e.bus.Connected("core-1"), e.bus.Connected("core-2"))
	}
	e.mustConnect(t, "core-2")
	eventually(t, "two connections", func() bool { return e.bus.Connections() == 2 })

	c.Disconnect(100) // clean: no will, but OnDisconnect
	eventually(t, "OnDisconnect", func() bool { return len(e.rec.find("disconnect", "core-1")) == 1 })
	eventually(t, "one connection", func() bool { return e.bus.Connections() == 1 })
	if e.bus.Connected("core-1") {
		t.Fatal("core-1 still connected after disconnecting")
	}
	if got := e.rec.find("connection", "core-1"); len(got) != 0 {
		t.Fatalf("a clean disconnect sent a will: %v", got)
	}
}

func TestConnectRefused(t *testing.T) {
	e := start(t)
	other := newTestCA(t, "another CA")
	good := e.device(t, "core-1")
	inactive := e.ca.issue(t, "core-1", false) // never allowed
	foreign := other.issue(t, "core-1", false)
	e.auth.set(foreign, true)
	badCN := e.ca.issue(t, "core 1", false)
	e.auth.set(badCN, true)

	tests := []struct {
		name     string
		clientID string
		cert     *tls.Certificate
		opts     []func(*paho.ClientOptions)
		reason   string // in the broker log
		tls      bool   // refused in the TLS handshake rather than by CONNACK
	}{
		{name: "client id is not the CN", clientID: "core-2", cert: &good, reason: "client id must equal the certificate CN"},
		{name: "no client certificate", clientID: "core-1", tls: true, reason: "didn't provide a certificate"},
		{name: "certificate from another CA", clientID: "core-1", cert: &foreign, tls: true, reason: "certificate signed by unknown authority"},
		{name: "inactive certificate", clientID: "core-1", cert: &inactive, reason: "certificate is not active"},
		{name: "CN is not a thing name", clientID: "core 1", cert: &badCN, reason: "certificate CN is not a thing name"},
		{name: "will on another thing's topic", clientID: "core-1", cert: &good, reason: "last will topic",
			opts: []func(*paho.ClientOptions){func(o *paho.ClientOptions) {
				o.SetWill(mqttmsg.Topic("core-2", mqttmsg.Connection), offlineJSON, 1, true)
			}}},
		{name: "will that is not a connection message", clientID: "core-1", cert: &good, reason: "last will payload",
			opts: []func(*paho.ClientOptions){func(o *paho.ClientOptions) {
				o.SetWill(mqttmsg.Topic("core-1", mqttmsg.Connection), `{"state":"GONE"}`, 1, true)
			}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := e.connect(t, tt.clientID, tt.cert, tt.opts...)
			if err == nil {
				c.Disconnect(0)
				t.Fatal("connected")
			}
			if !tt.tls && !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
				t.Fatalf("error %v, want CONNACK not authorized", err)
			}
			eventually(t, "the refusal in the log", func() bool { return contains(e.logs.String(), tt.reason) })
		})
	}
	if n := e.bus.Connections(); n != 0 {
		t.Fatalf("Connections() = %d after refusals", n)
	}
	if got := e.rec.find("connect", "core-1"); len(got) != 0 {
		t.Fatalf("OnConnect ran for a refused client: %v", got)
	}
	// The good certificate still works.
	if _, err := e.connect(t, "core-1", &good); err != nil {
		t.Fatalf("good certificate: %v", err)
	}
}

func TestACL(t *testing.T) {
	b := &Bus{log: slog.New(slog.DiscardHandler)}
	h := &hook{bus: b}
	device := &mqtt.Client{ID: "core-1"}
	inline := &mqtt.Client{ID: mqtt.InlineClientId}
	inline.Net.Inline = true
	tests := []struct {
		cl    *mqtt.Client
		topic string
		write bool
		want  bool
	}{
		{device, "ggfleet/things/core-1/health", true, true},
		{device, "ggfleet/things/core-1/deployments", false, true},
		{device, "ggfleet/things/core-1/#", false, true},
		{device, "ggfleet/things/core-1/+/status", false, true},
		{device, "ggfleet/things/core-2/health", true, false},
		{device, "ggfleet/things/core-2/deployments", false, false},
		{device, "ggfleet/things/core-10/health", true, false},
		{device, "ggfleet/things/+/health", false, false},
		{device, "ggfleet/things/#", false, false},
		{device, "ggfleet/things/core-1", true, false},
		{device, "#", false, false},
		{device, "+/things/core-1/health", false, false},
		{device, "$SYS/#", false, false},
		{device, "$share/g/ggfleet/things/core-1/health", false, false},
		{device, "other/topic", true, false},
		{inline, "ggfleet/things/core-2/deployments", true, true},
	}
	for _, tt := range tests {
		if got := h.OnACLCheck(tt.cl, tt.topic, tt.write); got != tt.want {
			t.Errorf("OnACLCheck(%s, %q, write=%v) = %v, want %v", tt.cl.ID, tt.topic, tt.write, got, tt.want)
		}
	}
}

func TestSubscribeRefused(t *testing.T) {
	e := start(t)
	c := e.mustConnect(t, "core-1")
	for _, filter := range []string{
		"ggfleet/things/core-2/deployments",
		"ggfleet/things/+/health",
		"ggfleet/things/#",
		"#",
		"$SYS/#",
	} {
		t.Run(filter, func(t *testing.T) {
			if code := c.subscribe(t, filter); code != 0x80 {
				t.Fatalf("SUBACK code %#x, want 0x80", code)
			}
		})
	}
	if code := c.subscribe(t, "ggfleet/things/core-1/#"); code != 1 {
		t.Fatalf("own topics: SUBACK code %#x, want 1", code)
	}
}

func TestInboundDispatch(t *testing.T) {
	e := start(t)
	c := e.mustConnect(t, "core-1")
	tests := []struct {
		suffix, payload, kind string
		check                 func(t *testing.T, msg any)
	}{
		{mqttmsg.Health, healthJSON("spoofed-name"), "health", func(t *testing.T, msg any) {
			m := msg.(mqttmsg.HealthMsg)
			if m.Status != mqttmsg.Healthy || m.IntervalSeconds != 30 || m.Nucleus.State != "RUNNING" {
				t.Fatalf("decoded %+v", m)
			}
		}},
		{mqttmsg.DeploymentStatus, `{"version":1,"deploymentId":"d-1","taskId":"t","status":"SUCCEEDED","detailedStatus":"SUCCESSFUL"}`, "status",
			func(t *testing.T, msg any) {
				if m := msg.(mqttmsg.DeploymentStatusMsg); m.DeploymentID != "d-1" || m.Status != mqttmsg.StatusSucceeded {
					t.Fatalf("decoded %+v", m)
				}
			}},
		{mqttmsg.Hello, `{"version":1,"agentVersion":"1.2.3","capabilities":["health"]}`, "hello", func(t *testing.T, msg any) {
			if m := msg.(mqttmsg.HelloMsg); m.AgentVersion != "1.2.3" {
				t.Fatalf("decoded %+v", m)
			}
		}},
		{mqttmsg.Connection, `{"version":1,"state":"ONLINE","timestamp":"2026-11-29T12:00:00Z"}`, "connection", func(t *testing.T, msg any) {
			if m := msg.(mqttmsg.ConnectionMsg); m.State != mqttmsg.Online {
				t.Fatalf("decoded %+v", m)
			}
		}},
		{"patches/p-1/events", `{"any":"thing"}`, "message", func(t *testing.T, msg any) {
			if msg != `patches/p-1/events {"any":"thing"}` {
				t.Fatalf("got %v", msg)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.suffix, func(t *testing.T) {
			if err := c.publish(t, mqttmsg.Topic("core-1", tt.suffix), 1, false, tt.payload); err != nil {
				t.Fatal(err)
			}
			// The handler ran before the PUBACK: no waiting needed.
			got := e.rec.find(tt.kind, "core-1")
			if len(got) != 1 {
				t.Fatalf("%s handler calls for core-1 after PUBACK: %d", tt.kind, len(got))
			}
			tt.check(t, got[0].msg)
		})
	}
	if got := e.rec.find("health", "spoofed-name"); len(got) != 0 {
		t.Fatal("the thing name was taken from the payload")
	}
}

func TestPublishToAnotherThing(t *testing.T) {
	e := start(t)
	c1 := e.mustConnect(t, "core-1")
	c2 := e.mustConnect(t, "core-2")
	if code := c2.subscribe(t, "ggfleet/things/core-2/#"); code != 1 {
		t.Fatalf("SUBACK %#x", code)
	}

	// QoS 0 is dropped silently; the connection stays.
	if err := c1.publish(t, mqttmsg.Topic("core-2", mqttmsg.Health), 0, false, healthJSON("core-2")); err != nil {
		t.Fatal(err)
	}
	// A QoS 1 message on core-1's own topic is handled after the QoS 0 one
	// (one connection is processed in order).
	if err := c1.publish(t, mqttmsg.Topic("core-1", mqttmsg.Health), 1, false, healthJSON("core-1")); err != nil {
		t.Fatal(err)
	}
	if got := e.rec.find("health", "core-2"); len(got) != 0 {
		t.Fatalf("core-2's handler got core-1's message: %v", got)
	}
	// core-2 sees the broker's marker first: nothing from core-1 was queued before it.
	if err := e.bus.Publish(context.Background(), "core-2", "marker", []byte("m"), false); err != nil {
		t.Fatal(err)
	}
	if m := c2.next(t); m.Topic() != mqttmsg.Topic("core-2", "marker") {
		t.Fatalf("core-2 received %s %s", m.Topic(), m.Payload())
	}

	// QoS 1 to another thing's topic: MQTT 3.1.1 has no negative PUBACK, so
	// the broker disconnects the client.
	_ = c1.publish(t, mqttmsg.Topic("core-2", mqttmsg.Health), 1, false, healthJSON("core-2"))
	eventually(t, "core-1 to be disconnected", func() bool { return !e.bus.Connected("core-1") })
	if got := e.rec.find("health", "core-2"); len(got) != 0 {
		t.Fatalf("core-2's handler got core-1's message: %v", got)
	}
}

func TestRetained(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	doc := `{"version":1,"deploymentId":"d-1","templateName":"edge","templateVersion":1}`
	if err := e.bus.Publish(ctx, "core-1", mqttmsg.Deployments, []byte(doc), true); err != nil {
		t.Fatal(err)
	}

	c1 := e.mustConnect(t, "core-1")
	c1.subscribe(t, mqttmsg.Topic("core-1", mqttmsg.Deployments))
	if m := c1.next(t); string(m.Payload()) != doc || m.Qos() != 1 {
		t.Fatalf("core-1 received %q at QoS %d", m.Payload(), m.Qos())
	}

	c2 := e.mustConnect(t, "core-2")
	if code := c2.subscribe(t, "ggfleet/things/core-2/#"); code != 1 {
		t.Fatalf("SUBACK %#x", code)
	}
	if err := e.bus.Publish(ctx, "core-2", "marker", []byte("m"), false); err != nil {
		t.Fatal(err)
	}
	if m := c2.next(t); m.Topic() != mqttmsg.Topic("core-2", "marker") {
		t.Fatalf("core-2 received %s %s", m.Topic(), m.Payload())
	}

	// After ClearRetained a new subscriber gets nothing retained.
	if err := e.bus.ClearRetained(ctx, "core-1", mqttmsg.Deployments); err != nil {
		t.Fatal(err)
	}
	c1.Disconnect(100)
	eventually(t, "core-1 to go", func() bool { return !e.bus.Connected("core-1") })
	c1 = e.mustConnect(t, "core-1")
	c1.subscribe(t, "ggfleet/things/core-1/#")
	if err := e.bus.Publish(ctx, "core-1", "marker", []byte("m"), false); err != nil {
		t.Fatal(err)
	}
	if m := c1.next(t); m.Topic() != mqttmsg.Topic("core-1", "marker") {
		t.Fatalf("core-1 received %s %s after ClearRetained", m.Topic(), m.Payload())
	}
}

func TestPublishInvalid(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	for _, tt := range []struct{ thing, suffix, payload string }{
		{"core 1", "deployments", "x"},
		{"core-1", "", "x"},
		{"core-1", "a/#", "x"},
		{"core-1", "deployments", ""},
		{"core-1", "deployments", strings.Repeat("x", mqttmsg.MaxPayload+1)},
	} {
		if err := e.bus.Publish(ctx, tt.thing, tt.suffix, []byte(tt.payload), false); err == nil {
			t.Errorf("Publish(%q, %q, %d bytes) succeeded", tt.thing, tt.suffix, len(tt.payload))
		}
	}
}

func TestLastWill(t *testing.T) {
	e := start(t)
	will := func(o *paho.ClientOptions) {
		o.SetWill(mqttmsg.Topic("core-1", mqttmsg.Connection), offlineJSON, 1, true)
	}
	c := e.mustConnect(t, "core-1", will)
	eventually(t, "OnConnect", func() bool { return len(e.rec.find("connect", "core-1")) == 1 })
	c.kill()
	eventually(t, "OnDisconnect", func() bool { return len(e.rec.find("disconnect", "core-1")) == 1 })
	got := e.rec.find("connection", "core-1")
	if len(got) != 1 || got[0].msg.(mqttmsg.ConnectionMsg).State != mqttmsg.Offline {
		t.Fatalf("OnConnection calls: %+v", got)
	}
	if kinds := e.rec.kinds("core-1"); !slices.Equal(kinds, []string{"connect", "connection", "disconnect"}) {
		t.Fatalf("events %v, want connect, connection (the will), disconnect", kinds)
	}
}

func TestTakeover(t *testing.T) {
	e := start(t)
	will := func(o *paho.ClientOptions) {
		o.SetWill(mqttmsg.Topic("core-1", mqttmsg.Connection), offlineJSON, 1, true)
	}
	e.mustConnect(t, "core-1", will)
	e.mustConnect(t, "core-1", will) // the agent reconnects before the broker noticed
	eventually(t, "the second OnConnect", func() bool { return len(e.rec.find("connect", "core-1")) == 2 })
	if !e.bus.Connected("core-1") || e.bus.Connections() != 1 {
		t.Fatalf("Connected %v, Connections %d", e.bus.Connected("core-1"), e.bus.Connections())
	}
	// The replaced session's will and disconnect are not reported: the
	// thing is still connected. Stopping the broker ends the new session.
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	if kinds := e.rec.kinds("core-1"); !slices.Equal(kinds, []string{"connect", "connect", "connection", "disconnect"}) {
		t.Fatalf("events %v", kinds)
	}
}

func TestDisconnectKicks(t *testing.T) {
	e := start(t)
	cert := e.device(t, "core-1")
	lost := make(chan struct{})
	if _, err := e.connect(t, "core-1", &cert, func(o *paho.ClientOptions) {
		o.SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "OnConnect", func() bool { return len(e.rec.find("connect", "core-1")) == 1 })

	// The core is deleted: its certificate is no longer active, and it is kicked.
	e.auth.set(cert, false)
	e.bus.Disconnect("core-1")
	eventually(t, "the client to notice", func() bool {
		select {
		case <-lost:
			return true
		default:
			return false
		}
	})
	eventually(t, "OnDisconnect", func() bool { return len(e.rec.find("disconnect", "core-1")) == 1 })
	if e.bus.Connected("core-1") {
		t.Fatal("still connected")
	}
	if _, err := e.connect(t, "core-1", &cert); !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
		t.Fatalf("reconnect with a deleted core's certificate: %v, want not authorized", err)
	}
	e.bus.Disconnect("core-9") // unknown: no-op
}

func TestBadPayloadAndPanic(t *testing.T) {
	e := start(t, func(cfg *Config) {
		cfg.Handlers.OnHello = func(context.Context, string, mqttmsg.HelloMsg) { panic("handler bug") }
	})
	c := e.mustConnect(t, "core-1")
	c.subscribe(t, "ggfleet/things/core-1/health")
	for _, payload := range []string{`{`, `{"version":1,"status":"FINE"}`, `[]`} {
		if err := c.publish(t, mqttmsg.Topic("core-1", mqttmsg.Health), 1, false, payload); err != nil {
			t.Fatalf("bad payload %s not acknowledged: %v", payload, err)
		}
	}
	if err := c.publish(t, mqttmsg.Topic("core-1", mqttmsg.Hello), 1, false, `{"version":1}`); err != nil {
		t.Fatalf("message whose handler panicked not acknowledged: %v", err)
	}
	if got := e.rec.find("health", "core-1"); len(got) != 0 {
		t.Fatalf("bad payloads reached the handler: %v", got)
	}
	// The broker still serves, and dropped messages were not forwarded.
	if err := c.publish(t, mqttmsg.Topic("core-1", mqttmsg.Health), 1, false, healthJSON("core-1")); err != nil {
		t.Fatal(err)
	}
	if len(e.rec.find("health", "core-1")) != 1 {
		t.Fatal("the good message was not handled")
	}
	if m := c.next(t); string(m.Payload()) != healthJSON("core-1") {
		t.Fatalf("subscriber received %q first", m.Payload())
	}
	for _, want := range []string{"MQTT message dropped", "MQTT handler panicked"} {
		if !contains(e.logs.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
}

func TestShutdownSendsWills(t *testing.T) {
	e := start(t)
	e.mustConnect(t, "core-1", func(o *paho.ClientOptions) {
		o.SetWill(mqttmsg.Topic("core-1", mqttmsg.Connection), offlineJSON, 1, true)
	})
	eventually(t, "OnConnect", func() bool { return len(e.rec.find("connect", "core-1")) == 1 })
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	// Run returned only after the handlers ran.
	if kinds := e.rec.kinds("core-1"); !slices.Equal(kinds, []string{"connect", "connection", "disconnect"}) {
		t.Fatalf("events %v", kinds)
	}
}

func TestRunListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	server := newTestCA(t, "ca").issue(t, "127.0.0.1", true)
	b, err := New(Config{
		Listen:      ln.Addr().String(),
		Certificate: func(context.Context) (tls.Certificate, error) { return server, nil },
		ClientCAs:   func(context.Context) (*x509.CertPool, error) { return nil, errors.New("unused") },
		Authorizer:  &fakeAuth{},
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "mqtt listen") {
		t.Fatalf("Run on a busy address: %v", err)
	}
}

func TestNewNeedsConfig(t *testing.T) {
	_, err := New(Config{})
	if err == nil || !strings.Contains(err.Error(), "Listen, Certificate, ClientCAs, Authorizer required") {
		t.Fatalf("New(Config{}) = %v", err)
	}
}

func TestNewCAWithoutRestart(t *testing.T) {
	var mu sync.Mutex
	var extra []*x509.Certificate
	var e *env
	e = start(t, func(cfg *Config) {
		cfg.ClientCAs = func(context.Context) (*x509.CertPool, error) {
			p := x509.NewCertPool()
			p.AddCert(e.ca.cert)
			mu.Lock()
			defer mu.Unlock()
			for _, c := range extra {
				p.AddCert(c)
			}
			return p, nil
		}
	})
	second := newTestCA(t, "created later")
	cert := second.issue(t, "core-7", false)
	e.auth.set(cert, true)
	if _, err := e.connect(t, "core-7", &cert); err == nil {
		t.Fatal("connected with a certificate from an unknown CA")
	}
	mu.Lock()
	extra = append(extra, second.cert)
	mu.Unlock()
	if _, err := e.connect(t, "core-7", &cert); err != nil {
		t.Fatalf("certificate from a CA created after start: %v", err)
	}
}

// TestCountHandled checks that every message handler counts its topic once
// before it runs, and that session callbacks and nil handlers are left alone.
func TestCountHandled(t *testing.T) {
	var calls []string
	record := func(what string) { calls = append(calls, what) }
	h := CountHandled(Handlers{
		OnConnect:          func(context.Context, string) { record("connect") },
		OnConnection:       func(context.Context, string, mqttmsg.ConnectionMsg) { record("connection handler") },
		OnHealth:           func(context.Context, string, mqttmsg.HealthMsg) { record("health handler") },
		OnDeploymentStatus: func(context.Context, string, mqttmsg.DeploymentStatusMsg) { record("status handler") },
		OnMessage:          func(context.Context, string, string, []byte) { record("message handler") },
	}, func(topic string) { record("count " + topic) })
	if h.OnHello != nil || h.OnDisconnect != nil {
		t.Fatal("a nil handler became non-nil")
	}
	ctx := context.Background()
	h.OnConnect(ctx, "c")
	h.OnConnection(ctx, "c", mqttmsg.ConnectionMsg{})
	h.OnHealth(ctx, "c", mqttmsg.HealthMsg{})
	h.OnDeploymentStatus(ctx, "c", mqttmsg.DeploymentStatusMsg{})
	h.OnMessage(ctx, "c", "patches/p1/events", nil)
	want := []string{"connect", "count connection", "connection handler", "count health", "health handler",
		"count deployments/status", "status handler", "count other", "message handler"}
	if !slices.Equal(calls, want) {
		t.Errorf("calls\n got %q\nwant %q", calls, want)
	}
}
