package health_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/health"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/provider/local"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// The local provider keeps the registration health reports update.
var _ health.Registry = (*local.Provider)(nil)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

type fakeRegistry struct {
	mu         sync.Mutex // handlers run concurrently in TestConcurrentReports
	statuses   []provider.CoreDevice
	registered []string
	fail       error
}

func (f *fakeRegistry) UpdateCoreStatus(_ context.Context, c provider.CoreDevice) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.statuses = append(f.statuses, c)
	return nil
}

func (f *fakeRegistry) MarkCoreRegistered(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registered = append(f.registered, name)
	return nil
}

type env struct {
	db  *sqlstore.DB
	svc *health.Service
	clk *clock
	reg *fakeRegistry
}

func newEnv(tb testing.TB, cores ...string) *env {
	tb.Helper()
	ctx := context.Background()
	db := sqlstoretest.Open(tb)
	if err := db.Cores().EnsureCores(ctx, cores, t0); err != nil {
		tb.Fatal(err)
	}
	e := &env{db: db, clk: &clock{now: t0}, reg: &fakeRegistry{}}
	e.svc = health.New(health.Config{Store: db.Health(), Registry: e.reg, Now: e.clk.Now})
	return e
}

func report(ts time.Time, status string) mqttmsg.HealthMsg {
	return mqttmsg.HealthMsg{
		Version: 1, ThingName: "core1", Timestamp: ts, IntervalSeconds: 10, Status: status,
		Nucleus: mqttmsg.NucleusState{State: "RUNNING", Version: "2.12.0"},
		Components: []mqttmsg.ComponentState{
			{Name: "aws.greengrass.Nucleus", Version: "2.12.0", State: "RUNNING"},
			{Name: "com.example.App", Version: "1.0.0", State: "RUNNING"},
		},
		EffectiveDeployments: []mqttmsg.EffectiveDeployment{
			{DeploymentID: "dep-1", TemplateName: "IntegrationTest", TemplateVersion: 2, Status: "SUCCEEDED"},
		},
		Platform: "linux", Architecture: "amd64", AgentVersion: "0.1.0", UptimeSeconds: 60,
		System:              mqttmsg.SystemStats{CPUPercent: 3.5, MemUsedBytes: 1 << 20, MemTotalBytes: 1 << 30, DiskFreeBytes: 1 << 32},
		CertificateNotAfter: t0.AddDate(1, 0, 0),
	}
}

func device(t *testing.T, e *env, core string) (cdf.Device, bool) {
	t.Helper()
	d, ok, err := e.svc.Device(context.Background(), core)
	if err != nil {
		t.Fatalf("Device(%s): %v", core, err)
	}
	return d, ok
}

func TestDeviceMapping(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "core1")

	d, ok := device(t, e, "core1")
	want := cdf.Device{
		InstalledComponents: []cdf.InstalledComponent{}, EffectiveDeployments: []cdf.EffectiveDeployment{},
		Status: "UNKNOWN", Connectivity: "OFFLINE",
	}
	if ok || !reflect.DeepEqual(d, want) {
		t.Fatalf("before any message: ok=%v device=%+v, want %+v", ok, d, want)
	}

	e.clk.now = t0.Add(time.Second)
	if err := e.svc.HandleHealth(ctx, "core1", report(t0, mqttmsg.Healthy)); err != nil {
		t.Fatal(err)
	}
	d, ok = device(t, e, "core1")
	seen := cdf.At(t0.Add(time.Second))
	reported := cdf.At(t0)
	want = cdf.Device{
		InstalledComponents: []cdf.InstalledComponent{
			{Name: "aws.greengrass.Nucleus", Version: "2.12.0"}, {Name: "com.example.App", Version: "1.0.0"},
		},
		EffectiveDeployments: []cdf.EffectiveDeployment{
			{DeploymentID: "dep-1", DeploymentName: "IntegrationTest v2", CoreDeviceExecutionStatus: "SUCCEEDED"},
		},
		CoreVersion: "2.12.0", Platform: "linux", Architecture: "amd64", Status: "HEALTHY",
		LastStatusUpdateTimestamp: &reported, Connectivity: "ONLINE", LastSeenAt: &seen,
	}
	if !ok || !reflect.DeepEqual(d, want) {
		t.Fatalf("after a report: ok=%v\n got %+v\nwant %+v", ok, d, want)
	}
}

