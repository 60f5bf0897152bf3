// Package mqttclient is the agent's one MQTT session with its broker: mutual
// TLS with the device certificate, reconnection with jittered backoff, a last
// will that marks the core OFFLINE, the retained ONLINE state and a hello on
// every connect, topic-to-handler dispatch in arrival order, and an on-disk
// outbox so that reports (deployment status above all) survive a broker that
// is away, and an agent that restarts, without being lost.
//
// It is imported by agent/daemon, which composes `ggagent run`; the other
// agent packages receive its Publish and Subscribe methods through small
// interfaces of their own. It uses paho (github.com/eclipse/paho.mqtt.golang)
// and must keep building for 32-bit ARM without cgo.
package mqttclient

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// Defaults for the zero values of Config.
const (
	DefaultMaxOutbox      = 10_000
	DefaultMaxOutboxBytes = 64 << 20
	DefaultKeepAlive      = 30 * time.Second
	DefaultConnectTimeout = 30 * time.Second
)

// sendWindow is how many outbox reports may wait for their PUBACK at once.
// More would deliver a long backlog faster over a slow link; fewer keeps the
// duplicates a broken connection can cause (at most this many) rarer.
const sendWindow = 8

// handlerQueue bounds the messages waiting for one subscription's handler.
const handlerQueue = 256

// shutdownTimeout bounds the clean OFFLINE publish when Run ends.
const shutdownTimeout = 5 * time.Second

// ErrNotConnected is returned by PublishNow while there is no session.
var ErrNotConnected = errors.New("not connected to the MQTT broker")

var errConnectionLost = errors.New("MQTT connection lost")

// Config is what a Client needs. Endpoint, ClientID, Thing and OutboxDir are
// required; zero values elsewhere take the defaults named on each field.
type Config struct {
	Endpoint  string      // host:port of the broker's MQTT over TLS listener
	ClientID  string      // the thing name (<thing>-ggagent in AWS mode)
	Thing     string      // topics are ggfleet/things/{Thing}/...
	TLS       *tls.Config // client certificate and RootCAs; nil means plain TCP (local development only)
	OutboxDir string      // where undelivered reports are kept (a state-dir subfolder, made 0700)
	// MaxOutbox bounds the reports kept (default 10,000). When full, the
	// oldest health reports are dropped first; deployment status and
	// other reports never are (Publish fails instead).
	MaxOutbox int
	// MaxOutboxBytes bounds the outbox on disk (default 64 MiB), with the
	// same drop rule as MaxOutbox.
	MaxOutboxBytes int64
	KeepAlive      time.Duration // MQTT keep-alive (default 30s)
	ConnectTimeout time.Duration // dial, TLS handshake and CONNACK (default 30s)
	Backoff        Backoff       // wait between connection attempts (1s…60s, full jitter)
	// OnConnect runs after each (re)connect, once subscriptions are in place
	// and ONLINE and hello are sent. It runs on Run's goroutine: return soon.
	OnConnect func(ctx context.Context)
	// Hello builds the agent/hello message published on every connect
	// (optional; nothing is sent when nil).
	Hello  func() mqttmsg.HelloMsg
	Logger *slog.Logger // default: discard
}

// Stats are the session's counters, for `ggagent status` and tests.
type Stats struct {
	Connected       bool
	Connects        uint64 // successful connects, including the first
	ConnectFailures uint64 // connection attempts that failed
	Disconnects     uint64 // sessions that ended (lost or closed)
	OutboxLen       int    // reports waiting for delivery
	OutboxBytes     int64  // their size on disk
	Delivered       uint64 // outbox reports acknowledged by the broker
	Dropped         uint64 // outbox reports dropped to respect the bound
	HandlerDropped  uint64 // incoming messages dropped because a handler fell behind
}

// subscription is one registered topic suffix and its serial handler queue.
type subscription struct {
	suffix  string
	topic   string
	handler func(ctx context.Context, payload []byte)
	queue   chan []byte
}

// session is one live paho connection; lost is closed when it drops.
type session struct {
	cl   mqtt.Client
	lost chan struct{}
	err  error // why it was lost; written before lost is closed

	mu   sync.Mutex
	conn net.Conn // the network connection under cl, once dialled
}

// abort drops the session without a DISCONNECT packet, so the broker
// publishes the will: a session that failed half-way through its setup may
// already have published ONLINE, and a clean disconnect would leave that
// retained.
func (s *session) abort() {
	s.mu.Lock()
	if s.conn != nil {
		_ = s.conn.Close()
	}
	s.mu.Unlock()
	s.cl.Disconnect(0)
}

