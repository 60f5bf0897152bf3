package mqttbus

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// FuzzDispatch sends arbitrary topics and payloads through the broker-side
// decoder of agents' messages: it never panics, a handler is only called
// with a message that passed mqttmsg's validation, on a ggfleet topic, and
// a dropped message (false) reaches no handler.
func FuzzDispatch(f *testing.F) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Format(time.RFC3339)
	for _, s := range []struct{ suffix, payload string }{
		{mqttmsg.Connection, `{"version":1,"state":"ONLINE","timestamp":"` + now + `"}`},
		{mqttmsg.Health, `{"version":1,"thingName":"c","status":"HEALTHY","intervalSeconds":30,"components":[{"name":"a","version":"1","state":"RUNNING"}]}`},
		{mqttmsg.DeploymentStatus, `{"version":1,"deploymentId":"d","taskId":"t","status":"SUCCEEDED","detailedStatus":"SUCCESSFUL"}`},
		{mqttmsg.Hello, `{"version":1,"agentVersion":"1","capabilities":["patch"],"patches":[{"patchId":"p","attempt":1,"state":"running"}]}`},
		{mqttmsg.Deployments, `{"version":1,"deploymentId":"d","templateName":"t"}`},
		{"patches/p/events", `{"version":1}`},
		{mqttmsg.Health, `{"version":1,"status":"HEALTHY","intervalSeconds":-1}`},
		{mqttmsg.Connection, `{"version":1,"state":"MAYBE"}`},
		{mqttmsg.Health, `{"version":"1"}`},
	} {
		f.Add("c", mqttmsg.Topic("c", s.suffix), []byte(s.payload))
	}
	f.Add("c", "ggfleet/things/+/health", []byte(`{}`))
	f.Add("c", "other/topic", []byte(`{}`))
	f.Fuzz(func(t *testing.T, thing, topic string, payload []byte) {
		called := 0
		h := Handlers{
			OnConnection: func(_ context.Context, _ string, m mqttmsg.ConnectionMsg) {
				called++
				if m.State != mqttmsg.Online && m.State != mqttmsg.Offline {
					t.Fatalf("connection state %q reached the handler", m.State)
				}
			},
			OnHealth: func(_ context.Context, _ string, m mqttmsg.HealthMsg) {
				called++
				if m.IntervalSeconds < 0 || m.IntervalSeconds > 86400 || (m.Status != mqttmsg.Healthy && m.Status != mqttmsg.Unhealthy) {
					t.Fatalf("invalid health %+v reached the handler", m)
				}
			},
			OnDeploymentStatus: func(_ context.Context, _ string, m mqttmsg.DeploymentStatusMsg) {
				called++
				if m.DeploymentID == "" {
					t.Fatalf("deployment status without a deployment id reached the handler: %+v", m)
				}
			},
			OnHello:   func(context.Context, string, mqttmsg.HelloMsg) { called++ },
			OnMessage: func(context.Context, string, string, []byte) { called++ },
		}
		d := NewDispatcher(h, slog.New(slog.DiscardHandler), time.Second)
		ok := d.Dispatch(context.Background(), thing, topic, payload)
		if !ok && called > 0 {
			t.Fatalf("Dispatch(%q, %q) dropped the message but called a handler", thing, topic)
		}
		if _, _, valid := mqttmsg.ParseTopic(topic); !valid && called > 0 {
			t.Fatalf("a handler was called for %q, not a ggfleet topic", topic)
		}
		if called > 1 {
			t.Fatalf("%d handlers called for one message", called)
		}
	})
}