func TestDeviceLists(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "core1")
	m := report(t0, mqttmsg.Unhealthy)
	m.Components, m.EffectiveDeployments = nil, []mqttmsg.EffectiveDeployment{{DeploymentID: "aws-made", Status: "FAILED"}}
	if err := e.svc.HandleHealth(ctx, "core1", m); err != nil {
		t.Fatal(err)
	}
	d, _ := device(t, e, "core1")
	if d.Status != "UNHEALTHY" || d.InstalledComponents == nil || len(d.InstalledComponents) != 0 {
		t.Errorf("status %q, installedComponents %#v: want UNHEALTHY and []", d.Status, d.InstalledComponents)
	}
	if want := []cdf.EffectiveDeployment{{DeploymentID: "aws-made", CoreDeviceExecutionStatus: "FAILED"}}; !reflect.DeepEqual(d.EffectiveDeployments, want) {
		t.Errorf("effectiveDeployments = %+v, want %+v", d.EffectiveDeployments, want)
	}
}

func TestReportOrder(t *testing.T) {
	tests := []struct {
		name       string
		timestamps []time.Time // in delivery order
		statuses   []string
		wantStatus string
		wantTS     time.Time
	}{
		{"in order", []time.Time{t0, t0.Add(10 * time.Second)}, []string{"HEALTHY", "UNHEALTHY"}, "UNHEALTHY", t0.Add(10 * time.Second)},
		{"out of order", []time.Time{t0.Add(10 * time.Second), t0}, []string{"UNHEALTHY", "HEALTHY"}, "UNHEALTHY", t0.Add(10 * time.Second)},
		{"duplicate", []time.Time{t0, t0}, []string{"HEALTHY", "HEALTHY"}, "HEALTHY", t0},
		{"clock far ahead is taken as received", []time.Time{t0.Add(time.Hour), t0.Add(20 * time.Second)}, []string{"UNHEALTHY", "HEALTHY"}, "HEALTHY", t0.Add(20 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, "core1")
			for i, ts := range tt.timestamps {
				e.clk.now = t0.Add(time.Duration(i+1) * 15 * time.Second)
				if err := e.svc.HandleHealth(ctx, "core1", report(ts, tt.statuses[i])); err != nil {
					t.Fatal(err)
				}
			}
			d, _ := device(t, e, "core1")
			if d.Status != tt.wantStatus || d.LastStatusUpdateTimestamp == nil || !d.LastStatusUpdateTimestamp.Equal(tt.wantTS) {
				t.Errorf("status %q at %v, want %q at %v", d.Status, d.LastStatusUpdateTimestamp, tt.wantStatus, tt.wantTS)
			}
			// Every report, even a stale one, is a sign of life.
			if last := e.clk.now; d.LastSeenAt == nil || !d.LastSeenAt.Equal(last) {
				t.Errorf("lastSeenAt = %v, want %v", d.LastSeenAt, last)
			}
		})
	}
}

func TestConnectivity(t *testing.T) {
	type step struct {
		do         func(ctx context.Context, e *env) error
		at         time.Duration // clock after t0 when the step runs
		readAt     time.Duration // clock when connectivity is read
		wantOnline bool
	}
	hello := func(interval int) func(ctx context.Context, e *env) error {
		return func(ctx context.Context, e *env) error {
			m := report(e.clk.now, mqttmsg.Healthy)
			m.IntervalSeconds = interval
			return e.svc.HandleHealth(ctx, "core1", m)
		}
	}
	conn := func(state string) func(ctx context.Context, e *env) error {
		return func(ctx context.Context, e *env) error {
			return e.svc.HandleConnection(ctx, "core1", mqttmsg.ConnectionMsg{Version: 1, State: state, Timestamp: e.clk.now})
		}
	}
	disconnect := func(ctx context.Context, e *env) error { return e.svc.HandleDisconnect(ctx, "core1") }
	touch := func(ctx context.Context, e *env) error { e.svc.Touch(ctx, "core1"); return nil }
	tests := []struct {
		name  string
		steps []step
	}{
		{"report within lease", []step{{do: hello(10), readAt: 30 * time.Second, wantOnline: true}}},
		{"report lease expired", []step{{do: hello(10), readAt: 31 * time.Second, wantOnline: false}}},
		{"no interval means 30s", []step{{do: hello(0), readAt: 90 * time.Second, wantOnline: true}, {readAt: 91 * time.Second, wantOnline: false}}},
		{"connection only", []step{{do: conn("ONLINE"), readAt: 89 * time.Second, wantOnline: true}, {readAt: 91 * time.Second, wantOnline: false}}},
		{"disconnect is offline at once", []step{{do: hello(10), wantOnline: true}, {do: disconnect, at: time.Second, readAt: time.Second, wantOnline: false}}},
		{"last will", []step{{do: hello(10), wantOnline: true}, {do: conn("OFFLINE"), at: time.Second, readAt: time.Second, wantOnline: false}}},
		{"any message renews the lease", []step{
			{do: hello(10), readAt: 29 * time.Second, wantOnline: true},
			{do: touch, at: 29 * time.Second, readAt: 58 * time.Second, wantOnline: true},
			{readAt: 60 * time.Second, wantOnline: false},
		}},
		{"reconnect after disconnect", []step{
			{do: hello(10), wantOnline: true},
			{do: disconnect, at: time.Second, readAt: time.Second, wantOnline: false},
			{do: conn("ONLINE"), at: 2 * time.Second, readAt: 2 * time.Second, wantOnline: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, "core1")
			for i, s := range tt.steps {
				if s.do != nil {
					e.clk.now = t0.Add(s.at)
					if err := s.do(ctx, e); err != nil {
						t.Fatalf("step %d: %v", i, err)
					}
				}
				e.clk.now = t0.Add(s.readAt)
				d, _ := device(t, e, "core1")
				online, seen := e.svc.Presence(ctx, "core1")
				if online != s.wantOnline || (d.Connectivity == "ONLINE") != s.wantOnline {
					t.Fatalf("step %d at +%v: Presence online=%v, device connectivity %q; want online=%v", i, s.readAt, online, d.Connectivity, s.wantOnline)
				}
				if d.LastSeenAt == nil || !d.LastSeenAt.Equal(seen) {
					t.Fatalf("step %d: lastSeenAt %v, Presence lastSeen %v", i, d.LastSeenAt, seen)
				}
			}
		})
	}
}