// Client is the agent's MQTT session. Create it with New, register handlers
// with Subscribe, then call Run once.
type Client struct {
	cfg Config
	log *slog.Logger
	box *outbox

	mu      sync.Mutex
	subs    []*subscription
	subErr  error
	running bool
	sess    *session
	changed chan struct{} // closed and replaced whenever sess changes

	connects, connectFailures, disconnects, delivered, handlerDropped atomic.Uint64
}

// New checks cfg, fills defaults and opens the outbox (resuming what a
// previous run left there). It starts no goroutines.
func New(cfg Config) (*Client, error) {
	var errs []error
	if cfg.Endpoint == "" {
		errs = append(errs, errors.New("endpoint is required (host:port of the MQTT broker)"))
	}
	if cfg.ClientID == "" {
		errs = append(errs, errors.New("client id is required"))
	}
	if cfg.Thing == "" || strings.ContainsAny(cfg.Thing, "+#/") {
		errs = append(errs, fmt.Errorf("thing name %q is not valid", cfg.Thing))
	}
	if cfg.OutboxDir == "" {
		errs = append(errs, errors.New("outbox directory is required"))
	}
	if cfg.MaxOutbox < 0 || cfg.MaxOutboxBytes < 0 {
		errs = append(errs, errors.New("outbox bounds must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("mqtt client config: %w", err)
	}
	if cfg.MaxOutbox == 0 {
		cfg.MaxOutbox = DefaultMaxOutbox
	}
	if cfg.MaxOutboxBytes == 0 {
		cfg.MaxOutboxBytes = DefaultMaxOutboxBytes
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	cfg.Backoff = cfg.Backoff.withDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	box, err := openOutbox(filepath.Clean(cfg.OutboxDir), cfg.MaxOutbox, cfg.MaxOutboxBytes)
	if err != nil {
		return nil, fmt.Errorf("open MQTT outbox in %s: %w", cfg.OutboxDir, err)
	}
	return &Client{
		cfg:     cfg,
		log:     cfg.Logger.With("thing", cfg.Thing),
		box:     box,
		changed: make(chan struct{}),
	}, nil
}

// Subscribe registers handler for ggfleet/things/{Thing}/{suffix} (MQTT
// wildcards allowed in suffix). Register before Run: subscriptions are made
// again on every connect. A handler receives one message at a time, in the
// order they arrived; a handler that falls far behind loses the oldest of
// its waiting messages. Retained messages (the desired deployment) arrive
// again after every reconnect, so handlers must be idempotent. Handlers
// should honour ctx, which ends with Run.
func (c *Client) Subscribe(suffix string, handler func(ctx context.Context, payload []byte)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		c.log.Error("subscription registered after Run started; it is ignored", "topic", suffix)
		return
	}
	if err := checkSuffix(suffix, true); err != nil || handler == nil {
		if handler == nil {
			err = errors.New("handler is nil")
		}
		c.subErr = errors.Join(c.subErr, fmt.Errorf("subscribe %q: %w", suffix, err))
		return
	}
	c.subs = append(c.subs, &subscription{
		suffix:  suffix,
		topic:   mqttmsg.Topic(c.cfg.Thing, suffix),
		handler: handler,
		queue:   make(chan []byte, handlerQueue),
	})
}

// Publish is the reliable path for reports: the message is written to the
// outbox (fsynced) before Publish returns, then delivered at QoS 1 in call
// order, whenever the broker is reachable, and removed once acknowledged. A
// connection that breaks mid-delivery can make the broker see a report
// twice, so every report should carry its own ids and timestamp.
func (c *Client) Publish(ctx context.Context, suffix string, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("publish %s: %w", suffix, err)
	}
	if err := checkSuffix(suffix, false); err != nil {
		return fmt.Errorf("publish %q: %w", suffix, err)
	}
	if len(payload) > mqttmsg.MaxPayload {
		return fmt.Errorf("publish %s: payload of %d bytes is over the %d-byte limit", suffix, len(payload), mqttmsg.MaxPayload)
	}
	dropped, err := c.box.add(suffix, payload)
	if dropped > 0 {
		c.log.Warn("MQTT outbox full: dropped the oldest health reports", "dropped", dropped)
	}
	if err != nil {
		return fmt.Errorf("publish %s: %w", suffix, err)
	}
	return nil
}

// PublishNow sends one QoS 1 message on the current session and waits for
// the broker's acknowledgement. It keeps nothing: while offline it fails at
// once with ErrNotConnected. Use it for state that is stale by the next
// connect (the retained connection state, probe answers).
func (c *Client) PublishNow(ctx context.Context, suffix string, payload []byte, retained bool) error {
	if err := checkSuffix(suffix, false); err != nil {
		return fmt.Errorf("publish %q: %w", suffix, err)
	}
	s, _ := c.session()
	if s == nil {
		return fmt.Errorf("publish %s: %w", suffix, ErrNotConnected)
	}
	tok := s.cl.Publish(mqttmsg.Topic(c.cfg.Thing, suffix), 1, retained, payload)
	if err := waitToken(ctx, tok, s.lost, 2*c.cfg.KeepAlive); err != nil {
		return fmt.Errorf("publish %s: %w", suffix, err)
	}
	return nil
}

// Connected reports whether a session is up.
func (c *Client) Connected() bool {
	s, _ := c.session()
	return s != nil
}

// Stats returns a snapshot of the counters.
func (c *Client) Stats() Stats {
	n, size, dropped := c.box.counts()
	return Stats{
		Connected:       c.Connected(),
		Connects:        c.connects.Load(),
		ConnectFailures: c.connectFailures.Load(),
		Disconnects:     c.disconnects.Load(),
		OutboxLen:       n,
		OutboxBytes:     size,
		Delivered:       c.delivered.Load(),
		Dropped:         dropped,
		HandlerDropped:  c.handlerDropped.Load(),
	}
}

// Run keeps the session up until ctx ends: it connects, reconnects after
// every failure with jittered backoff, delivers the outbox and dispatches
// incoming messages. When ctx ends it publishes the retained OFFLINE state,
// disconnects cleanly, waits for its goroutines and handlers, and returns
// nil. It fails at once only for misuse (a bad Subscribe, a second Run).
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return errors.New("mqtt client: Run called twice")
	}
	if c.subErr != nil {
		c.mu.Unlock()
		return fmt.Errorf("mqtt client: %w", c.subErr)
	}
	c.running = true
	subs := slices.Clone(c.subs)
	c.mu.Unlock()

	var wg sync.WaitGroup
	for _, s := range subs {
		wg.Go(func() { c.dispatch(ctx, s) })
	}
	wg.Go(func() { c.sendLoop(ctx) })
	c.connectLoop(ctx, subs)
	wg.Wait()
	return nil
}

