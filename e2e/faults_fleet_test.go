package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/bench/loadgen"
)

// fleet is a set of simulated agents (bench/loadgen) connected to one
// broker, each enrolled as its own core.
type fleet struct {
	agents []*loadgen.Agent
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error
}

// simFleet creates n cores named prefix-NNNN, enrolls each with a
// device-made key and starts a simulated agent for it; the agents stop when
// the test ends (or on stop).
func (b *broker) simFleet(prefix string, n int, cfg loadgen.Config) *fleet {
	b.t.Helper()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	for chunk := range slices.Chunk(names, 500) {
		cores := make([]map[string]any, len(chunk))
		for i, name := range chunk {
			cores[i] = core(name)
		}
		if task := b.waitTask("/coreTasks/"+b.createCores(cores...), 30*time.Minute); task["taskStatus"] != "Success" {
			b.t.Fatalf("core task for the fleet: %v", task["taskStatus"])
		}
	}
	ids := make([]*loadgen.Identity, n)
	client := &http.Client{Timeout: time.Minute}
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				tok := b.enrollmentToken(names[i])
				id, err := loadgen.Enroll(context.Background(), client, b.url, names[i], tok)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				ids[i] = id
				mu.Unlock()
			}
		})
	}
	for i := range names {
		work <- i
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		b.t.Fatal(firstErr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &fleet{cancel: cancel, errs: make(chan error, n)}
	for _, id := range ids {
		c := cfg
		c.Identity = id
		a := loadgen.New(c)
		f.agents = append(f.agents, a)
		f.wg.Go(func() {
			if err := a.Run(ctx); err != nil {
				f.errs <- err
			}
		})
		time.Sleep(10 * time.Millisecond) // a fleet comes up over time, not in one instant
	}
	b.t.Cleanup(f.stop)
	return f
}

// stop ends every agent and waits for their reports in flight.
func (f *fleet) stop() {
	f.cancel()
	f.wg.Wait()
}

// stats sums the agents' counters.
func (f *fleet) stats() loadgen.Stats {
	var s loadgen.Stats
	for _, a := range f.agents {
		s = s.Add(a.Stats())
	}
	return s
}

// connectErrors returns (up to five of) the agents' failed first connections.
func (f *fleet) connectErrors() []error {
	var out []error
	for len(out) < 5 {
		select {
		case err := <-f.errs:
			out = append(out, err)
		default:
			return out
		}
	}
	return out
}

// deployTo starts a deployment task of template's latest version to cores.
func (b *broker) deployTo(template string, cores []string) string {
	b.t.Helper()
	r := b.must(202, "POST", "/deploymentTasks", map[string]any{"template": map[string]any{"name": template},
		"targets": map[string]any{"thingNames": cores}})
	return r.Header.Get("x-taskid")
}

// TestFaultsBrokerKillDeployment kills `ggfleet serve` with SIGKILL at a
// random point of a deployment to a fleet of simulated agents, once per
// seed, each seed a new template version. After the restart every task
// ends Success, every agent applied each deployment exactly once, every
// core is in exactly one deployment group, there is one Core Template
// Updated Event per core and deployment, and no report was lost.
func TestFaultsBrokerKillDeployment(t *testing.T) {
	seeds, n := scale(3, 10), 200
	faultCase(t, "%d seeds of a %d-core deployment", seeds, n)
	b := startBroker(t)
	logBrokerOnFailure(t, b)
	f := b.simFleet("kd", n, loadgen.Config{HealthInterval: 10 * time.Second, ApplyDelay: 1500 * time.Millisecond})
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("kd-%04d", i)
	}
	waitFor(t, 5*time.Minute, "every agent connected", func() bool {
		if errs := f.connectErrors(); len(errs) > 0 {
			t.Fatalf("agents could not connect: %v", errs)
		}
		return f.stats().Connects >= int64(n)
	})
	b.must(201, "POST", "/templates", map[string]any{"name": "KillT", "components": []map[string]any{{"key": "aws.greengrass.Cli", "version": "2.4.0"}}})
	var taskIDs []string
	for seed := 1; seed <= seeds; seed++ {
		rng := rand.New(rand.NewPCG(uint64(seed), 20))
		if seed > 1 {
			if r := b.do("PUT", "/templates/KillT", map[string]any{"components": []map[string]any{
				{"key": "aws.greengrass.Cli", "version": "2.4." + strconv.Itoa(seed)}}}); r.Status/100 != 2 {
				t.Fatalf("new version of KillT: %d %s", r.Status, r.Body)
			}
		}
		id := b.deployTo("KillT", names)
		taskIDs = append(taskIDs, id)
		delay := time.Duration(rng.IntN(4000)) * time.Millisecond
		time.Sleep(delay)
		b.kill()
		t.Logf("seed %d: task %s, broker killed %s after the deployment started", seed, id, delay)
		time.Sleep(time.Duration(rng.IntN(2000)) * time.Millisecond)
		b.restart()
		if task := b.waitTask("/deploymentTasks/"+id, 15*time.Minute); task["taskStatus"] != "Success" {
			t.Fatalf("seed %d: deployment task after the kill = %v (%v)", seed, task["taskStatus"], task["statusMessage"])
		}
	}
	// Every core reported the last version.
	for _, name := range names {
		if rt := b.reportedTemplate(name); fmt.Sprint(rt["version"]) != strconv.Itoa(seeds) {
			t.Fatalf("%s reports template %v, want version %d", name, rt, seeds)
		}
	}
	f.stop()
	for i, a := range f.agents {
		applied := a.Applied()
		if len(applied) != seeds {
			t.Errorf("%s applied %d deployments, want %d: %v", names[i], len(applied), seeds, applied)
		}
		for id, c := range applied {
			if c != 1 {
				t.Errorf("%s applied deployment %s %d times", names[i], id, c)
			}
		}
	}
	st := f.stats()
	t.Logf("fleet: %+v", st)
	if err := loadgen.Check(st); err != nil {
		t.Error(err)
	}
	b.stop()
	if got := queryInt(t, b.dataDir, `SELECT COUNT(*) FROM registry_group_members WHERE group_name LIKE 'cdf_ggv2_deploymentForTemplate_%'`); got != n {
		t.Errorf("deployment group memberships: %d, want exactly %d (one per core)", got, n)
	}
	for _, id := range taskIDs {
		q := `SELECT COUNT(*) FROM events WHERE detail_type = 'Core Template Updated Event' AND json_extract(detail, '$.deploymentTaskId') = ?`
		if got := queryInt(t, b.dataDir, q, id); got != n {
			t.Errorf("task %s: %d Core Template Updated Events, want exactly %d", id, got, n)
		}
	}
}

