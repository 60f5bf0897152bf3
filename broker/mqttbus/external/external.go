// Package external connects the broker to an external MQTT broker (such as
// Mosquitto, see docs/mosquitto.md) instead of running the embedded one. In
// aws mode it is the broker's connection to AWS IoT Core's data endpoint,
// with the broker's IoT identity (docs/aws.md).
//
// The broker is one more MQTT client there, with its own certificate from
// its CA. Every replica subscribes to the agents' topics with shared
// subscriptions ($share/{group}/ggfleet/things/+/…), so the external broker
// hands each device message to one replica only. Messages go through the
// same mqttbus.Dispatcher as with the embedded broker, and are acknowledged
// only after their handler returned. Each replica's session is clean, so a
// replica that is gone takes no share; the messages in flight at a replica
// that dies are lost with it (Mosquitto does not hand them to another
// member), and what matters is recovered by the broker: desired deployment
// documents are sent again to cores that have not reported (deploy.Resender),
// and health comes every interval. Within a replica one thing's messages are
// handled one at a time, in the order the external broker delivered them;
// across replicas they may be handled in parallel and out of order.
//
// The external broker authenticates devices (mutual TLS, certificate CN as
// the user name) and keeps each one to ggfleet/things/{CN}/ with its ACL:
// the thing name in a topic is trusted because of that ACL. Connectivity
// comes from the agents' retained connection messages and last wills, as
// there are no session events to observe.
package external

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggfleet/ggfleet/broker/mqttbus"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

// DefaultGroup is the shared-subscription group every replica joins.
const DefaultGroup = "ggfleet"

// Suffixes are the agent → broker topics (under ggfleet/things/+/) the bus
// subscribes to. The broker's own topics (deployments, patch start and
// cancel, probes) are left out so its publishes do not come back to it.
var Suffixes = []string{
	mqttmsg.Connection,
	mqttmsg.Health,
	mqttmsg.DeploymentStatus,
	mqttmsg.Hello,
	patchmsg.EventsTopic("+"),
	patchmsg.LogsTopic("+"),
	patchmsg.ProbeResultTopic("+"),
}

// Config configures a Bus.
type Config struct {
	// URL of the external broker: mqtts://host:port.
	URL string
	// ClientID is this replica's MQTT client id; it must differ between
	// replicas (two sessions with one client id push each other off).
	ClientID string
	// Certificate is the broker's client certificate (issued by its CA).
	Certificate tls.Certificate
	// GetCertificate, when set, is asked for the client certificate on
	// every TLS handshake instead (so a renewed one is used from the next
	// reconnect on).
	GetCertificate func() (tls.Certificate, error)
	// RootCAs verifies the external broker's server certificate.
	RootCAs *x509.CertPool
	// Group is the shared-subscription group (default DefaultGroup).
	Group string
	// Handlers receive what agents send. OnConnect runs after an ONLINE
	// connection message; OnDisconnect is not used (the OFFLINE message
	// goes to OnConnection).
	Handlers mqttbus.Handlers
	// Logger (default slog.Default) and HandlerTimeout (default 10s).
	Logger         *slog.Logger
	HandlerTimeout time.Duration
	// ConnectRetry is the first wait before reconnecting; it doubles up to
	// MaxReconnect (defaults 1s and 30s).
	ConnectRetry time.Duration
	MaxReconnect time.Duration
}

// Bus is the broker's session with an external MQTT broker.
type Bus struct {
	cfg     Config
	log     *slog.Logger
	disp    *mqttbus.Dispatcher
	cl      paho.Client
	started atomic.Bool

	mu   sync.Mutex
	base context.Context
	// subscribed is true once the current connection's subscriptions are
	// acknowledged; epoch counts connection attempts, so that a late
	// onConnect of a connection already lost cannot mark the next one
	// subscribed (paho runs its handlers on goroutines of their own).
	subscribed bool
	epoch      uint64

	// Messages of one thing are handled one at a time, in the order they
	// arrived, by a worker that exists while the thing has some queued.
	qmu     sync.Mutex
	queues  map[string]*thingQueue
	workers sync.WaitGroup
}

// thingQueue holds one thing's messages not handled yet.
type thingQueue struct {
	msgs []paho.Message
}

