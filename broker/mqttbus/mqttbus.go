// Package mqttbus is the broker's embedded MQTT server (mochi-mqtt) for the
// local provider: agents connect with mutual TLS using the certificates the
// broker's CAs issued, the client id must be the thing name in the
// certificate's CN, and a device may only publish and subscribe under its own
// ggfleet/things/{thing}/ topics. Messages from agents are decoded with
// shared/mqttmsg and handed to Handlers before they are acknowledged, so a
// QoS 1 message is never lost once the agent saw its PUBACK.
//
// Retained messages live only in memory: the broker re-publishes desired
// state from its database on start and whenever an agent connects.
package mqttbus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// Handlers receive what agents send. Each may be nil. They run synchronously
// in the connection's goroutine, before the message is acknowledged, with a
// context that ends after HandlerTimeout; messages of one agent therefore
// arrive in order. thing is always the authenticated certificate CN, never a
// value taken from a payload.
type Handlers struct {
	// OnConnect runs when an agent's session is established (before any of
	// its messages are handled): the place to re-publish desired state.
	OnConnect func(ctx context.Context, thing string)
	// OnDisconnect runs when an agent's current session ends, cleanly or
	// not; after its last will, if one was sent. The end of a session that
	// a newer connection of the same thing took over is not reported.
	OnDisconnect func(ctx context.Context, thing string)
	// OnConnection receives the connection state, including the agent's
	// last will (OFFLINE) when its connection is lost.
	OnConnection       func(ctx context.Context, thing string, m mqttmsg.ConnectionMsg)
	OnHealth           func(ctx context.Context, thing string, m mqttmsg.HealthMsg)
	OnDeploymentStatus func(ctx context.Context, thing string, m mqttmsg.DeploymentStatusMsg)
	OnHello            func(ctx context.Context, thing string, m mqttmsg.HelloMsg)
	// OnMessage receives any other suffix under ggfleet/things/{thing}/
	// (patch events and logs, probe results), undecoded.
	OnMessage func(ctx context.Context, thing, suffix string, payload []byte)
}

// Authorizer says whether a device certificate may still connect (a deleted
// core's certificate may not).
type Authorizer interface {
	CertificateActive(ctx context.Context, certID string) (bool, error)
}

// Config configures a Bus.
type Config struct {
	// Listen is the TCP address of the mTLS listener (e.g. 127.0.0.1:8883).
	Listen string
	// Certificate returns the server certificate; it is asked on every TLS
	// handshake, so it should cache (ca.Authority.ServerCertificate does).
	Certificate func(ctx context.Context) (tls.Certificate, error)
	// ClientCAs returns every CA whose certificates may connect; asked on
	// every handshake so a newly created CA works at once.
	ClientCAs func(ctx context.Context) (*x509.CertPool, error)
	// Authorizer is asked with certs.ID(client certificate) on every
	// connect; false refuses the connection.
	Authorizer Authorizer
	// Handlers receive what agents send.
	Handlers Handlers
	// Logger receives connection events and refusals (default slog.Default).
	Logger *slog.Logger
	// HandlerTimeout bounds each handler call (default 10s).
	HandlerTimeout time.Duration
}

// Limits that keep one slow or misbehaving client from growing the broker's
// memory without bound.
const (
	maxPacketSize       = mqttmsg.MaxPayload + 16<<10 // payload plus topic and header headroom
	maxWritesPending    = 128                         // outbound packets queued per client
	maxInflight         = 128                         // unacknowledged QoS>0 messages stored per client
	receiveMaximum      = 32                          // QoS>0 messages a client may have unacknowledged toward us
	messageExpiry       = 24 * 60 * 60                // seconds a retained or queued message lives
	sessionExpiry       = 60 * 60                     // seconds a persistent session outlives its connection
	sysTopicInterval    = 60                          // seconds between $SYS updates (nobody may read them)
	handshakeTimeout    = 10 * time.Second            // TLS handshake plus the CONNECT packet
	defaultHandlerLimit = 10 * time.Second
)

var thingNameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,128}$`)

// Bus is the embedded MQTT broker.
type Bus struct {
	cfg     Config
	log     *slog.Logger
	disp    *Dispatcher
	srv     *mqtt.Server
	started atomic.Bool

	mu       sync.Mutex
	base     context.Context         // Run's context, for handlers
	addr     string                  // actual listen address once listening
	sessions map[string]*mqtt.Client // the current session of each connected thing
}

// New checks cfg and builds the broker; Run starts it.
func New(cfg Config) (*Bus, error) {
	var missing []string
	if cfg.Listen == "" {
		missing = append(missing, "Listen")
	}
	if cfg.Certificate == nil {
		missing = append(missing, "Certificate")
	}
	if cfg.ClientCAs == nil {
		missing = append(missing, "ClientCAs")
	}
	if cfg.Authorizer == nil {
		missing = append(missing, "Authorizer")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("mqtt broker config: %s required", strings.Join(missing, ", "))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HandlerTimeout <= 0 {
		cfg.HandlerTimeout = defaultHandlerLimit
	}

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumMessageExpiryInterval = messageExpiry
	caps.MaximumClientWritesPending = maxWritesPending
	caps.MaximumSessionExpiryInterval = sessionExpiry
	caps.MaximumPacketSize = maxPacketSize
	caps.MaximumInflight = maxInflight
	caps.ReceiveMaximum = receiveMaximum
	caps.TopicAliasMaximum = 0 // aliases would let a topic skip the ACL check
	caps.SharedSubAvailable = 0

	b := &Bus{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "mqtt"),
		base:     context.Background(),
		disp:     NewDispatcher(cfg.Handlers, cfg.Logger.With("component", "mqtt"), cfg.HandlerTimeout),
		sessions: map[string]*mqtt.Client{},
	}
	b.srv = mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		Logger:                 slog.New(quietHandler{b.log.Handler()}),
		SysTopicResendInterval: sysTopicInterval,
		InlineClient:           true, // Publish
	})
	if err := b.srv.AddHook(&hook{bus: b}, nil); err != nil {
		return nil, fmt.Errorf("mqtt broker: %w", err)
	}
	return b, nil
}

// Run listens on cfg.Listen and serves until ctx ends, then disconnects every
// client (their last wills fire and the handlers run) and returns nil. A
// listen error is returned at once. Run may be called once.
func (b *Bus) Run(ctx context.Context) error {
	if !b.started.CompareAndSwap(false, true) {
		return errors.New("mqtt broker: Run called twice")
	}
	b.mu.Lock()
	b.base = ctx
	b.mu.Unlock()

	l := &tlsListener{id: "mtls", address: b.cfg.Listen, tlsConfig: b.tlsConfig(), log: b.log}
	if err := b.srv.AddListener(l); err != nil {
		return fmt.Errorf("mqtt listen on %s: %w", b.cfg.Listen, err)
	}
	b.mu.Lock()
	b.addr = l.Address()
	b.mu.Unlock()
	if err := b.srv.Serve(); err != nil {
		_ = b.srv.Close()
		return fmt.Errorf("mqtt serve: %w", err)
	}
	b.log.Info("MQTT broker listening", "address", l.Address())

	<-ctx.Done()
	if err := b.srv.Close(); err != nil {
		return fmt.Errorf("mqtt shutdown: %w", err)
	}
	return nil
}

// tlsConfig builds the listener's TLS: 1.2 or later, a client certificate
// issued by one of the broker's CAs required, both read per handshake.
func (b *Bus) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			ctx, cancel := context.WithTimeout(hello.Context(), handshakeTimeout)
			defer cancel()
			cert, err := b.cfg.Certificate(ctx)
			if err != nil {
				b.log.Error("MQTT server certificate unavailable", "error", err)
				return nil, fmt.Errorf("server certificate: %w", err)
			}
			pool, err := b.cfg.ClientCAs(ctx)
			if err != nil {
				b.log.Error("MQTT client CAs unavailable", "error", err)
				return nil, fmt.Errorf("client CAs: %w", err)
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{cert},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    pool,
			}, nil
		},
	}
}

// Handlers returns the handlers the broker calls, so a client of an
// external broker (mqttbus/external) can call the same ones.
func (b *Bus) Handlers() Handlers { return b.cfg.Handlers }

// Addr is the address the broker listens on once Run has started listening
// ("" before), with the real port when Listen asked for port 0.
func (b *Bus) Addr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addr
}

// Publish sends payload at QoS 1 to ggfleet/things/{thing}/{suffix}; a
// retained message is also kept (in memory) for the agent's next subscribe.
func (b *Bus) Publish(ctx context.Context, thing, suffix string, payload []byte, retained bool) error {
	topic, err := CheckPublish(thing, suffix, payload)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := b.srv.Publish(topic, payload, retained, 1); err != nil {
		return fmt.Errorf("publish to %s: %w", topic, err)
	}
	return nil
}

// ClearRetained forgets the retained message of ggfleet/things/{thing}/{suffix}
// so later subscribers do not receive it. Current subscribers are not sent
// anything.
func (b *Bus) ClearRetained(ctx context.Context, thing, suffix string) error {
	topic, err := topicFor(thing, suffix)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	b.srv.Topics.RetainMessage(packets.Packet{TopicName: topic})
	return nil
}

// CheckPublish validates a message the broker sends to a thing and returns
// its topic ggfleet/things/{thing}/{suffix}: errkind.Invalid for a bad thing
// name or suffix, an empty payload or one over mqttmsg.MaxPayload.
func CheckPublish(thing, suffix string, payload []byte) (string, error) {
	topic, err := topicFor(thing, suffix)
	if err != nil {
		return "", err
	}
	if len(payload) == 0 {
		return "", errkind.New(errkind.Invalid, "an MQTT message needs a payload (use ClearRetained to remove a retained one)")
	}
	if len(payload) > mqttmsg.MaxPayload {
		return "", errkind.New(errkind.Invalid, "an MQTT message of %d bytes is over the %d-byte limit", len(payload), mqttmsg.MaxPayload)
	}
	return topic, nil
}

func topicFor(thing, suffix string) (string, error) {
	if !thingNameRE.MatchString(thing) {
		return "", errkind.New(errkind.Invalid, "thing name %q must match [a-zA-Z0-9_-]{1,128}", thing)
	}
	if suffix == "" || strings.ContainsAny(suffix, "+#") || strings.HasPrefix(suffix, "/") || strings.HasSuffix(suffix, "/") {
		return "", errkind.New(errkind.Invalid, "topic suffix %q must be non-empty, without wildcards or leading/trailing '/'", suffix)
	}
	return mqttmsg.Topic(thing, suffix), nil
}

// Disconnect closes thing's connection if it has one (its last will fires).
// Used when a core is deleted: its certificate is refused from then on.
func (b *Bus) Disconnect(thing string) {
	b.mu.Lock()
	cl := b.sessions[thing]
	b.mu.Unlock()
	if cl == nil {
		return
	}
	b.log.Info("MQTT client disconnected by the broker", "thing", thing)
	if cl.Properties.ProtocolVersion >= 5 {
		_ = b.srv.DisconnectClient(cl, packets.ErrAdministrativeAction)
		return
	}
	cl.Stop(packets.ErrAdministrativeAction) // MQTT 3 has no server DISCONNECT
}

// Connected reports whether thing has an open session.
func (b *Bus) Connected(thing string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	cl := b.sessions[thing]
	return cl != nil && !cl.Closed()
}

// Connections is the number of connected things (for metrics).
func (b *Bus) Connections() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, cl := range b.sessions {
		if !cl.Closed() {
			n++
		}
	}
	return n
}

// baseContext is Run's context (Background before Run), whose values
// handlers see.
func (b *Bus) baseContext() context.Context {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.base
}

// handlerContext is the context a handler runs with: Run's values, not
// cancelled by shutdown (the wills of the clients shutdown disconnects must
// still be recorded), ended by the handler timeout.
func (b *Bus) handlerContext() (context.Context, context.CancelFunc) {
	b.mu.Lock()
	base := b.base
	b.mu.Unlock()
	return context.WithTimeout(context.WithoutCancel(base), b.cfg.HandlerTimeout)
}

// setSession records cl as thing's current session.
func (b *Bus) setSession(thing string, cl *mqtt.Client) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sessions[thing] = cl
}

// isCurrent reports whether cl is still thing's current session.
func (b *Bus) isCurrent(thing string, cl *mqtt.Client) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sessions[thing] == cl
}

// endSession forgets cl if it is thing's current session and says whether
// it was.
func (b *Bus) endSession(thing string, cl *mqtt.Client) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sessions[thing] != cl {
		return false
	}
	delete(b.sessions, thing)
	return true
}

// Topic labels CountHandled reports: the suffixes Handlers decode, and
// "other" for everything OnMessage gets (patch messages among them), so
// that no id ever becomes a label.
const (
	CountConnection       = mqttmsg.Connection
	CountHealth           = mqttmsg.Health
	CountDeploymentStatus = mqttmsg.DeploymentStatus
	CountHello            = mqttmsg.Hello
	CountOther            = "other"
)

// CountHandled returns h with count(topic) called before each message
// handler runs: how many agent messages reached the broker, by topic, for
// /metrics (a message an external broker dropped never does). Session
// callbacks (OnConnect, OnDisconnect) are not messages and are not counted;
// nil handlers stay nil.
func CountHandled(h Handlers, count func(topic string)) Handlers {
	h.OnConnection = counted(h.OnConnection, count, CountConnection)
	h.OnHealth = counted(h.OnHealth, count, CountHealth)
	h.OnDeploymentStatus = counted(h.OnDeploymentStatus, count, CountDeploymentStatus)
	h.OnHello = counted(h.OnHello, count, CountHello)
	if fn := h.OnMessage; fn != nil {
		h.OnMessage = func(ctx context.Context, thing, suffix string, payload []byte) {
			count(CountOther)
			fn(ctx, thing, suffix, payload)
		}
	}
	return h
}

func counted[T any](fn func(context.Context, string, T), count func(string), topic string) func(context.Context, string, T) {
	if fn == nil {
		return nil
	}
	return func(ctx context.Context, thing string, m T) {
		count(topic)
		fn(ctx, thing, m)
	}
}