// connectLoop owns the sessions: one at a time, each a fresh paho client
// (so the will carries the time of its own connect).
func (c *Client) connectLoop(ctx context.Context, subs []*subscription) {
	attempt := 0
	for ctx.Err() == nil {
		s, err := c.connect(ctx, subs)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.connectFailures.Add(1)
			d := c.cfg.Backoff.Delay(attempt, nil)
			attempt++
			c.log.Warn("cannot connect to the MQTT broker; will retry",
				"endpoint", c.cfg.Endpoint, "err", err, "retryIn", d)
			sleep(ctx, d)
			continue
		}
		up := time.Now()
		c.connects.Add(1)
		c.setSession(s)
		c.log.Info("connected to the MQTT broker", "endpoint", c.cfg.Endpoint, "clientId", c.cfg.ClientID)
		if c.cfg.OnConnect != nil {
			c.cfg.OnConnect(ctx)
		}
		select {
		case <-s.lost:
			c.setSession(nil)
			c.disconnects.Add(1)
			// A session that lasted resets the backoff; one that drops
			// right after connecting keeps growing it.
			if time.Since(up) > c.cfg.Backoff.Max {
				attempt = 0
			}
			d := c.cfg.Backoff.Delay(attempt, nil)
			attempt++
			c.log.Warn("lost the MQTT connection; reconnecting", "err", s.err, "retryIn", d)
			sleep(ctx, d)
		case <-ctx.Done():
			c.setSession(nil)
			c.close(s)
			c.disconnects.Add(1)
			return
		}
	}
}

