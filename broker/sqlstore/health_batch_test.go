package sqlstore

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/health"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// batchReport is a report of core at t0+at seconds with status, received a
// second later.
func batchReport(t0 time.Time, core string, at int, status string) health.Report {
	return health.Report{
		Core: core, Status: status, NucleusState: "RUNNING", NucleusVersion: "2.12.0",
		Components:           []mqttmsg.ComponentState{{Name: "a", Version: "1", State: "RUNNING"}},
		EffectiveDeployments: []mqttmsg.EffectiveDeployment{{DeploymentID: "d", TemplateName: "T", TemplateVersion: 1, Status: "SUCCEEDED"}},
		Platform:             "linux", Architecture: "arm64", AgentVersion: "0.1.0", UptimeSeconds: int64(at), IntervalSeconds: 30,
		System:              mqttmsg.SystemStats{CPUPercent: 1.5, MemUsedBytes: 2, MemTotalBytes: 3, DiskFreeBytes: 4},
		CertificateNotAfter: t0.AddDate(1, 0, 0),
		ReportedAt:          t0.Add(time.Duration(at) * time.Second), ReceivedAt: t0.Add(time.Duration(at+1) * time.Second),
	}
}

func TestPutReports(t *testing.T) {
	t0 := time.UnixMilli(1700000000123).UTC()
	rep := func(core string, at int, status string) health.Report { return batchReport(t0, core, at, status) }
	badStats := rep("c2", 50, "HEALTHY")
	badStats.System.CPUPercent = math.NaN() // JSON cannot encode it

	type want struct {
		stored, sync bool
		err          errkind.Kind // 0: no error
		anyErr       bool         // an error of no particular kind
	}
	type row struct {
		status       string
		reportedAt   int // seconds after t0
		lastSeenAt   int
		registrySync bool
	}
	tests := []struct {
		name     string
		before   []health.Report // stored one by one by PutReport first
		synced   []health.Report // then confirmed with MarkRegistrySynced
		batch    []health.Report
		want     []want
		wantRows map[string]row // after the batch
	}{
		{
			name:     "empty batch",
			batch:    nil,
			want:     []want{},
			wantRows: map[string]row{},
		},
		{
			name:  "first reports of several cores",
			batch: []health.Report{rep("c1", 10, "HEALTHY"), rep("c2", 10, "UNHEALTHY")},
			want:  []want{{stored: true, sync: true}, {stored: true, sync: true}},
			wantRows: map[string]row{
				"c1": {status: "HEALTHY", reportedAt: 10, lastSeenAt: 11},
				"c2": {status: "UNHEALTHY", reportedAt: 10, lastSeenAt: 11},
			},
		},
		{
			name:   "unknown core fails alone",
			before: []health.Report{rep("c1", 0, "HEALTHY")},
			batch:  []health.Report{rep("ghost", 10, "HEALTHY"), rep("c1", 10, "HEALTHY"), rep("ghost", 20, "HEALTHY")},
			want:   []want{{err: errkind.NotFound}, {stored: true, sync: true}, {err: errkind.NotFound}},
			wantRows: map[string]row{
				"c1": {status: "HEALTHY", reportedAt: 10, lastSeenAt: 11},
			},
		},
		{
			name:   "older than the stored report",
			before: []health.Report{rep("c1", 100, "UNHEALTHY")},
			batch:  []health.Report{rep("c1", 10, "HEALTHY"), rep("c2", 10, "HEALTHY")},
			want:   []want{{}, {stored: true, sync: true}},
			wantRows: map[string]row{
				"c1": {status: "UNHEALTHY", reportedAt: 100, lastSeenAt: 101},
				"c2": {status: "HEALTHY", reportedAt: 10, lastSeenAt: 11},
			},
		},
		{
			name:   "two reports of one core in order: the newer wins",
			before: []health.Report{rep("c1", 0, "HEALTHY")},
			batch:  []health.Report{rep("c1", 10, "HEALTHY"), rep("c1", 20, "UNHEALTHY")},
			want:   []want{{}, {stored: true, sync: true}},
			wantRows: map[string]row{
				"c1": {status: "UNHEALTHY", reportedAt: 20, lastSeenAt: 21},
			},
		},
		{
			name:  "two reports of one core out of order: the newer wins",
			batch: []health.Report{rep("c1", 20, "UNHEALTHY"), rep("c1", 10, "HEALTHY"), rep("c2", 5, "HEALTHY")},
			want:  []want{{stored: true, sync: true}, {}, {stored: true, sync: true}},
			wantRows: map[string]row{
				"c1": {status: "UNHEALTHY", reportedAt: 20, lastSeenAt: 21},
				"c2": {status: "HEALTHY", reportedAt: 5, lastSeenAt: 6},
			},
		},
		{
			name:   "two reports older than the stored one",
			before: []health.Report{rep("c1", 100, "HEALTHY")},
			batch:  []health.Report{rep("c1", 20, "UNHEALTHY"), rep("c1", 10, "UNHEALTHY")},
			want:   []want{{}, {}},
			wantRows: map[string]row{
				"c1": {status: "HEALTHY", reportedAt: 100, lastSeenAt: 101},
			},
		},
		{
			name:  "same timestamp twice: the later one is stored",
			batch: []health.Report{rep("c1", 10, "HEALTHY"), rep("c1", 10, "UNHEALTHY")},
			want:  []want{{}, {stored: true, sync: true}},
			wantRows: map[string]row{
				"c1": {status: "UNHEALTHY", reportedAt: 10, lastSeenAt: 11},
			},
		},
		{
			name:   "registry sync kept while the status is unchanged",
			before: []health.Report{rep("c1", 0, "HEALTHY"), rep("c2", 0, "HEALTHY")},
			synced: []health.Report{rep("c1", 0, "HEALTHY"), rep("c2", 0, "HEALTHY")},
			batch:  []health.Report{rep("c1", 10, "HEALTHY"), rep("c2", 10, "UNHEALTHY")},
			want:   []want{{stored: true}, {stored: true, sync: true}},
			wantRows: map[string]row{
				"c1": {status: "HEALTHY", reportedAt: 10, lastSeenAt: 11, registrySync: true},
				"c2": {status: "UNHEALTHY", reportedAt: 10, lastSeenAt: 11},
			},
		},
		{
			name:  "a report that cannot be encoded fails alone",
			batch: []health.Report{rep("c1", 10, "HEALTHY"), badStats},
			want:  []want{{stored: true, sync: true}, {anyErr: true}},
			wantRows: map[string]row{
				"c1": {status: "HEALTHY", reportedAt: 10, lastSeenAt: 11},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			db := newTestDB(t)
			s := db.Health()
			if err := db.Cores().EnsureCores(ctx, []string{"c1", "c2"}, t0); err != nil {
				t.Fatal(err)
			}
			for _, r := range tt.before {
				if _, _, err := s.PutReport(ctx, r); err != nil {
					t.Fatal(err)
				}
			}
			for _, r := range tt.synced {
				if err := s.MarkRegistrySynced(ctx, r); err != nil {
					t.Fatal(err)
				}
			}
			got, err := s.PutReports(ctx, tt.batch)
			if err != nil {
				t.Fatalf("PutReports: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d results for %d reports", len(got), len(tt.batch))
			}
			for i, w := range tt.want {
				g := got[i]
				switch {
				case w.err != 0 && !errkind.Is(g.Err, w.err):
					t.Errorf("report %d: err %v, want kind %v", i, g.Err, w.err)
				case w.anyErr && g.Err == nil:
					t.Errorf("report %d: no error, want one", i)
				case w.err == 0 && !w.anyErr && g.Err != nil:
					t.Errorf("report %d: %v", i, g.Err)
				}
				if g.Stored != w.stored || g.Sync != w.sync {
					t.Errorf("report %d: stored=%v sync=%v, want %v %v", i, g.Stored, g.Sync, w.stored, w.sync)
				}
			}
			for _, core := range []string{"c1", "c2"} {
				rec, err := s.GetHealth(ctx, core)
				w, ok := tt.wantRows[core]
				if !ok {
					if !errkind.Is(err, errkind.NotFound) {
						t.Errorf("%s: row %+v, %v; want none", core, rec, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", core, err)
				}
				gotRow := row{status: rec.Status, reportedAt: int(rec.ReportedAt.Sub(t0) / time.Second), lastSeenAt: int(rec.LastSeenAt.Sub(t0) / time.Second)}
				// registry_synced shows in the next report's sync flag.
				next := rep(core, 1000, rec.Status)
				_, sync, err := s.PutReport(ctx, next)
				if err != nil {
					t.Fatal(err)
				}
				gotRow.registrySync = !sync
				if gotRow != w || rec.Connection != "ONLINE" {
					t.Errorf("%s: row %+v (%s), want %+v (ONLINE)", core, gotRow, rec.Connection, w)
				}
			}
		})
	}
}

// TestPutReportsMatchesPutReport holds the batch statement to PutReport's:
// the same reports (one per core per batch) stored either way leave the
// same rows and give the same results.
func TestPutReportsMatchesPutReport(t *testing.T) {
	ctx := context.Background()
	t0 := time.UnixMilli(1700000000123).UTC()
	cores := []string{"c1", "c2", "c3", "c4"}
	one, batch := newTestDB(t), openTestDB(t, t.TempDir()+"/batch.db")
	for _, db := range []*DB{one, batch} {
		if err := db.Cores().EnsureCores(ctx, cores, t0); err != nil {
			t.Fatal(err)
		}
	}
	statuses := []string{"HEALTHY", "UNHEALTHY"}
	rounds := [][]int{ // per round, each core's report time (-1: none)
		{10, 10, -1, 10},
		{20, 5, 30, 10},
		{15, 40, 30, 50},
		{60, 40, 20, 70},
	}
	for n, round := range rounds {
		var rs []health.Report
		for i, at := range round {
			if at < 0 {
				continue
			}
			r := batchReport(t0, cores[i], at, statuses[(n+i)%2])
			r.ReceivedAt = t0.Add(time.Duration(100*n+i) * time.Second) // last seen moves on either way
			rs = append(rs, r)
		}
		if n == 2 {
			for _, r := range rs[:2] {
				for _, db := range []*DB{one, batch} {
					if err := db.Health().MarkRegistrySynced(ctx, r); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		got, err := batch.Health().PutReports(ctx, rs)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range rs {
			stored, sync, err := one.Health().PutReport(ctx, r)
			if want := (health.PutResult{Stored: stored, Sync: sync, Err: err}); !reflect.DeepEqual(got[i], want) {
				t.Errorf("round %d, %s: PutReports %+v, PutReport %+v", n, r.Core, got[i], want)
			}
		}
		for _, c := range cores {
			a, errA := one.Health().GetHealth(ctx, c)
			b, errB := batch.Health().GetHealth(ctx, c)
			if !reflect.DeepEqual(a, b) || (errA == nil) != (errB == nil) {
				t.Errorf("round %d, %s:\nPutReport  %+v %v\nPutReports %+v %v", n, c, a, errA, b, errB)
			}
		}
	}
}

// TestPutReportsLarge stores more reports than one statement takes, in one
// transaction.
func TestPutReportsLarge(t *testing.T) {
	ctx := context.Background()
	t0 := time.UnixMilli(1700000000123).UTC()
	db := newTestDB(t)
	const n = 2*batchRows + 7
	cores := make([]string, n)
	rs := make([]health.Report, 0, n+1)
	for i := range cores {
		cores[i] = fmt.Sprintf("core-%04d", i)
		rs = append(rs, batchReport(t0, cores[i], i, "HEALTHY"))
	}
	rs = append(rs, batchReport(t0, "ghost", 1, "HEALTHY"))
	if err := db.Cores().EnsureCores(ctx, cores, t0); err != nil {
		t.Fatal(err)
	}
	got, err := db.Health().PutReports(ctx, rs)
	if err != nil {
		t.Fatal(err)
	}
	for i, res := range got[:n] {
		if !res.Stored || !res.Sync || res.Err != nil {
			t.Fatalf("report %d: %+v", i, res)
		}
	}
	if !errkind.Is(got[n].Err, errkind.NotFound) {
		t.Errorf("ghost: %+v, want NotFound", got[n])
	}
	for _, i := range []int{0, batchRows, n - 1} {
		rec, err := db.Health().GetHealth(ctx, cores[i])
		if err != nil || !rec.ReportedAt.Equal(rs[i].ReportedAt) {
			t.Errorf("%s: %+v, %v", cores[i], rec.ReportedAt, err)
		}
	}
}

// TestTouchCores checks the group commit of signs of life: every core
// given (more than one statement's worth) is ONLINE and seen at its time,
// last-seen never moves back, a core marked OFFLINE comes back ONLINE, and
// names that are not cores are returned with no row written.
func TestTouchCores(t *testing.T) {
	ctx := context.Background()
	t0 := time.UnixMilli(1700000000123).UTC()
	db := newTestDB(t)
	s := db.Health()
	const n = batchRows + 7
	cores := make([]string, n)
	seen := make(map[string]time.Time, n+1)
	for i := range cores {
		cores[i] = fmt.Sprintf("core-%04d", i)
		seen[cores[i]] = t0.Add(time.Duration(i) * time.Millisecond)
	}
	if err := db.Cores().EnsureCores(ctx, cores, t0); err != nil {
		t.Fatal(err)
	}
	later := t0.Add(time.Hour)
	if err := s.SetConnection(ctx, cores[0], mqttmsg.Offline, later); err != nil {
		t.Fatal(err)
	}
	seen["ghost"] = t0
	missing, err := s.TouchCores(ctx, seen)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) != 1 || !missing["ghost"] {
		t.Errorf("missing = %v, want only ghost", missing)
	}
	for i, core := range cores {
		want := seen[core]
		if i == 0 {
			want = later // seen later already: not moved back
		}
		rec, err := s.GetHealth(ctx, core)
		if err != nil || rec.Connection != mqttmsg.Online || !rec.LastSeenAt.Equal(want) {
			t.Fatalf("%s after TouchCores: %s seen %v, %v; want ONLINE seen %v", core, rec.Connection, rec.LastSeenAt, err, want)
		}
	}
	if _, err := s.GetHealth(ctx, "ghost"); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("GetHealth(ghost) = %v, want NotFound (no row)", err)
	}
}
