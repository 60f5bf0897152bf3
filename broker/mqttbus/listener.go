package mqttbus

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// tlsListener is a mochi listener that, unlike listeners.TCP, completes the
// TLS handshake itself under a deadline (a client that connects and sends
// nothing cannot hold a goroutine forever), logs failed handshakes with
// the remote address, and closes every connection it accepted on Close.
type tlsListener struct {
	id        string
	address   string
	tlsConfig *tls.Config
	log       *slog.Logger

	mu     sync.Mutex
	ln     net.Listener
	closed bool
	conns  map[net.Conn]struct{}
}

var _ listeners.Listener = (*tlsListener)(nil)

func (l *tlsListener) ID() string       { return l.id }
func (l *tlsListener) Protocol() string { return "tcp+tls" }

// Address is the bound address once Init has run.
func (l *tlsListener) Address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

// Init opens the TCP socket.
func (l *tlsListener) Init(_ *slog.Logger) error {
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.ln = ln
	l.conns = map[net.Conn]struct{}{}
	l.mu.Unlock()
	return nil
}

// Serve accepts connections until Close.
func (l *tlsListener) Serve(establish listeners.EstablishFn) {
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if l.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			l.log.Warn("MQTT accept failed", "error", err)
			time.Sleep(50 * time.Millisecond) // e.g. out of file descriptors
			continue
		}
		if !l.track(conn) {
			_ = conn.Close()
			return
		}
		go l.handle(conn, establish)
	}
}

func (l *tlsListener) handle(conn net.Conn, establish listeners.EstablishFn) {
	defer l.untrack(conn)
	defer conn.Close()
	remote := conn.RemoteAddr().String()

	tc := tls.Server(conn, l.tlsConfig)
	_ = tc.SetDeadline(time.Now().Add(handshakeTimeout))
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		l.log.Warn("MQTT TLS handshake failed", "remote", remote, "error", err)
		return
	}
	// The deadline now bounds the wait for CONNECT; mochi replaces it
	// with the keepalive once the client is admitted.
	_ = tc.SetDeadline(time.Now().Add(handshakeTimeout))
	if l.isClosed() {
		return
	}
	if err := establish(l.id, tc); err != nil {
		l.log.Debug("MQTT connection ended", "remote", remote, "error", err)
	}
}

func (l *tlsListener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *tlsListener) untrack(c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.conns, c)
}

func (l *tlsListener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Close stops accepting, lets mochi disconnect its clients (so their wills
// fire), then closes any connection still open (mid-handshake ones).
func (l *tlsListener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	ln := l.ln
	l.mu.Unlock()

	if ln != nil {
		_ = ln.Close()
	}
	closeClients(l.id)

	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		_ = c.Close()
	}
}

// quietHandler demotes mochi's own INFO messages (hook added, listener
// attached, server starting/stopping) to DEBUG; its warnings stay.
type quietHandler struct{ slog.Handler }

func (h quietHandler) Enabled(ctx context.Context, level slog.Level) bool {
	if level < slog.LevelWarn {
		level = slog.LevelDebug
	}
	return h.Handler.Enabled(ctx, level)
}

func (h quietHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		r.Level = slog.LevelDebug
	}
	return h.Handler.Handle(ctx, r)
}

func (h quietHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return quietHandler{h.Handler.WithAttrs(attrs)}
}

func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{h.Handler.WithGroup(name)}
}