// connect opens one session: CONNECT with the will, the subscriptions, the
// retained ONLINE state and the hello. Any failure closes it again.
func (c *Client) connect(ctx context.Context, subs []*subscription) (*session, error) {
	will, err := connectionPayload(mqttmsg.Offline)
	if err != nil {
		return nil, err
	}
	s := &session{lost: make(chan struct{})}
	var once sync.Once
	opts := mqtt.NewClientOptions().
		AddBroker(c.brokerURL()).
		SetClientID(c.cfg.ClientID).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(true).
		SetKeepAlive(c.cfg.KeepAlive).
		SetPingTimeout(min(c.cfg.KeepAlive, 10*time.Second)).
		SetConnectTimeout(c.cfg.ConnectTimeout).
		SetWriteTimeout(c.cfg.ConnectTimeout).
		SetWill(mqttmsg.Topic(c.cfg.Thing, mqttmsg.Connection), string(will), 1, true).
		SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			conn, err := c.dial(ctx, u.Host)
			if err == nil {
				s.mu.Lock()
				s.conn = conn
				s.mu.Unlock()
			}
			return conn, err
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			once.Do(func() {
				s.err = err
				close(s.lost)
			})
		})
	s.cl = mqtt.NewClient(opts)

	tok := s.cl.Connect()
	if err := waitToken(ctx, tok, nil, 0); err != nil {
		// The dial follows ctx and CONNACK is bounded by ConnectTimeout:
		// wait for paho to finish so no half-made session is left behind.
		<-tok.Done()
		if tok.Error() != nil {
			err = tok.Error()
		}
		s.abort()
		return nil, fmt.Errorf("connect to %s as %q: %w", c.cfg.Endpoint, c.cfg.ClientID, err)
	}
	fail := func(err error) (*session, error) {
		s.abort()
		return nil, err
	}
	for _, sub := range subs {
		tok := s.cl.Subscribe(sub.topic, 1, c.enqueue(sub))
		if err := waitToken(ctx, tok, s.lost, c.cfg.ConnectTimeout); err != nil {
			return fail(fmt.Errorf("subscribe to %s: %w", sub.topic, err))
		}
		if st, ok := tok.(*mqtt.SubscribeToken); ok && st.Result()[sub.topic] == 0x80 {
			return fail(fmt.Errorf("subscribe to %s: the broker refused it (check the thing's policy)", sub.topic))
		}
	}
	online, err := connectionPayload(mqttmsg.Online)
	if err != nil {
		return fail(err)
	}
	tok = s.cl.Publish(mqttmsg.Topic(c.cfg.Thing, mqttmsg.Connection), 1, true, online)
	if err := waitToken(ctx, tok, s.lost, c.cfg.ConnectTimeout); err != nil {
		return fail(fmt.Errorf("publish ONLINE state: %w", err))
	}
	if c.cfg.Hello != nil {
		h := c.cfg.Hello()
		if h.Version == 0 {
			h.Version = mqttmsg.Version
		}
		b, err := json.Marshal(h)
		if err != nil {
			return fail(fmt.Errorf("encode hello: %w", err))
		}
		tok := s.cl.Publish(mqttmsg.Topic(c.cfg.Thing, mqttmsg.Hello), 1, false, b)
		if err := waitToken(ctx, tok, s.lost, c.cfg.ConnectTimeout); err != nil {
			return fail(fmt.Errorf("publish hello: %w", err))
		}
	}
	return s, nil
}

// close ends a session cleanly. A clean DISCONNECT makes the broker discard
// the will, so the OFFLINE state is published explicitly first.
func (c *Client) close(s *session) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if b, err := connectionPayload(mqttmsg.Offline); err == nil {
		tok := s.cl.Publish(mqttmsg.Topic(c.cfg.Thing, mqttmsg.Connection), 1, true, b)
		if err := waitToken(ctx, tok, s.lost, 0); err != nil {
			c.log.Warn("could not publish the OFFLINE state before disconnecting", "err", err)
		}
	}
	s.cl.Disconnect(250)
	c.log.Info("disconnected from the MQTT broker")
}

// dial opens the TCP (and TLS) connection, abandoned when ctx ends.
func (c *Client) dial(ctx context.Context, addr string) (net.Conn, error) {
	nd := &net.Dialer{Timeout: c.cfg.ConnectTimeout, KeepAlive: c.cfg.KeepAlive}
	if c.cfg.TLS == nil {
		return nd.DialContext(ctx, "tcp", addr)
	}
	td := &tls.Dialer{NetDialer: nd, Config: c.cfg.TLS}
	return td.DialContext(ctx, "tcp", addr)
}

func (c *Client) brokerURL() string {
	if c.cfg.TLS == nil {
		return "tcp://" + c.cfg.Endpoint
	}
	return "tls://" + c.cfg.Endpoint
}