// New checks cfg and prepares the session; Run connects.
func New(cfg Config) (*Bus, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "mqtts" || u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("MQTT broker URL %q: want mqtts://host:port", cfg.URL)
	}
	if cfg.ClientID == "" || strings.ContainsAny(cfg.ClientID, "+#/") {
		return nil, fmt.Errorf("MQTT client id %q: must be non-empty, without '+', '#' or '/'", cfg.ClientID)
	}
	if len(cfg.Certificate.Certificate) == 0 && cfg.GetCertificate == nil {
		return nil, errors.New("external MQTT broker: a client certificate is required")
	}
	if cfg.Group == "" {
		cfg.Group = DefaultGroup
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ConnectRetry <= 0 {
		cfg.ConnectRetry = time.Second
	}
	if cfg.MaxReconnect <= 0 {
		cfg.MaxReconnect = 30 * time.Second
	}
	log := cfg.Logger.With("component", "mqtt", "mqttUrl", cfg.URL)
	b := &Bus{cfg: cfg, log: log, base: context.Background(), queues: map[string]*thingQueue{}}
	b.disp = mqttbus.NewDispatcher(withConnect(cfg.Handlers), log, cfg.HandlerTimeout)

	opts := paho.NewClientOptions().
		AddBroker("tls://" + u.Host).
		SetClientID(cfg.ClientID).
		SetProtocolVersion(4).
		// A clean session: a replica that is gone (killed, scaled down,
		// reconnecting) is no member of the shared subscriptions. With a
		// persistent one Mosquitto kept handing it its share of every
		// message, queued until it came back, so a replica that did not
		// come back swallowed a third of three replicas' deployment
		// reports. The messages in flight at a replica that dies are
		// dropped; the deployment service sends a waiting core its
		// document again (deploy.ResendInterval), which recovers the report.
		SetCleanSession(true).
		// onMessage only queues (handlers, which may publish and wait for
		// the PUBACK, run in per-thing workers), so it may be called in order.
		SetOrderMatters(true).
		SetAutoAckDisabled(true).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(cfg.ConnectRetry).
		SetMaxReconnectInterval(cfg.MaxReconnect).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetWriteTimeout(10 * time.Second).
		SetTLSConfig(&tls.Config{
			MinVersion: tls.VersionTLS12,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				if cfg.GetCertificate == nil {
					return &cfg.Certificate, nil
				}
				c, err := cfg.GetCertificate()
				if err != nil {
					log.Error("the broker's MQTT client certificate is unavailable", "error", err)
					return nil, err
				}
				return &c, nil
			},
			RootCAs:    cfg.RootCAs,
			ServerName: u.Hostname(),
		}).
		SetDefaultPublishHandler(b.onMessage). // queued messages may arrive before SUBACK
		SetOnConnectHandler(b.onConnect).
		// paho starts this handler on a goroutine of its own, next to the
		// reconnect: it may run after the new connection is up, so it
		// leaves the state alone (Connected also asks paho).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			log.Warn("lost the connection to the external MQTT broker; reconnecting", "error", err)
		}).
		// Called on the reconnecting goroutine before every attempt, so
		// always before the next connection's onConnect.
		SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) {
			b.newAttempt()
			log.Info("reconnecting to the external MQTT broker")
		})
	b.cl = paho.NewClient(opts)
	return b, nil
}

// withConnect makes an ONLINE connection message also run OnConnect, the
// embedded broker's "session established" (re-publish desired state).
func withConnect(h mqttbus.Handlers) mqttbus.Handlers {
	onConn, onConnect := h.OnConnection, h.OnConnect
	h.OnConnection = func(ctx context.Context, thing string, m mqttmsg.ConnectionMsg) {
		if onConn != nil {
			onConn(ctx, thing, m)
		}
		if m.State == mqttmsg.Online && onConnect != nil {
			onConnect(ctx, thing)
		}
	}
	return h
}

// Run connects (retrying with backoff until it succeeds), keeps the session
// until ctx ends, then disconnects, waits for the handlers running and
// returns nil. Messages not acknowledged by then are dropped with the clean
// session (see the package comment for how the broker recovers them).
// Run may be called once.
func (b *Bus) Run(ctx context.Context) error {
	if !b.started.CompareAndSwap(false, true) {
		return errors.New("external MQTT broker: Run called twice")
	}
	b.mu.Lock()
	b.base = ctx
	b.mu.Unlock()
	b.log.Info("connecting to the external MQTT broker", "clientId", b.cfg.ClientID, "group", b.cfg.Group)
	b.cl.Connect() // with ConnectRetry the token completes only once connected
	<-ctx.Done()
	b.cl.Disconnect(1000)
	b.workers.Wait()
	return nil
}

// onConnect subscribes after every (re)connect: a clean session starts
// without subscriptions. A failed attempt is retried with backoff for as
// long as the connection stays up.
func (b *Bus) onConnect(cl paho.Client) {
	epoch := b.currentEpoch()
	wait := b.cfg.ConnectRetry
	// Once a newer attempt has started, its own onConnect subscribes.
	for cl.IsConnectionOpen() && b.currentEpoch() == epoch {
		err := b.subscribe(cl)
		if err == nil {
			if !b.markSubscribed(epoch) {
				return
			}
			b.log.Info("connected to the external MQTT broker", "clientId", b.cfg.ClientID)
			return
		}
		b.log.Error("subscribing at the external MQTT broker failed; retrying", "error", err, "retryIn", wait)
		time.Sleep(wait)
		wait = min(2*wait, b.cfg.MaxReconnect)
	}
}

