// Command fleetbench measures the fleet figures of issue 8 on real
// `ggfleet serve` processes and prints them as a Markdown fragment for
// BENCHMARKS.md, each figure a ratio to a reference measured in the same run:
//
//   - P1: -cores cores provisioned through POST /coreTasks (tasks of
//     -task-size, submitted at once), cores per second from the first
//     submission to every item final (the last task's updatedAt, read
//     every 100 ms), against the crypto-only rate: the
//     device key, its PEM and the certificate signed by ca.Authority with
//     the broker's default CA (EC-P256), in this process on every CPU, for
//     -crypto-time just before and just after P1 (their mean).
//   - P3: p99 of GET /cores/{name} and GET /fleet/summary sent while P1
//     runs against idle (after P1, the same -cores cores stored).
//   - P4: one deployment task to -agents simulated agents (bench/loadgen:
//     one mTLS MQTT session and certificate each): submission to the task's
//     Success against the physical bound, the same agents and message
//     exchange on the same MQTT broker software driven directly (see
//     fanoutBound); and submission to the last agent receiving its document.
//
// -configs chooses the deployments: sqlite-1, postgres-1, postgres-3
// (three replicas on one fresh PostgreSQL database, agents on one shared
// Mosquitto: each replica's embedded MQTT broker reaches only its own
// agents). It needs the source tree (run it from the repository root),
// PostgreSQL (GGFLEET_TEST_POSTGRES, default postgres://postgres@127.0.0.1:5432)
// for postgres-*, and mosquitto for more than one replica. It asserts
// nothing: the figures are for people to read against the targets.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/ggfleet/ggfleet/bench/loadgen"
)

// options are fleetbench's flags.
type options struct {
	Configs    []config
	Cores      int
	TaskSize   int
	Agents     int
	ApplyDelay time.Duration
	Health     time.Duration
	Workers    int
	Interval   time.Duration
	Idle       time.Duration
	CryptoFor  time.Duration
	Burst      int
	Storm      int
	StormConc  int
	Keep       bool
	Progress   io.Writer
	// ServeProfile, when set, is where every replica's CPU profiles of P1
	// and P5 (ProfileFor long, from the phase's start) are written.
	ServeProfile string
	ProfileFor   time.Duration
}