// sendLoop delivers the outbox, oldest first, while a session is up.
func (c *Client) sendLoop(ctx context.Context) {
	for {
		s, changed := c.session()
		if s == nil {
			select {
			case <-ctx.Done():
				return
			case <-changed:
				continue
			}
		}
		batch := c.box.peek(sendWindow)
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-changed:
			case <-c.box.notify:
			}
			continue
		}
		if err := c.sendBatch(ctx, s, batch); err != nil {
			if ctx.Err() != nil {
				return
			}
			c.log.Warn("MQTT report delivery interrupted; will resend", "err", err)
			// Resend on the next session, or on this one after a pause
			// if it is still up (an acknowledgement that never came).
			select {
			case <-ctx.Done():
				return
			case <-changed:
			case <-time.After(c.cfg.Backoff.Min):
			}
		}
	}
}

// sendBatch publishes the batch in order and removes each report once the
// broker acknowledged it.
func (c *Client) sendBatch(ctx context.Context, s *session, batch []outboxEntry) error {
	type inflight struct {
		e   outboxEntry
		tok mqtt.Token
	}
	var fl []inflight
	for _, e := range batch {
		m, err := c.box.read(e)
		if errors.Is(err, fs.ErrNotExist) {
			// Dropped to respect the bound since peek (then this is a
			// no-op), or deleted by hand: forget it either way.
			if err := c.box.remove(e); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			c.log.Error("dropping an unreadable report from the MQTT outbox", "err", err)
			if err := c.box.discard(e); err != nil {
				return err
			}
			continue
		}
		tok := s.cl.Publish(mqttmsg.Topic(c.cfg.Thing, m.suffix), 1, false, m.payload)
		fl = append(fl, inflight{e, tok})
	}
	for _, f := range fl {
		if err := waitToken(ctx, f.tok, s.lost, 2*c.cfg.KeepAlive); err != nil {
			return err
		}
		if err := c.box.remove(f.e); err != nil {
			return err
		}
		c.delivered.Add(1)
	}
	return nil
}

// enqueue is the paho callback for one subscription: it only queues, so a
// slow handler never holds up paho's reader (and with it PUBACKs and pings).
func (c *Client) enqueue(sub *subscription) mqtt.MessageHandler {
	return func(_ mqtt.Client, m mqtt.Message) {
		p := m.Payload()
		for {
			select {
			case sub.queue <- p:
				return
			default:
			}
			select {
			case <-sub.queue:
				c.handlerDropped.Add(1)
				c.log.Warn("handler is falling behind; dropped its oldest waiting message", "topic", sub.topic)
			default:
			}
		}
	}
}

// dispatch runs one subscription's handler for each queued message in turn.
func (c *Client) dispatch(ctx context.Context, sub *subscription) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-sub.queue:
			sub.handler(ctx, p)
		}
	}
}

func (c *Client) session() (*session, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess, c.changed
}

func (c *Client) setSession(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sess = s
	close(c.changed)
	c.changed = make(chan struct{})
}

// waitToken waits for tok, for ctx, for the session to drop (lost may be
// nil) or for timeout (0: none), whichever comes first.
func waitToken(ctx context.Context, tok mqtt.Token, lost <-chan struct{}, timeout time.Duration) error {
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-lost:
		select {
		case <-tok.Done():
			return tok.Error()
		default:
			return errConnectionLost
		}
	case <-expired:
		return fmt.Errorf("no answer from the MQTT broker within %s", timeout)
	}
}

// connectionPayload is the connection message for state, stamped now.
func connectionPayload(state string) ([]byte, error) {
	b, err := json.Marshal(mqttmsg.ConnectionMsg{Version: mqttmsg.Version, State: state, Timestamp: time.Now().UTC()})
	if err != nil {
		return nil, fmt.Errorf("encode %s connection state: %w", state, err)
	}
	return b, nil
}

// checkSuffix rejects suffixes that would leave the thing's own topics or
// break the outbox file format. Wildcards are for subscriptions only.
func checkSuffix(suffix string, filter bool) error {
	switch {
	case suffix == "":
		return errors.New("topic suffix is empty")
	case strings.HasPrefix(suffix, "/"):
		return errors.New("topic suffix must not start with /")
	case strings.ContainsAny(suffix, "\n\x00"):
		return errors.New("topic suffix must not contain newlines or NUL")
	case !filter && strings.ContainsAny(suffix, "+#"):
		return errors.New("wildcards are only allowed when subscribing")
	}
	return nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