func TestUnknownCore(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "core1")
	if err := e.svc.HandleHealth(ctx, "ghost", report(t0, mqttmsg.Healthy)); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("HandleHealth(ghost) = %v, want NotFound", err)
	}
	if err := e.svc.HandleConnection(ctx, "ghost", mqttmsg.ConnectionMsg{Version: 1, State: "ONLINE"}); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("HandleConnection(ghost) = %v, want NotFound", err)
	}
	if err := e.svc.HandleDisconnect(ctx, "ghost"); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("HandleDisconnect(ghost) = %v, want NotFound", err)
	}
	e.svc.Touch(ctx, "ghost")
	if d, ok := device(t, e, "ghost"); ok || d.Status != "UNKNOWN" || d.Connectivity != "OFFLINE" || d.LastSeenAt != nil {
		t.Errorf("Device(ghost) = %+v, %v", d, ok)
	}
	if online, seen := e.svc.Presence(ctx, "ghost"); online || !seen.IsZero() {
		t.Errorf("Presence(ghost) = %v, %v", online, seen)
	}
	if len(e.reg.statuses)+len(e.reg.registered) != 0 {
		t.Errorf("registry called for an unknown core: %+v", e.reg)
	}
	if err := e.svc.HandleConnection(ctx, "core1", mqttmsg.ConnectionMsg{Version: 1, State: "MAYBE"}); !errkind.Is(err, errkind.Invalid) {
		t.Errorf("HandleConnection(MAYBE) = %v, want Invalid", err)
	}
}

func TestThingNameMismatchUsesAuthenticatedName(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "core1", "core2")
	m := report(t0, mqttmsg.Healthy)
	m.ThingName = "core2"
	if err := e.svc.HandleHealth(ctx, "core1", m); err != nil {
		t.Fatal(err)
	}
	if _, ok := device(t, e, "core1"); !ok {
		t.Error("core1 has no report")
	}
	if _, ok := device(t, e, "core2"); ok {
		t.Error("core2 got core1's report")
	}
}

