package health_test

import (
	"context"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ggfleet/ggfleet/agent/health"
	"github.com/ggfleet/ggfleet/agent/nucleus"
	"github.com/ggfleet/ggfleet/internal/version"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// synctestEpoch is where the fake clock of testing/synctest starts; it
// stands in for the build time so the clock check passes inside bubbles.
var synctestEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func simulated(t *testing.T) *nucleus.Simulated {
	t.Helper()
	rt, err := nucleus.NewSimulated(t.TempDir(), nucleus.SimOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func deploy(t *testing.T, rt nucleus.Runtime, kv ...string) {
	t.Helper()
	d := mqttmsg.DeploymentMsg{Version: 1, DeploymentID: "d", TemplateName: "t", Components: map[string]mqttmsg.ComponentSpec{}}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Components[kv[i]] = mqttmsg.ComponentSpec{ComponentVersion: kv[i+1]}
	}
	if oc, err := rt.Apply(context.Background(), d); err != nil || oc.Status != mqttmsg.StatusSucceeded {
		t.Fatalf("Apply = %+v, %v", oc, err)
	}
}

func TestReportContents(t *testing.T) {
	rt := simulated(t)
	deploy(t, rt, "com.example.A", "1.0.0")
	now := t0
	deps := []mqttmsg.EffectiveDeployment{{DeploymentID: "d-1", TemplateName: "edge", TemplateVersion: 2, Status: mqttmsg.StatusSucceeded}}
	r := health.New(health.Config{
		ThingName:    "core-1",
		Runtime:      rt,
		Deployments:  func() []mqttmsg.EffectiveDeployment { return deps },
		CertNotAfter: t0.AddDate(1, 0, 0),
		Interval:     30 * time.Second,
		Now:          func() time.Time { return now },
		StatFS:       t.TempDir(),
		ProcDir:      filepath.Join("testdata", "proc"),
	})
	now = t0.Add(90 * time.Second)
	m, err := r.Report(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != 1 || m.ThingName != "core-1" || !m.Timestamp.Equal(now) || m.IntervalSeconds != 30 {
		t.Errorf("header = %+v", m)
	}
	if m.Status != mqttmsg.Healthy {
		t.Errorf("Status = %s, reasons %v", m.Status, r.Last().Reasons)
	}
	if m.Nucleus != (mqttmsg.NucleusState{State: "RUNNING", Version: nucleus.SimulatedVersion}) {
		t.Errorf("Nucleus = %+v", m.Nucleus)
	}
	if want := []mqttmsg.ComponentState{{Name: "com.example.A", Version: "1.0.0", State: "RUNNING"}}; !slices.Equal(m.Components, want) {
		t.Errorf("Components = %+v", m.Components)
	}
	if !slices.Equal(m.EffectiveDeployments, deps) {
		t.Errorf("EffectiveDeployments = %+v", m.EffectiveDeployments)
	}
	if m.Platform != runtime.GOOS || m.Architecture != runtime.GOARCH || m.AgentVersion != version.Version {
		t.Errorf("platform = %s/%s %s", m.Platform, m.Architecture, m.AgentVersion)
	}
	if m.UptimeSeconds != 90 {
		t.Errorf("UptimeSeconds = %d, want 90", m.UptimeSeconds)
	}
	if !m.CertificateNotAfter.Equal(t0.AddDate(1, 0, 0)) {
		t.Errorf("CertificateNotAfter = %v", m.CertificateNotAfter)
	}
	if m.System.MemTotalBytes != 1918300*1024 || m.System.MemUsedBytes != (1918300-1024000)*1024 {
		t.Errorf("memory = %+v", m.System)
	}
	if m.System.CPUPercent < 60 || m.System.CPUPercent > 61 {
		t.Errorf("CPUPercent = %v, want the since-boot 60.36", m.System.CPUPercent)
	}
	if runtime.GOOS == "linux" && m.System.DiskFreeBytes == 0 {
		t.Error("DiskFreeBytes = 0")
	}
	if got := r.Last().HostUptimeSeconds; got != 350735 {
		t.Errorf("HostUptimeSeconds = %d", got)
	}
	// Decodes as the broker will.
	if _, err := mqttmsg.Decode[mqttmsg.HealthMsg](mustJSON(t, m)); err != nil {
		t.Errorf("the broker would reject the report: %v", err)
	}
}

func TestReportWithoutComponentsOrDeployments(t *testing.T) {
	r := health.New(health.Config{ThingName: "c", Runtime: simulated(t), ProcDir: t.TempDir(), StatFS: t.TempDir(),
		Now: func() time.Time { return t0 }})
	m, err := r.Report(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b := string(mustJSON(t, m))
	if !strings.Contains(b, `"components":[]`) || !strings.Contains(b, `"effectiveDeployments":[]`) {
		t.Errorf("empty lists must be [] not null: %s", b)
	}
	if m.System.MemTotalBytes != 0 || m.Status != mqttmsg.Healthy {
		t.Errorf("missing /proc files should leave zeros and not change health: %+v", m)
	}
}

func TestUnhealthyRules(t *testing.T) {
	running := mqttmsg.NucleusState{State: "RUNNING", Version: "2.12.0"}
	ok := []mqttmsg.ComponentState{{Name: "a", Version: "1", State: "RUNNING"}, {Name: "n", Version: "2", State: "FINISHED"}}
	base := health.Checks{Now: t0, Nucleus: running, Components: ok,
		CertNotBefore: t0.AddDate(0, -1, 0), CertNotAfter: t0.AddDate(1, 0, 0), BuildTime: health.EarliestPlausibleTime}
	tests := []struct {
		name   string
		change func(c *health.Checks)
		want   string // substring of the one reason; "" = healthy
	}{
		{"healthy", func(c *health.Checks) {}, ""},
		{"nucleus stopped", func(c *health.Checks) { c.Nucleus.State = "STOPPED" }, "nucleus is STOPPED"},
		{"nucleus unknown", func(c *health.Checks) { c.Nucleus = mqttmsg.NucleusState{State: "UNKNOWN"} }, "nucleus is UNKNOWN"},
		{"component broken", func(c *health.Checks) {
			c.Components = append(slices.Clone(ok), mqttmsg.ComponentState{Name: "b", State: "BROKEN"})
		}, "component b is BROKEN"},
		{"component errored", func(c *health.Checks) {
			c.Components = []mqttmsg.ComponentState{{Name: "e", State: "ERRORED"}}
		}, "component e is ERRORED"},
		{"component starting is fine", func(c *health.Checks) {
			c.Components = []mqttmsg.ComponentState{{Name: "s", State: "STARTING"}}
		}, ""},
		{"cert expires in 6 days", func(c *health.Checks) { c.CertNotAfter = t0.Add(6 * 24 * time.Hour) }, "certificate expires"},
		{"cert expired", func(c *health.Checks) { c.CertNotAfter = t0.Add(-time.Hour) }, "certificate expires"},
		{"cert expires in 8 days", func(c *health.Checks) { c.CertNotAfter = t0.Add(8 * 24 * time.Hour) }, ""},
		{"no certificate known", func(c *health.Checks) { c.CertNotAfter, c.CertNotBefore = time.Time{}, time.Time{} }, ""},
		{"clock before cert", func(c *health.Checks) { c.Now = c.CertNotBefore.Add(-time.Minute) }, "before the device certificate"},
		{"clock in 1970", func(c *health.Checks) {
			c.Now = time.Unix(0, 0)
			c.CertNotBefore = time.Time{}
		}, "before the agent was built"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.change(&c)
			got := health.Unhealthy(c)
			if tt.want == "" {
				if len(got) != 0 {
					t.Fatalf("Unhealthy = %q, want healthy", got)
				}
				return
			}
			if len(got) != 1 || !strings.Contains(got[0], tt.want) {
				t.Fatalf("Unhealthy = %q, want one reason containing %q", got, tt.want)
			}
		})
	}
}

// publisher records published reports.
type publisher struct {
	mu   sync.Mutex
	msgs []mqttmsg.HealthMsg
}

func (p *publisher) publish(_ context.Context, m mqttmsg.HealthMsg) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs = append(p.msgs, m)
	return nil
}

func (p *publisher) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.msgs)
}

