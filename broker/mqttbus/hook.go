package mqttbus

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ggfleet/ggfleet/shared/certs"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// hook is the broker's policy inside mochi: who may connect, what each
// client may touch, and where inbound messages go.
//
// mochi calls, per connection goroutine: OnConnectAuthenticate (after
// CONNECT is read) → OnSessionEstablish (before a taken-over session is
// closed) → CONNACK → OnSessionEstablished → for each PUBLISH: OnACLCheck,
// OnPublish (before PUBACK) → at the end: OnWillSent (only if the will was
// published; wills never pass OnPublish) → OnDisconnect.
type hook struct {
	mqtt.HookBase
	bus *Bus
}

var provided = []byte{
	mqtt.OnConnectAuthenticate,
	mqtt.OnACLCheck,
	mqtt.OnSessionEstablish,
	mqtt.OnSessionEstablished,
	mqtt.OnDisconnect,
	mqtt.OnPublish,
	mqtt.OnWillSent,
}

func (h *hook) ID() string { return "ggfleet-mqttbus" }

func (h *hook) Provides(b byte) bool { return bytes.IndexByte(provided, b) >= 0 }

// OnConnectAuthenticate admits a client only if its verified certificate's
// CN is a thing name equal to the client id, the certificate is still
// active, and its last will (if any) is a valid message on its own topics.
// A refusal is answered with CONNACK "not authorized" (0x05 in MQTT 3.1.1).
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	b := h.bus
	thing, reason := h.authenticate(cl, pk)
	if reason != "" {
		b.log.Warn("MQTT connection refused", "thing", thing, "clientId", cl.ID, "remote", cl.Net.Remote, "reason", reason)
		return false
	}
	return true
}

func (h *hook) authenticate(cl *mqtt.Client, pk packets.Packet) (thing, reason string) {
	conn, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return "", "not a TLS connection"
	}
	state := conn.ConnectionState()
	if len(state.PeerCertificates) == 0 {
		return "", "no client certificate"
	}
	cert := state.PeerCertificates[0]
	thing = cert.Subject.CommonName
	if !thingNameRE.MatchString(thing) {
		return thing, "certificate CN is not a thing name ([a-zA-Z0-9_-]{1,128})"
	}
	if cl.ID != thing {
		return thing, "client id must equal the certificate CN"
	}
	if pk.Connect.WillFlag {
		if r := checkWill(thing, pk); r != "" {
			return thing, r
		}
	}
	ctx, cancel := h.bus.handlerContext()
	defer cancel()
	active, err := h.bus.cfg.Authorizer.CertificateActive(ctx, certs.ID(cert))
	if err != nil {
		h.bus.log.Error("MQTT certificate check failed", "thing", thing, "error", err)
		return thing, "certificate status unavailable"
	}
	if !active {
		return thing, "certificate is not active (revoked, or its thing was deleted)"
	}
	return thing, ""
}

// checkWill refuses a last will that is not on the thing's own topics, is
// delayed (a delayed will could fire after the thing reconnected), or whose
// payload would not decode: wills are published without passing OnPublish.
func checkWill(thing string, pk packets.Packet) string {
	topic := pk.Connect.WillTopic
	if !mqttmsg.Owns(thing, topic) || strings.ContainsAny(topic, "+#") {
		return fmt.Sprintf("last will topic %q is not one of the thing's own topics", topic)
	}
	if pk.Connect.WillProperties.WillDelayInterval > 0 {
		return "a delayed last will is not supported"
	}
	if _, suffix, _ := mqttmsg.ParseTopic(topic); len(pk.Connect.WillPayload) > 0 {
		if err := validate(suffix, pk.Connect.WillPayload); err != nil {
			return fmt.Sprintf("last will payload: %v", err)
		}
	}
	return ""
}

// OnACLCheck allows a client only its own topics, for publish, subscribe
// and delivery alike; the broker's own publishes pass.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	if mqttmsg.Owns(cl.ID, topic) && !strings.HasPrefix(topic, "$") {
		return true
	}
	action := "subscribe to"
	if write {
		action = "publish to"
	}
	h.bus.log.Info("MQTT access denied", "thing", cl.ID, "action", action, "topic", topic)
	return false
}

// OnSessionEstablish makes cl its thing's current session. mochi calls it
// before it closes the session cl takes over, so that older session's will
// and disconnect are recognised as stale.
func (h *hook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	h.bus.setSession(cl.ID, cl)
}

// OnSessionEstablished runs Handlers.OnConnect before the client's first
// packet is read.
func (h *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	b := h.bus
	b.log.Info("MQTT client connected", "thing", cl.ID, "remote", cl.Net.Remote)
	if fn := b.cfg.Handlers.OnConnect; fn != nil {
		b.disp.Call(b.baseContext(), cl.ID, "connect", func(ctx context.Context) { fn(ctx, cl.ID) })
	}
}

// OnDisconnect runs Handlers.OnDisconnect when thing's current session ends.
func (h *hook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	b := h.bus
	if cl.Net.Inline || !b.endSession(cl.ID, cl) {
		b.log.Debug("MQTT session replaced by a newer connection", "thing", cl.ID, "remote", cl.Net.Remote)
		return
	}
	if err != nil {
		b.log.Info("MQTT client disconnected", "thing", cl.ID, "remote", cl.Net.Remote, "error", err)
	} else {
		b.log.Info("MQTT client disconnected", "thing", cl.ID, "remote", cl.Net.Remote)
	}
	if fn := b.cfg.Handlers.OnDisconnect; fn != nil {
		b.disp.Call(b.baseContext(), cl.ID, "disconnect", func(ctx context.Context) { fn(ctx, cl.ID) })
	}
}

// OnPublish hands a client's message to its handler before mochi
// acknowledges it. A message that does not decode, or whose handler
// panicked, is acknowledged but dropped (not retained, not forwarded), so
// the client does not resend it forever.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	if !mqttmsg.Owns(cl.ID, pk.TopicName) { // already refused by OnACLCheck; never trust a path around it
		return pk, packets.ErrRejectPacket
	}
	if !h.bus.disp.Dispatch(h.bus.baseContext(), cl.ID, pk.TopicName, pk.Payload) {
		return pk, packets.CodeSuccessIgnore
	}
	return pk, nil
}

// OnWillSent hands a published last will (the agent's OFFLINE) to the
// handlers, unless a newer session of the same thing already took over.
func (h *hook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline || !h.bus.isCurrent(cl.ID, cl) {
		return
	}
	h.bus.disp.Dispatch(h.bus.baseContext(), cl.ID, pk.TopicName, pk.Payload)
}

// validate checks that a last will's payload decodes as the message its
// suffix names; other suffixes are not interpreted here.
func validate(suffix string, payload []byte) error {
	var err error
	switch suffix {
	case mqttmsg.Connection:
		_, err = mqttmsg.Decode[mqttmsg.ConnectionMsg](payload)
	case mqttmsg.Health:
		_, err = mqttmsg.Decode[mqttmsg.HealthMsg](payload)
	case mqttmsg.DeploymentStatus:
		_, err = mqttmsg.Decode[mqttmsg.DeploymentStatusMsg](payload)
	case mqttmsg.Hello:
		_, err = mqttmsg.Decode[mqttmsg.HelloMsg](payload)
	}
	return err
}