func TestRegistry(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "core1")
	send := func(at time.Duration, status string) error {
		e.clk.now = t0.Add(at)
		return e.svc.HandleHealth(ctx, "core1", report(e.clk.now, status))
	}
	if err := send(0, mqttmsg.Healthy); err != nil {
		t.Fatal(err)
	}
	want := []provider.CoreDevice{{Name: "core1", Status: "HEALTHY", CoreVersion: "2.12.0", Platform: "linux", Architecture: "amd64", LastStatus: t0}}
	if !reflect.DeepEqual(e.reg.statuses, want) {
		t.Fatalf("after first report registry got %+v, want %+v", e.reg.statuses, want)
	}
	// Unchanged status: no registry write.
	if err := send(10*time.Second, mqttmsg.Healthy); err != nil {
		t.Fatal(err)
	}
	if len(e.reg.statuses) != 1 {
		t.Fatalf("unchanged report wrote the registry: %+v", e.reg.statuses)
	}
	// A failing registry fails the call; the next report retries.
	e.reg.fail = errors.New("registry down")
	if err := send(20*time.Second, mqttmsg.Unhealthy); err == nil {
		t.Fatal("HandleHealth hid the registry failure")
	}
	e.reg.fail = nil
	if err := send(30*time.Second, mqttmsg.Unhealthy); err != nil {
		t.Fatal(err)
	}
	if len(e.reg.statuses) != 2 || e.reg.statuses[1].Status != "UNHEALTHY" {
		t.Fatalf("registry after change = %+v", e.reg.statuses)
	}
	if err := e.svc.HandleConnection(ctx, "core1", mqttmsg.ConnectionMsg{Version: 1, State: "ONLINE"}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(e.reg.registered, []string{"core1"}) {
		t.Errorf("MarkCoreRegistered calls = %v", e.reg.registered)
	}
}