func (p *publisher) last() mqttmsg.HealthMsg {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.msgs[len(p.msgs)-1]
}

func TestRunPublishesPeriodicallyAndOnChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := simulated(t)
		pub := &publisher{}
		r := health.New(health.Config{
			ThingName: "core-1", Runtime: rt, Publish: pub.publish,
			Interval: 30 * time.Second, PollInterval: 5 * time.Second,
			StatFS: t.TempDir(), ProcDir: filepath.Join("testdata", "proc"),
			BuildTime: synctestEpoch,
		})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()

		synctest.Wait()
		if pub.count() != 1 {
			t.Fatalf("published %d reports at start, want 1", pub.count())
		}
		time.Sleep(12 * time.Second) // two polls, nothing changed
		synctest.Wait()
		if pub.count() != 1 {
			t.Fatalf("published %d reports without a change, want 1", pub.count())
		}

		deploy(t, rt, "com.example.A", "1.0.0") // a component appears
		time.Sleep(3 * time.Second)             // the next poll sees it
		synctest.Wait()
		if pub.count() != 2 {
			t.Fatalf("published %d reports after a change, want 2", pub.count())
		}
		if c := pub.last().Components; len(c) != 1 || c[0].Name != "com.example.A" {
			t.Fatalf("change report components = %+v", c)
		}

		time.Sleep(29 * time.Second) // 30 s after the change report
		synctest.Wait()
		if pub.count() != 2 {
			t.Fatalf("published %d reports before the interval, want 2", pub.count())
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if pub.count() != 3 {
			t.Fatalf("published %d reports after the interval, want 3", pub.count())
		}

		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// failingNucleus turns the nucleus off on demand.
type failingNucleus struct {
	nucleus.Runtime
	mu   sync.Mutex
	down bool
}

func (f *failingNucleus) Nucleus(ctx context.Context) (mqttmsg.NucleusState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return mqttmsg.NucleusState{State: "STOPPED"}, nil
	}
	return f.Runtime.Nucleus(ctx)
}

func TestRunPublishesStatusChangeAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := &failingNucleus{Runtime: simulated(t)}
		pub := &publisher{}
		r := health.New(health.Config{ThingName: "core-1", Runtime: rt, Publish: pub.publish,
			Interval: time.Hour, PollInterval: 5 * time.Second, StatFS: t.TempDir(), ProcDir: t.TempDir(),
			BuildTime: synctestEpoch})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go r.Run(ctx)
		synctest.Wait()
		rt.mu.Lock()
		rt.down = true
		rt.mu.Unlock()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if pub.count() != 2 || pub.last().Status != mqttmsg.Unhealthy {
			t.Fatalf("after the nucleus stopped: %d reports, last %s; want an UNHEALTHY one at once", pub.count(), pub.last().Status)
		}
		if reasons := r.Last().Reasons; len(reasons) != 1 || !strings.Contains(reasons[0], "STOPPED") {
			t.Fatalf("reasons = %q", reasons)
		}
	})
}
