package fleet_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/fleet"
	"github.com/ggfleet/ggfleet/broker/health"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// TestCoresAgreeWithDeviceBlock checks that the fleet list shows each core
// as its device block (GET /cores/{name}, health.Service.Device) does, as
// the clock moves past each core's lease: status, connectivity, last seen,
// last report and nucleus version.
func TestCoresAgreeWithDeviceBlock(t *testing.T) {
	ctx := context.Background()
	db := sqlstoretest.Open(t)
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	now := start
	clock := func() time.Time { return now }
	hs := health.New(health.Config{Store: db.Health(), Now: clock})
	fs := fleet.New(fleet.Config{Store: db.Fleet(), Now: clock})

	if err := db.Cores().EnsureCores(ctx, []string{"fast", "slow", "quiet", "gone", "never"}, start); err != nil {
		t.Fatal(err)
	}
	for _, r := range []health.Report{
		{Core: "fast", Status: mqttmsg.Healthy, NucleusVersion: "2.12.0", IntervalSeconds: 5, ReportedAt: start, ReceivedAt: start},
		{Core: "slow", Status: mqttmsg.Unhealthy, NucleusVersion: "2.11.0", ReportedAt: start, ReceivedAt: start},
		{Core: "gone", Status: mqttmsg.Healthy, IntervalSeconds: 60, ReportedAt: start, ReceivedAt: start},
	} {
		if _, _, err := db.Health().PutReport(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Health().SetConnection(ctx, "quiet", mqttmsg.Online, start); err != nil {
		t.Fatal(err)
	}
	if err := db.Health().SetConnection(ctx, "gone", mqttmsg.Offline, start); err != nil {
		t.Fatal(err)
	}

	for _, after := range []time.Duration{0, 15 * time.Second, 16 * time.Second, 90 * time.Second, 91 * time.Second} {
		now = start.Add(after)
		list, err := fs.Cores(ctx, fleet.CoreQuery{Count: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Cores) != 5 || list.Matching != 5 {
			t.Fatalf("at +%v: %d cores, matching %d; want 5", after, len(list.Cores), list.Matching)
		}
		for _, c := range list.Cores {
			dev, _, err := hs.Device(ctx, c.Name)
			if err != nil {
				t.Fatal(err)
			}
			got := []any{c.Status, c.Connectivity, str(c.LastSeenAt), str(c.LastStatusUpdateTimestamp), c.CoreVersion}
			want := []any{dev.Status, dev.Connectivity, str(dev.LastSeenAt), str(dev.LastStatusUpdateTimestamp), dev.CoreVersion}
			for i := range got {
				if got[i] != want[i] {
					t.Errorf("at +%v, core %s: list says %v, device block %v", after, c.Name, got, want)
					break
				}
			}
		}
	}
	// The lease boundaries above are exercised, not skipped.
	now = start.Add(15 * time.Second)
	if l, _ := fs.Cores(ctx, fleet.CoreQuery{Connectivity: mqttmsg.Online, Count: 10}); l.Matching != 3 {
		t.Errorf("at +15s: %d online, want fast, slow and quiet", l.Matching)
	}
	now = start.Add(91 * time.Second)
	if l, _ := fs.Cores(ctx, fleet.CoreQuery{Connectivity: mqttmsg.Online, Count: 10}); l.Matching != 0 {
		t.Errorf("at +91s: %d online, want none", l.Matching)
	}
}

// str is a wire time as text, "" when absent.
func str(t *cdf.Time) string {
	if t == nil {
		return ""
	}
	return t.String()
}

// TestCoresRefusesBadFilters checks that a filter that cannot match is
// refused with a message that says what would.
func TestCoresRefusesBadFilters(t *testing.T) {
	fs := fleet.New(fleet.Config{Store: sqlstoretest.Open(t).Fleet()})
	tests := []struct {
		q    fleet.CoreQuery
		want string
	}{
		{fleet.CoreQuery{Status: "healthy"}, `status must be one of HEALTHY, UNHEALTHY, UNKNOWN, got "healthy"`},
		{fleet.CoreQuery{Connectivity: "UP"}, `connectivity must be ONLINE or OFFLINE, got "UP"`},
		{fleet.CoreQuery{TemplateVersion: 2}, `templateVersion needs templateName`},
		{fleet.CoreQuery{TemplateName: "T", TemplateVersion: -1}, `templateVersion must be a positive whole number`},
		{fleet.CoreQuery{NameContains: strings.Repeat("x", 129)}, `nameContains must be at most 128 characters`},
	}
	for _, tt := range tests {
		tt.q.Count = 10
		_, err := fs.Cores(context.Background(), tt.q)
		if !errkind.Is(err, errkind.Invalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: err %v, want Invalid %q", tt.q, err, tt.want)
		}
	}
	if _, err := fs.Cores(context.Background(), fleet.CoreQuery{Status: "UNKNOWN", Connectivity: "OFFLINE", Count: 1}); err != nil {
		t.Errorf("a valid query: %v", err)
	}
}

// BenchmarkCores measures one page of the fleet's core list on SQLite with
// 10,000 cores, 5,000 of them reporting: unfiltered, and filtered to the
// OFFLINE ones (the dashboard's and `ggfleet fleet cores`' requests), with
// the count of all matching cores each time.
//
//	go test ./broker/fleet -run '^$' -bench Cores
func BenchmarkCores(b *testing.B) {
	ctx := context.Background()
	db := sqlstoretest.Open(b)
	now := time.Now().UTC()
	names := make([]string, 10000)
	for i := range names {
		names[i] = fmt.Sprintf("core-%05d", i)
	}
	if err := db.Cores().EnsureCores(ctx, names, now); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < len(names); i += 2 {
		r := health.Report{Core: names[i], Status: mqttmsg.Healthy, IntervalSeconds: 30, ReportedAt: now, ReceivedAt: now}
		if _, _, err := db.Health().PutReport(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
	fs := fleet.New(fleet.Config{Store: db.Fleet()})
	for _, bb := range []struct {
		name string
		q    fleet.CoreQuery
	}{
		{"all", fleet.CoreQuery{Count: 50}},
		{"offline", fleet.CoreQuery{Connectivity: mqttmsg.Offline, Count: 50}},
		{"name", fleet.CoreQuery{NameContains: "7", Count: 50}},
	} {
		b.Run(bb.name, func(b *testing.B) {
			for b.Loop() {
				l, err := fs.Cores(ctx, bb.q)
				if err != nil || len(l.Cores) != 50 {
					b.Fatalf("%d cores, %v", len(l.Cores), err)
				}
			}
		})
	}
}