func TestLocalProviderRegistration(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "core1")
	p, err := local.New(local.Config{Store: e.db.Registry(), ArtifactsDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	svc := health.New(health.Config{Store: e.db.Health(), Registry: p, Now: e.clk.Now})
	if _, err := p.GetCoreDevice(ctx, "core1"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("registered before any report: %v", err)
	}
	if err := svc.HandleHealth(ctx, "core1", report(t0, mqttmsg.Healthy)); err != nil {
		t.Fatal(err)
	}
	cd, err := p.GetCoreDevice(ctx, "core1")
	if err != nil || cd.Status != "HEALTHY" || cd.CoreVersion != "2.12.0" {
		t.Fatalf("GetCoreDevice = %+v, %v", cd, err)
	}
}

func BenchmarkHandleHealth(b *testing.B) {
	ctx := context.Background()
	e := newEnv(b, "core1")
	m := report(t0, mqttmsg.Healthy)
	i := 0
	for b.Loop() {
		i++
		e.clk.now = t0.Add(time.Duration(i) * time.Second)
		m.Timestamp = e.clk.now
		if err := e.svc.HandleHealth(ctx, "core1", m); err != nil {
			b.Fatal(err)
		}
	}
}

// TestConcurrentReports sends reports of many cores at once, several per
// core in shuffled order, through the group commit on SQLite: every core
// ends with its latest report and every report counts as a sign of life.
func TestConcurrentReports(t *testing.T) {
	const cores, perCore = 40, 5
	names := make([]string, cores)
	for i := range names {
		names[i] = fmt.Sprintf("core%02d", i)
	}
	e := newEnv(t, names...)
	e.clk.now = t0.Add(time.Hour)
	type send struct {
		core string
		at   time.Duration
	}
	var sends []send
	for _, c := range names {
		for k := range perCore {
			sends = append(sends, send{c, time.Duration(k) * time.Second})
		}
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(sends), func(i, j int) { sends[i], sends[j] = sends[j], sends[i] })
	var wg sync.WaitGroup
	errs := make(chan error, len(sends))
	for _, s := range sends {
		wg.Go(func() {
			m := report(t0.Add(s.at), mqttmsg.Healthy)
			m.ThingName = s.core
			if err := e.svc.HandleHealth(context.Background(), s.core, m); err != nil {
				errs <- err
			}
		})
	}
	wg.Go(func() {
		if err := e.svc.HandleHealth(context.Background(), "ghost", report(t0, mqttmsg.Healthy)); !errkind.Is(err, errkind.NotFound) {
			errs <- fmt.Errorf("ghost: %v, want NotFound", err)
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	latest := t0.Add((perCore - 1) * time.Second)
	seen := e.clk.now
	for _, c := range names {
		d, ok := device(t, e, c)
		if !ok || d.LastStatusUpdateTimestamp == nil || !d.LastStatusUpdateTimestamp.Equal(latest) ||
			d.LastSeenAt == nil || !d.LastSeenAt.Equal(seen) || d.Connectivity != "ONLINE" {
			t.Errorf("%s: ok=%v reported %v seen %v %s, want %v %v ONLINE", c, ok, d.LastStatusUpdateTimestamp, d.LastSeenAt, d.Connectivity, latest, seen)
		}
	}
	// The registry hears of each core's status at least once.
	got := map[string]int{}
	for _, s := range e.reg.statuses {
		got[s.Name]++
	}
	for _, c := range names {
		if got[c] == 0 {
			t.Errorf("registry never told about %s", c)
		}
	}
}

// TestConcurrentTouches checks that signs of life sent at once by many
// cores, several each, and by a thing that is not a core, leave every core
// ONLINE and seen, with the touches' group commit (TouchStore) and without.
func TestConcurrentTouches(t *testing.T) {
	for _, tt := range []struct {
		name  string
		store func(e *env) health.Store
	}{
		{"group commit", func(e *env) health.Store { return e.db.Health() }},
		{"one by one", func(e *env) health.Store { return plainStore{e.db.Health()} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			const cores, perCore = 40, 5
			names := make([]string, cores)
			for i := range names {
				names[i] = fmt.Sprintf("core%02d", i)
			}
			e := newEnv(t, names...)
			svc := health.New(health.Config{Store: tt.store(e), Now: e.clk.Now})
			e.clk.now = t0.Add(time.Hour)
			var wg sync.WaitGroup
			for _, c := range names {
				for range perCore {
					wg.Go(func() { svc.Touch(context.Background(), c) })
				}
			}
			wg.Go(func() { svc.Touch(context.Background(), "ghost") })
			wg.Wait()
			for _, c := range names {
				d, _ := device(t, e, c)
				if d.Connectivity != "ONLINE" || d.LastSeenAt == nil || !d.LastSeenAt.Equal(e.clk.now) {
					t.Errorf("%s: %s seen %v, want ONLINE seen %v", c, d.Connectivity, d.LastSeenAt, e.clk.now)
				}
			}
			if _, err := e.db.Health().GetHealth(context.Background(), "ghost"); !errkind.Is(err, errkind.NotFound) {
				t.Errorf("ghost has a health row: %v", err)
			}
		})
	}
}

// plainStore hides a Store's BatchStore and TouchStore, for comparison
// with group commit.
type plainStore struct{ health.Store }

// BenchmarkHandleHealthConcurrent is P5's database side: 1000 cores, one
// report in flight each, stored one commit per report or by group commit.
// On SQLite always, on PostgreSQL too when GGFLEET_BENCH_POSTGRES names a
// database (a schema of its own is made and dropped).
func BenchmarkHandleHealthConcurrent(b *testing.B) {
	const cores = 1000
	names := make([]string, cores)
	for i := range names {
		names[i] = fmt.Sprintf("core%04d", i)
	}
	engines := []struct {
		name string
		open func(b *testing.B) *sqlstore.DB
	}{
		{"sqlite", func(b *testing.B) *sqlstore.DB { return newEnv(b, names...).db }},
		{"postgres", func(b *testing.B) *sqlstore.DB { return benchPostgres(b, names) }},
	}
	for _, eng := range engines {
		for _, mode := range []string{"one-by-one", "group-commit"} {
			b.Run(eng.name+"/"+mode, func(b *testing.B) {
				db := eng.open(b)
				var store health.Store = db.Health()
				if mode == "one-by-one" {
					store = plainStore{store}
				}
				now := t0.Add(24 * time.Hour)
				svc := health.New(health.Config{Store: store, Now: func() time.Time { return now }})
				var next atomic.Int64
				b.SetParallelism(cores / runtime.GOMAXPROCS(0))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					core := names[int(next.Add(1)-1)%cores]
					m := report(t0, mqttmsg.Healthy)
					for i := 1; pb.Next(); i++ {
						m.Timestamp = t0.Add(time.Duration(i) * time.Millisecond)
						if err := svc.HandleHealth(context.Background(), core, m); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reports/s")
			})
		}
	}
}

var benchSchemas atomic.Int64

// benchPostgres opens a migrated PostgreSQL database holding cores, in a
// schema of its own, or skips when GGFLEET_BENCH_POSTGRES is unset.
func benchPostgres(b *testing.B, cores []string) *sqlstore.DB {
	raw := os.Getenv("GGFLEET_BENCH_POSTGRES")
	if raw == "" {
		b.Skip("GGFLEET_BENCH_POSTGRES is unset")
	}
	ctx := context.Background()
	admin, err := sql.Open("pgx", raw)
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	schema := fmt.Sprintf("ggbench_health_%d_%d", os.Getpid(), benchSchemas.Add(1))
	if _, err := admin.ExecContext(ctx, `CREATE SCHEMA `+schema); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if a, err := sql.Open("pgx", raw); err == nil {
			_, _ = a.Exec(`DROP SCHEMA ` + schema + ` CASCADE`)
			a.Close()
		}
	})
	u, err := url.Parse(raw)
	if err != nil {
		b.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	db, err := sqlstore.OpenPostgres(ctx, u.String(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	if err := db.Cores().EnsureCores(ctx, cores, t0); err != nil {
		b.Fatal(err)
	}
	return db
}
