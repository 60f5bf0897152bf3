package sqlstore

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/health"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

func TestHealthStore(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	s := db.Health()
	t0 := time.UnixMilli(1700000000123).UTC()
	if err := db.Cores().EnsureCores(ctx, []string{"c1", "c2"}, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetHealth(ctx, "c1"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("GetHealth before any message = %v, want NotFound", err)
	}
	r := health.Report{
		Core: "c1", Status: "HEALTHY", NucleusState: "RUNNING", NucleusVersion: "2.12.0",
		Components:           []mqttmsg.ComponentState{{Name: "a", Version: "1", State: "RUNNING"}},
		EffectiveDeployments: []mqttmsg.EffectiveDeployment{{DeploymentID: "d", TemplateName: "T", TemplateVersion: 1, Status: "SUCCEEDED"}},
		Platform:             "linux", Architecture: "arm64", AgentVersion: "0.1.0", UptimeSeconds: 5, IntervalSeconds: 30,
		System:              mqttmsg.SystemStats{CPUPercent: 1.5, MemUsedBytes: 2, MemTotalBytes: 3, DiskFreeBytes: 4},
		CertificateNotAfter: t0.AddDate(1, 0, 0), ReportedAt: t0, ReceivedAt: t0.Add(time.Second),
	}
	put := func(r health.Report) (bool, bool) {
		t.Helper()
		stored, sync, err := s.PutReport(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		return stored, sync
	}
	if stored, sync := put(r); !stored || !sync {
		t.Fatalf("first report: stored=%v sync=%v, want true true", stored, sync)
	}
	got, err := s.GetHealth(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	want := health.Record{Report: r, Connection: "ONLINE", LastSeenAt: r.ReceivedAt}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("GetHealth\n got %+v\nwant %+v", got, want)
	}

	// Registry sync: kept while the registry fields stay the same.
	if err := s.MarkRegistrySynced(ctx, r); err != nil {
		t.Fatal(err)
	}
	r2 := r
	r2.ReportedAt, r2.ReceivedAt, r2.UptimeSeconds = t0.Add(30*time.Second), t0.Add(31*time.Second), 35
	if stored, sync := put(r2); !stored || sync {
		t.Fatalf("unchanged status: stored=%v sync=%v, want true false", stored, sync)
	}
	r3 := r2
	r3.Status, r3.ReportedAt, r3.ReceivedAt = "UNHEALTHY", t0.Add(60*time.Second), t0.Add(61*time.Second)
	if stored, sync := put(r3); !stored || !sync {
		t.Fatalf("changed status: stored=%v sync=%v, want true true", stored, sync)
	}
	// Confirming an outdated status does not mark the row synced.
	if err := s.MarkRegistrySynced(ctx, r2); err != nil {
		t.Fatal(err)
	}
	r4 := r3
	r4.ReportedAt, r4.ReceivedAt = t0.Add(90*time.Second), t0.Add(91*time.Second)
	if _, sync := put(r4); !sync {
		t.Fatal("row marked synced by an outdated confirmation")
	}

	// An older report changes nothing.
	old := r
	old.Status, old.ReceivedAt = "UNHEALTHY", t0.Add(2*time.Minute)
	if stored, _ := put(old); stored {
		t.Fatal("older report stored")
	}
	if got, _ := s.GetHealth(ctx, "c1"); !got.ReportedAt.Equal(r4.ReportedAt) || !got.LastSeenAt.Equal(r4.ReceivedAt) {
		t.Fatalf("after an older report: reported %v seen %v", got.ReportedAt, got.LastSeenAt)
	}

	// Unknown core.
	ghost := r
	ghost.Core = "ghost"
	if _, _, err := s.PutReport(ctx, ghost); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("PutReport(ghost) = %v, want NotFound", err)
	}
	if err := s.SetConnection(ctx, "ghost", "ONLINE", t0); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("SetConnection(ghost) = %v, want NotFound", err)
	}

	// Connection: last-seen only moves forward; OFFLINE keeps it.
	seen := t0.Add(5 * time.Minute)
	for _, c := range []struct {
		state string
		at    time.Time
	}{{"ONLINE", seen}, {"ONLINE", seen.Add(-time.Minute)}, {"OFFLINE", time.Time{}}} {
		if err := s.SetConnection(ctx, "c1", c.state, c.at); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := s.GetHealth(ctx, "c1"); got.Connection != "OFFLINE" || !got.LastSeenAt.Equal(seen) || got.Status != "UNHEALTHY" {
		t.Fatalf("after connection changes: %s seen %v status %s", got.Connection, got.LastSeenAt, got.Status)
	}

	// A connection before any report makes a row without a status; empty lists read back as [].
	if err := s.SetConnection(ctx, "c2", "ONLINE", t0); err != nil {
		t.Fatal(err)
	}
	got2, err := s.GetHealth(ctx, "c2")
	if err != nil || got2.Status != "" || got2.Connection != "ONLINE" || got2.Components == nil || len(got2.Components) != 0 {
		t.Fatalf("connection-only row = %+v, %v", got2, err)
	}
	r5 := r
	r5.Core, r5.Components, r5.EffectiveDeployments = "c2", nil, nil
	if stored, sync := put(r5); !stored || !sync {
		t.Fatalf("first report after a connection: stored=%v sync=%v", stored, sync)
	}

	// Health rows go with their core.
	if err := db.Cores().DeleteCore(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetHealth(ctx, "c1"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("health of a deleted core = %v, want NotFound", err)
	}
}
