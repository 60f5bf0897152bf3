package e2e

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/bench/loadgen"
)

// TestFaultsNetworkChaos puts the TCP proxy between every agent (a real
// ggagent and a fleet of simulated ones) and the broker's MQTT port, and
// during a deployment injects latency, connection resets (RST) and a cut.
// The deployment still completes, every agent applies it exactly once,
// sessions recover, no QoS 1 report is lost, and the broker records one
// Core Template Updated Event per core.
func TestFaultsNetworkChaos(t *testing.T) {
	sims, rounds := scale(20, 100), scale(6, 30)
	faultCase(t, "%d simulated agents and a ggagent, %d rounds of latency and resets and a cut", sims, rounds)
	p := startProxy(t, "")
	b := startBroker(t, "--mqtt-advertise", p.addr)
	logBrokerOnFailure(t, b)
	p.setTarget(b.mqtt)
	const real = "chaos-core"
	b.readyCore(real)
	dir := b.enrollAgent(real)
	start := time.Now()
	a := startAgent(t, dir, stepDelayEnv+"=2s")
	f := b.simFleet("chaos", sims, loadgen.Config{HealthInterval: 2 * time.Second, ApplyDelay: 3 * time.Second})
	b.waitOnline(real, start.Add(-time.Second))
	waitFor(t, 5*time.Minute, "every simulated agent connected", func() bool { return f.stats().Connects >= int64(sims) })

	names := []string{real}
	for i := range sims {
		names = append(names, fmt.Sprintf("chaos-%04d", i))
	}
	b.must(201, "POST", "/templates", map[string]any{"name": "ChaosT", "components": []map[string]any{
		{"key": "aws.greengrass.Cli", "version": "2.4.0"}, {"key": "com.example.Hello", "version": "1.0.0"}}})
	id := b.deployTo("ChaosT", names)

	rng := rand.New(rand.NewPCG(7, 7))
	for r := 0; r < rounds; r++ {
		p.setLatency(time.Duration(rng.IntN(200)) * time.Millisecond)
		time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
		switch rng.IntN(3) {
		case 0:
			p.reset()
		case 1:
			p.cut()
			time.Sleep(time.Duration(rng.IntN(3000)) * time.Millisecond)
			p.restore()
		}
	}
	p.setLatency(0)
	p.restore()
	if task := b.waitTask("/deploymentTasks/"+id, 5*time.Minute); task["taskStatus"] != "Success" {
		t.Fatalf("deployment through the chaos: %v (%v)", task["taskStatus"], task["statusMessage"])
	}
	waitAgentStatus(t, dir, "ggagent reconnected with an empty outbox", func(s agentStatus) bool { return s.Connected && s.OutboxLength == 0 })
	if got := applies(t, dir); len(got) != 1 {
		t.Errorf("ggagent applies = %v, want the one deployment once", got)
	}
	if strings.Contains(a.log(), "panic:") {
		t.Fatal("ggagent panicked")
	}
	a.kill()
	f.stop()
	st := f.stats()
	t.Logf("simulated fleet through the chaos: %+v", st)
	if err := loadgen.Check(st); err != nil {
		t.Error(err)
	}
	if st.Connects <= int64(sims) {
		t.Errorf("%d connects for %d agents: the resets never broke a session", st.Connects, sims)
	}
	for i, ag := range f.agents {
		for dep, c := range ag.Applied() {
			if c != 1 {
				t.Errorf("chaos-%04d applied %s %d times", i, dep, c)
			}
		}
		if len(ag.Applied()) != 1 {
			t.Errorf("chaos-%04d applied %v, want the one deployment", i, ag.Applied())
		}
	}
	b.stop()
	q := `SELECT COUNT(*) FROM events WHERE detail_type = 'Core Template Updated Event' AND json_extract(detail, '$.deploymentTaskId') = ?`
	if got := queryInt(t, b.dataDir, q, id); got != len(names) {
		t.Errorf("%d Core Template Updated Events, want exactly %d", got, len(names))
	}
}