// vmRSS reads a process's resident memory in bytes.
func vmRSS(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestFaultsLoad: a fleet of simulated agents heartbeats QoS 1 health
// reports every 10 s against one broker; every report is acknowledged
// (none lost), every core stays ONLINE, and the broker's memory stays
// bounded (no growth from the first half of the run to the second).
func TestFaultsLoad(t *testing.T) {
	n, dur := scale(500, 5000), scale(time.Minute, 10*time.Minute)
	faultCase(t, "%d agents heartbeating every 10s for %s", n, dur)
	b := startBroker(t, "--log-level", "info")
	logBrokerOnFailure(t, b)
	setup := time.Now()
	f := b.simFleet("ld", n, loadgen.Config{HealthInterval: 10 * time.Second})
	t.Logf("fleet of %d created and enrolled in %s", n, time.Since(setup).Round(time.Second))
	waitFor(t, 10*time.Minute, "every agent connected", func() bool {
		if errs := f.connectErrors(); len(errs) > 0 {
			t.Fatalf("agents could not connect: %v", errs)
		}
		return f.stats().Connects >= int64(n)
	})
	pid := b.cmd.Process.Pid
	start := time.Now()
	var firstHalf, secondHalf, last int64
	for time.Since(start) < dur {
		rss := vmRSS(pid)
		if time.Since(start) < dur/2 {
			firstHalf = max(firstHalf, rss)
		} else {
			secondHalf = max(secondHalf, rss)
		}
		last = rss
		time.Sleep(2 * time.Second)
	}
	// A sample of cores is ONLINE and HEALTHY while the fleet runs.
	offline := 0
	for i := 0; i < n; i += max(1, n/25) {
		if d := b.device(fmt.Sprintf("ld-%04d", i)); d["connectivity"] != "ONLINE" || d["status"] != "HEALTHY" {
			offline++
			t.Logf("ld-%04d: %v", i, d)
		}
	}
	f.stop()
	st := f.stats()
	mib := func(v int64) string { return fmt.Sprintf("%.0f MiB", float64(v)/(1<<20)) }
	t.Logf("| %d agents | %s | %d reports sent | %d acknowledged | %d lost | %d connects | broker RSS max %s (first half), %s (second half), %s at the end |",
		n, dur, st.Sent, st.Acked, st.Lost, st.Connects, mib(firstHalf), mib(secondHalf), mib(last))
	if err := loadgen.Check(st); err != nil {
		t.Error(err)
	}
	if st.Connects != int64(n) {
		t.Errorf("%d connects for %d agents: sessions dropped under load", st.Connects, n)
	}
	if min := int64(n) * int64(dur/(10*time.Second)) / 2; st.Sent < min {
		t.Errorf("only %d reports sent, want at least %d", st.Sent, min)
	}
	if firstHalf == 0 || secondHalf > 2*firstHalf+(100<<20) {
		t.Errorf("broker memory grew: %s in the first half, %s in the second", mib(firstHalf), mib(secondHalf))
	}
	if offline > 0 {
		t.Errorf("%d sampled cores were not ONLINE and HEALTHY during the run", offline)
	}
}