func main() {
	var o options
	configs := flag.String("configs", "sqlite-1,postgres-1,postgres-3", "configurations to run: DATABASE-REPLICAS, comma-separated (sqlite-1, postgres-1, postgres-3)")
	flag.IntVar(&o.Cores, "cores", 10000, "cores provisioned in P1")
	flag.IntVar(&o.TaskSize, "task-size", 1000, "cores per core task in P1")
	flag.IntVar(&o.Agents, "agents", 1000, "simulated agents in P4 (the first of P1's cores)")
	flag.DurationVar(&o.ApplyDelay, "apply-delay", time.Second, "how long a simulated agent takes to apply a deployment")
	flag.DurationVar(&o.Health, "health-interval", 30*time.Second, "simulated agents' health report interval")
	flag.IntVar(&o.Workers, "workers", 0, "ggfleet serve --workers (0: its default)")
	flag.DurationVar(&o.Interval, "probe-interval", 20*time.Millisecond, "P3: one request per endpoint this often")
	flag.DurationVar(&o.Idle, "idle", 20*time.Second, "P3: how long the idle phase samples")
	flag.DurationVar(&o.CryptoFor, "crypto-time", 10*time.Second, "P1: how long the crypto-only rate is measured, before and again after P1")
	flag.IntVar(&o.Burst, "burst", 20, "P5: health reports each simulated agent publishes back to back (0: no P5)")
	flag.IntVar(&o.Storm, "storm", 2000, "P7: simulated agents reconnecting at once (the first of P1's cores, at most -cores; 0: no P7)")
	flag.IntVar(&o.StormConc, "storm-concurrency", 64, "P7: connects in flight at once")
	flag.BoolVar(&o.Keep, "keep", false, "keep the working directory (brokers' data dirs and logs) and print where it is")
	flag.StringVar(&o.ServeProfile, "serve-profile", "", "write CPU profiles of every ggfleet serve replica (taken at its --pprof-listen) from the start of P1 and of P5 to DIR/CONFIG-PHASE-replica-N.pprof")
	flag.DurationVar(&o.ProfileFor, "serve-profile-time", 5*time.Second, "length of each -serve-profile profile (whole seconds)")
	out := flag.String("out", "", "also write the Markdown fragment to this file")
	timeout := flag.Duration("timeout", 2*time.Hour, "give up after this long")
	cpuProfile := flag.String("cpuprofile", "", "write the bench process's CPU profile (load generator, references, the bound's brokers) to this file")
	flag.Parse()

	var err error
	if o.Configs, err = parseConfigs(*configs); err != nil {
		fail(err)
	}
	if o.Cores < 1 || o.TaskSize < 1 || o.Agents < 1 || o.Agents > o.Cores || o.Storm < 0 {
		fail(fmt.Errorf("need -cores ≥ 1, -task-size ≥ 1, 1 ≤ -agents ≤ -cores and -storm ≥ 0"))
	}
	o.Storm = min(o.Storm, o.Cores) // the storm's agents are P1's cores
	if o.ServeProfile != "" {
		if err := os.MkdirAll(o.ServeProfile, 0o755); err != nil {
			fail(err)
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fail(err)
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	o.Progress = os.Stderr

	h := header{Command: "go run ./bench/fleetbench " + strings.Join(os.Args[1:], " "), Started: time.Now(), Machine: machine(),
		Workers: o.Workers, Interval: o.Interval, Idle: o.Idle, Health: o.Health}
	results, err := run(ctx, o)
	if err != nil {
		fail(err)
	}
	h.Elapsed = time.Since(h.Started)
	md := markdown(h, results)
	fmt.Print(md)
	if *out != "" {
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			fail(err)
		}
		if err := os.WriteFile(*out, []byte(md), 0o644); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "fleetbench:", err)
	os.Exit(1)
}

// run builds ggfleet and measures every configuration in turn. A
// configuration that fails is reported with its error; the others still run.
func run(ctx context.Context, o options) ([]result, error) {
	dir, err := os.MkdirTemp("", "fleetbench-")
	if err != nil {
		return nil, err
	}
	if o.Keep {
		defer progressf(o.Progress, "fleetbench: kept %s (each configuration's replica-N/broker.log)", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	// Mosquitto drops root for the user mosquitto, which must reach its
	// folder below this one. Secrets inside are 0600 files or 0700 data dirs.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	progressf(o.Progress, "fleetbench: building ggfleet")
	bin, err := buildBroker(ctx, dir)
	if err != nil {
		return nil, err
	}
	var results []result
	for _, c := range o.Configs {
		progressf(o.Progress, "fleetbench: %s", c.Name)
		r := runConfig(ctx, o, bin, filepath.Join(dir, c.Name), c)
		if r.Err != nil {
			progressf(o.Progress, "fleetbench: %s failed: %v", c.Name, r.Err)
		}
		progressf(o.Progress, "fleetbench: %s: P1 %s, P3 cores %s, P3 summary %s, P4 %s, notified in %s", c.Name,
			num(r.p1Ratio()), num(r.p3CoreRatio()), num(r.p3SummaryRatio()), num(r.p4Ratio()), dur(r.P4Notify))
		results = append(results, r)
		if ctx.Err() != nil {
			return results, ctx.Err()
		}
	}
	return results, nil
}

// runConfig measures one configuration: the crypto-only rate, P1 with the
// P3 probe running, P3 idle, P4 through ggfleet; then, with ggfleet
// stopped, P4's physical bound.
func runConfig(ctx context.Context, o options, bin, dir string, c config) (r result) {
	r = result{Config: c, Cores: o.Cores, Agents: o.Agents, ApplyDelay: o.ApplyDelay, LoadAvgBefore: loadAvg()}
	defer func() { r.LoadAvgAfter = loadAvg() }()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.Err = err
		return r
	}
	cl, err := startCluster(ctx, bin, filepath.Join(dir, "cluster"), c, o.Workers)
	if err != nil {
		r.Err = err
		return r
	}
	defer func() {
		if cl != nil {
			cl.close()
		}
	}()
	clients, err := cl.clients()
	if err != nil {
		r.Err = err
		return r
	}

	progressf(o.Progress, "  crypto-only rate for %s", o.CryptoFor)
	if r.CryptoBefore, err = cryptoRate(ctx, o.CryptoFor); err != nil {
		r.Err = err
		return r
	}

	// P1's and P3's calls go to the replicas behind the API's load
	// balancer: with API-only replicas, to them only.
	api := clients
	if c.APIOnly > 0 {
		api = clients[len(clients)-c.APIOnly:]
	}
	progressf(o.Progress, "  P1: %d cores in tasks of %d", o.Cores, o.TaskSize)
	p := probe{clients: api, cores: o.Cores, interval: o.Interval}
	waitProfile := profiler(ctx, o, cl, c.Name+"-P1")
	defer func() { _ = waitProfile() }() // on the early returns below
	start := time.Now()
	ids, err := submitCores(ctx, api, o.Cores, o.TaskSize)
	if err != nil {
		r.Err = err
		return r
	}
	pctx, pstop := context.WithCancel(ctx)
	probed := make(chan struct{})
	var loadCore, loadSummary []sample
	go func() { // owned here: stopped and waited for below
		defer close(probed)
		loadCore, loadSummary = p.run(pctx)
	}()
	var end time.Time
	r.Failed, end, err = waitCores(ctx, api[0], ids, o.Progress)
	seen := time.Now()
	pstop()
	<-probed
	if err != nil {
		r.Err = err
		return r
	}
	if err := waitProfile(); err != nil {
		r.Err = fmt.Errorf("P1: %w", err)
		return r
	}
	if end.Before(start) || end.After(seen) { // a clock apart from ours: when it was seen
		end = seen
	}
	r.P1Elapsed = end.Sub(start)
	// P3's load phase is P1's: requests sent once it had ended do not count.
	r.LoadCore, r.LoadSummary = summariseBefore(loadCore, end), summariseBefore(loadSummary, end)
	r.P1Rate = float64(o.Cores) / r.P1Elapsed.Seconds()
	progressf(o.Progress, "  crypto-only rate again for %s", o.CryptoFor)
	if r.CryptoAfter, err = cryptoRate(ctx, o.CryptoFor); err != nil {
		r.Err = err
		return r
	}

	progressf(o.Progress, "  P3: idle for %s", o.Idle)
	ictx, istop := context.WithTimeout(ctx, o.Idle)
	idleCore, idleSummary := p.run(ictx)
	istop()
	r.IdleCore, r.IdleSummary = summariseBefore(idleCore, time.Now()), summariseBefore(idleSummary, time.Now())

	agentCfg := loadgen.Config{HealthInterval: o.Health, ApplyDelay: o.ApplyDelay}
	db, err := cl.healthDB()
	if err != nil {
		r.Err = err
		return r
	}
	defer db.Close()
	names := make([]string, max(o.Agents, o.Storm))
	for i := range names {
		names[i] = coreName(i)
	}
	progressf(o.Progress, "  P4: enrolling %d simulated agents", len(names))
	agents, err := enrollAll(ctx, clients, names)
	if err != nil {
		r.Err = fmt.Errorf("P4: %w", err)
		return r
	}
	fr, err := fanoutGgfleet(ctx, clients, agents[:o.Agents], agentCfg, o.Burst, db, cl.pids(), o.Progress,
		func() func() error { return profiler(ctx, o, cl, c.Name+"-P5") })
	r.P4Elapsed, r.P4Notify, r.P4Received, r.P4Status, r.LostReports, r.P5 = fr.Elapsed, fr.Notify, fr.Received, fr.Status, fr.Lost, fr.Ingest
	if err != nil {
		r.Err = fmt.Errorf("P4: %w", err)
		return r
	}
	if o.Storm > 0 {
		progressf(o.Progress, "  P7: %d agents connecting at once, %d in flight", o.Storm, o.StormConc)
		if r.P7, err = stormGgfleet(ctx, agents[:o.Storm], o.StormConc); err != nil {
			r.Err = fmt.Errorf("P7: %w", err)
			return r
		}
	}
	cl.close()
	cl = nil

	progressf(o.Progress, "  P4 bound: %d agents on the %s MQTT broker alone", o.Agents, c.mqttName())
	bound, err := fanoutBound(ctx, c.Mosquitto, filepath.Join(dir, "bound"), o.Agents, agentCfg, o.Burst)
	r.BoundElapsed, r.BoundNotify, r.P5Embedded = bound.Elapsed, bound.Notify, bound.Ingest
	if err != nil {
		r.Err = fmt.Errorf("P4 bound: %w", err)
		return r
	}
	if o.Burst > 0 {
		progressf(o.Progress, "  P5 reference: %d agents × %d health reports on Mosquitto alone", o.Agents, o.Burst)
		if r.P5Mosquitto, err = ingestMosquittoAlone(ctx, filepath.Join(dir, "p5"), o.Agents, o.Burst, agentCfg); err != nil {
			r.Err = fmt.Errorf("P5 reference: %w", err)
		}
	}
	return r
}

// profiler starts CPU profiles of cl's replicas when -serve-profile asks
// for them and returns what waits for them (nothing to wait for otherwise).
func profiler(ctx context.Context, o options, cl *cluster, phase string) (wait func() error) {
	if o.ServeProfile == "" {
		return func() error { return nil }
	}
	progressf(o.Progress, "  profiling every replica for %s (-serve-profile)", o.ProfileFor)
	return cl.profile(ctx, filepath.Join(o.ServeProfile, phase), o.ProfileFor)
}

// progressf writes a progress line to w when w is not nil.
func progressf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

// loadAvg is /proc/loadavg's three load averages ("?" elsewhere).
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], ", ")
}

// machine describes the CPU, memory, kernel and toolchain.
func machine() string {
	cpu, mem, kernel := "?", "?", "?"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(string(data)); len(f) >= 3 {
			mem = f[1] + " " + f[2]
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(data))
	}
	return fmt.Sprintf("CPU: %s; nproc: %d; memory: %s; kernel: Linux %s %s; toolchain: %s",
		cpu, runtime.NumCPU(), mem, kernel, runtime.GOARCH, runtime.Version())
}
