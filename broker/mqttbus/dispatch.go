package mqttbus

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// Dispatcher decodes what agents send and calls the matching Handlers. The
// embedded broker and the client of an external broker (mqttbus/external)
// share it, so a message is handled the same way whichever broker carried
// it.
type Dispatcher struct {
	h       Handlers
	log     *slog.Logger
	timeout time.Duration
}

// NewDispatcher returns a Dispatcher calling h; each handler call is bounded
// by timeout (default 10s). log receives dropped messages and handler panics
// (default slog.Default).
func NewDispatcher(h Handlers, log *slog.Logger, timeout time.Duration) *Dispatcher {
	if log == nil {
		log = slog.Default()
	}
	if timeout <= 0 {
		timeout = defaultHandlerLimit
	}
	return &Dispatcher{h: h, log: log, timeout: timeout}
}

// Handlers returns the handlers the Dispatcher calls.
func (d *Dispatcher) Handlers() Handlers { return d.h }

// Dispatch decodes a message thing sent on topic and calls its handler with
// a context carrying base's values (not its cancellation: a will published
// during shutdown must still be recorded). It returns false when the
// message was dropped: not a ggfleet topic, a payload that does not decode,
// a suffix only the broker may send, or a handler that panicked. An empty
// payload (a cleared retained message) is accepted and not handed on.
func (d *Dispatcher) Dispatch(base context.Context, thing, topic string, payload []byte) bool {
	_, suffix, ok := mqttmsg.ParseTopic(topic)
	if !ok {
		d.log.Warn("MQTT message dropped", "thing", thing, "topic", topic, "reason", "not a ggfleet topic")
		return false
	}
	if len(payload) == 0 {
		return true // clears a retained message; nothing to hand on
	}
	h := d.h
	switch suffix {
	case mqttmsg.Connection:
		return deliver(d, base, thing, suffix, payload, h.OnConnection)
	case mqttmsg.Health:
		return deliver(d, base, thing, suffix, payload, h.OnHealth)
	case mqttmsg.DeploymentStatus:
		return deliver(d, base, thing, suffix, payload, h.OnDeploymentStatus)
	case mqttmsg.Hello:
		return deliver(d, base, thing, suffix, payload, h.OnHello)
	case mqttmsg.Deployments:
		d.log.Warn("MQTT message dropped", "thing", thing, "topic", topic, "reason", "deployments are sent by the broker, not the agent")
		return false
	default:
		if h.OnMessage == nil {
			return true
		}
		return d.Call(base, thing, suffix, func(ctx context.Context) { h.OnMessage(ctx, thing, suffix, payload) })
	}
}

// deliver decodes payload as T and calls fn with it.
func deliver[T mqttmsg.ConnectionMsg | mqttmsg.HealthMsg | mqttmsg.DeploymentStatusMsg | mqttmsg.HelloMsg](
	d *Dispatcher, base context.Context, thing, suffix string, payload []byte, fn func(context.Context, string, T)) bool {
	m, err := mqttmsg.Decode[T](payload)
	if err != nil {
		d.log.Warn("MQTT message dropped", "thing", thing, "topic", mqttmsg.Topic(thing, suffix), "reason", err.Error())
		return false
	}
	if fn == nil {
		return true
	}
	return d.Call(base, thing, suffix, func(ctx context.Context) { fn(ctx, thing, m) })
}

// Call runs a handler with base's values and the handler timeout; a panic
// is logged and reported as false instead of taking the broker down.
func (d *Dispatcher) Call(base context.Context, thing, what string, fn func(ctx context.Context)) (ok bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(base), d.timeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			d.log.Error("MQTT handler panicked; message dropped", "thing", thing, "handler", what, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			ok = false
		}
	}()
	fn(ctx)
	return true
}