// subscribe makes the shared subscriptions; a refused one is an error
// (the external broker's ACL does not let the broker's certificate read).
func (b *Bus) subscribe(cl paho.Client) error {
	filters := map[string]byte{}
	for _, s := range Suffixes {
		filters[b.filter(s)] = 1
	}
	tok := cl.SubscribeMultiple(filters, b.onMessage)
	if !tok.WaitTimeout(30 * time.Second) {
		return errors.New("no SUBACK within 30s")
	}
	if err := tok.Error(); err != nil {
		return err
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		for f, code := range st.Result() {
			if code == 0x80 {
				return fmt.Errorf("subscription to %s refused: check what the broker's certificate (CN ggfleet.broker) may read: the ACL at Mosquitto, the ggfleet-broker policy at AWS IoT Core", f)
			}
		}
	}
	return nil
}

// filter is the shared-subscription filter for an agent topic suffix.
func (b *Bus) filter(suffix string) string {
	return "$share/" + b.cfg.Group + "/" + mqttmsg.Prefix + "+/" + suffix
}

// onMessage queues an agent message for its thing's worker. The external
// broker limits the unacknowledged messages it sends (Mosquitto's
// max_inflight_messages), which bounds the queues.
func (b *Bus) onMessage(_ paho.Client, m paho.Message) {
	thing, _, ok := mqttmsg.ParseTopic(m.Topic())
	if !ok {
		b.log.Warn("MQTT message dropped", "topic", m.Topic(), "reason", "not a ggfleet topic")
		m.Ack()
		return
	}
	b.qmu.Lock()
	defer b.qmu.Unlock()
	q := b.queues[thing]
	if q == nil {
		q = &thingQueue{}
		b.queues[thing] = q
		b.workers.Add(1)
		go b.drain(thing, q)
	}
	q.msgs = append(q.msgs, m)
}

// drain handles thing's messages in order, acknowledging each after its
// handler returned, until the queue is empty.
func (b *Bus) drain(thing string, q *thingQueue) {
	defer b.workers.Done()
	for {
		b.qmu.Lock()
		if len(q.msgs) == 0 {
			delete(b.queues, thing)
			b.qmu.Unlock()
			return
		}
		m := q.msgs[0]
		q.msgs = q.msgs[1:]
		b.qmu.Unlock()
		b.disp.Dispatch(b.baseContext(), thing, m.Topic(), m.Payload())
		m.Ack()
	}
}

// Publish sends payload at QoS 1 to ggfleet/things/{thing}/{suffix} and
// waits for the external broker's PUBACK or ctx. A message published while
// disconnected is sent after the reconnect.
func (b *Bus) Publish(ctx context.Context, thing, suffix string, payload []byte, retained bool) error {
	topic, err := mqttbus.CheckPublish(thing, suffix, payload)
	if err != nil {
		return err
	}
	return b.publish(ctx, topic, payload, retained)
}

// ClearRetained removes the retained message of ggfleet/things/{thing}/{suffix}
// (an empty retained publish, which current subscribers also receive).
func (b *Bus) ClearRetained(ctx context.Context, thing, suffix string) error {
	topic, err := mqttbus.CheckPublish(thing, suffix, []byte{0})
	if err != nil {
		return err
	}
	return b.publish(ctx, topic, []byte{}, true)
}

func (b *Bus) publish(ctx context.Context, topic string, payload []byte, retained bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	tok := b.cl.Publish(topic, 1, retained, payload)
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return fmt.Errorf("publish to %s: %w", topic, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("publish to %s: no acknowledgement from the external MQTT broker yet (it is sent after a reconnect): %w", topic, ctx.Err())
	}
}

// Disconnect cannot end a device's session at an external broker; the
// device's certificate is refused from its next connect on (the CRL file,
// see docs/mosquitto.md), so it is only logged.
func (b *Bus) Disconnect(thing string) {
	b.log.Info("a deleted core keeps its current session at the external MQTT broker until it disconnects; its certificate is refused afterwards", "thing", thing)
}

// Connected reports whether the session with the external broker is up
// and subscribed: /readyz's check in aws mode.
func (b *Bus) Connected() bool {
	b.mu.Lock()
	subscribed := b.subscribed
	b.mu.Unlock()
	return subscribed && b.cl.IsConnectionOpen()
}

// newAttempt forgets the lost connection's subscriptions before the next
// connection is tried.
func (b *Bus) newAttempt() {
	b.mu.Lock()
	b.epoch++
	b.subscribed = false
	b.mu.Unlock()
}

func (b *Bus) currentEpoch() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.epoch
}

// markSubscribed records that the connection of the given epoch is
// subscribed; false if a newer attempt has started since.
func (b *Bus) markSubscribed(epoch uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.epoch != epoch {
		return false
	}
	b.subscribed = true
	return true
}

func (b *Bus) baseContext() context.Context {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.base
}
