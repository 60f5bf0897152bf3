package patch

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/internal/testservers"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

func TestCancel(t *testing.T) {
	t.Parallel()
	srv := testservers.StartSSHD(t, testservers.SSHDOptions{})
	state := t.TempDir()
	pub := &recorder{}
	r := newRunner(t, state, pub, func(c *Config) { c.HeartbeatInterval = 200 * time.Millisecond })
	target := sshTarget(t, srv, state, "dev-1")
	r.Handle(newJob("running", target, patchmsg.StepSpec{Name: "long", Run: "sleep 3021"}))
	pub.waitEvent(t, "running", 1, "heartbeat", func(e patchmsg.Event) bool { return e.Type == patchmsg.EventHeartbeat })
	r.Handle(newJob("queued", target, patchmsg.StepSpec{Name: "never", Run: "echo never"}))
	pub.waitEvent(t, "running", 1, "step-started", func(e patchmsg.Event) bool { return e.Type == patchmsg.EventStepStarted })

	// The second patch waits behind the first (same device): cancel it there.
	r.Cancel(patchmsg.Cancel{Version: 1, PatchID: "queued", Attempt: 1, Reason: "operator"})
	done := pub.waitCompleted(t, "queued", 1)
	if done.StatusMessage != "AGENT:Cancelled" {
		t.Errorf("queued patch: %q, want AGENT:Cancelled", done.StatusMessage)
	}
	for _, e := range pub.eventsOf("queued", 1) {
		if e.Type == patchmsg.EventConnected || e.Type == patchmsg.EventStepStarted {
			t.Errorf("cancelled queued patch still ran: %s event", e.Type)
		}
	}

	r.Cancel(patchmsg.Cancel{Version: 1, PatchID: "running"}) // attempt 0: any
	done = pub.waitCompleted(t, "running", 1)
	if done.Status != patchmsg.PatchFailed || done.StatusMessage != "AGENT:Cancelled" {
		t.Errorf("running patch: %s %q, want failed AGENT:Cancelled", done.Status, done.StatusMessage)
	}
	waitGone(t, "sleep", "3021")
	time.Sleep(time.Second) // five heartbeat intervals: none may follow completed
	if evs := pub.eventsOf("running", 1); evs[len(evs)-1].Type != patchmsg.EventCompleted {
		t.Errorf("%s event after completed", evs[len(evs)-1].Type)
	}
}

func TestJournalResume(t *testing.T) {
	t.Parallel()
	srv := testservers.StartSSHD(t, testservers.SSHDOptions{})
	state := t.TempDir()
	dev := deviceDir(t)
	pub := &recorder{}
	r := newRunner(t, state, pub, nil)
	count := filepath.Join(dev, "count")
	after := filepath.Join(dev, "after")
	// "fail" is interrupted mid-step with the default onInterrupt (fail);
	// "rerun" runs its step again after the restart and goes on.
	r.Handle(newJob("fail", sshTarget(t, srv, state, "dev-a"),
		patchmsg.StepSpec{Name: "long", Run: "sleep 3031"}, patchmsg.StepSpec{Name: "next", Run: "true"}))
	r.Handle(newJob("rerun", sshTarget(t, srv, state, "dev-b"),
		patchmsg.StepSpec{Name: "idempotent", OnInterrupt: patchmsg.OnInterruptRerun,
			Run: `n=$(cat ` + count + ` 2>/dev/null || echo 0); n=$((n+1)); echo $n > ` + count + `; if [ $n -eq 1 ]; then sleep 3032; fi`},
		patchmsg.StepSpec{Name: "after", Run: "echo done >> " + after}))
	// Both steps really run on the device before the agent stops.
	for _, n := range []string{"3031", "3032"} {
		waitFor(t, "sleep "+n+" to run", func() bool { return len(testservers.ProcessesRunning("sleep", n)) > 0 })
	}
	r.Close() // the agent stops mid-step
	waitGone(t, "sleep", "3031")
	waitGone(t, "sleep", "3032")
	lastSeq := map[string]int64{}
	for _, id := range []string{"fail", "rerun"} {
		evs := pub.eventsOf(id, 1)
		for _, e := range evs {
			if e.Type == patchmsg.EventCompleted {
				t.Fatalf("%s completed on shutdown: %+v", id, e)
			}
		}
		lastSeq[id] = evs[len(evs)-1].Seq
		var rec record
		b, err := os.ReadFile(filepath.Join(state, journalDir, id+".1.json"))
		if err != nil || json.Unmarshal(b, &rec) != nil || rec.State != stateRunning || !rec.StepRunning || rec.NextStep != 0 {
			t.Fatalf("journal of %s after shutdown: %+v %v", id, rec, err)
		}
	}

	pub2 := &recorder{}
	r2 := newRunner(t, state, pub2, nil)
	failed := pub2.waitCompleted(t, "fail", 1)
	if failed.StatusMessage != "AGENT:Interrupted" {
		t.Errorf("fail: %q, want AGENT:Interrupted", failed.StatusMessage)
	}
	steps := stepsOf(pub2.eventsOf("fail", 1))
	if steps["long"].Error != "INTERRUPTED" || steps["next"].Status != patchmsg.StepSkipped {
		t.Errorf("fail steps: %+v", steps)
	}
	rerun := pub2.waitCompleted(t, "rerun", 1)
	if rerun.StatusMessage != "AGENT:Success" {
		t.Errorf("rerun: %q, want AGENT:Success; events:\n%s", rerun.StatusMessage, pub2.dump("rerun", 1))
	}
	if b, _ := os.ReadFile(count); strings.TrimSpace(string(b)) != "2" {
		t.Errorf("the rerun step ran %q times, want 2", b)
	}
	if b, _ := os.ReadFile(after); string(b) != "done\n" {
		t.Errorf("the step after ran %q, want once", b)
	}
	for _, id := range []string{"fail", "rerun"} {
		if first := pub2.eventsOf(id, 1)[0]; first.Seq <= lastSeq[id] {
			t.Errorf("%s: seq restarted at %d after the restart (last before: %d)", id, first.Seq, lastSeq[id])
		}
	}
	r2.Close()

	// Finished but not reported (a crash between journal and outbox): the
	// next start re-sends the same completed event.
	path := filepath.Join(state, journalDir, "rerun.1.json")
	var rec record
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	rec.Reported = false
	b, _ = json.Marshal(rec)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	pub3 := &recorder{}
	r3 := newRunner(t, state, pub3, nil)
	again := pub3.waitCompleted(t, "rerun", 1)
	if again.Seq != rerun.Seq || again.StatusMessage != rerun.StatusMessage {
		t.Errorf("re-sent completion %+v, want the journaled %+v", again, rerun)
	}
	if len(pub3.eventsOf("fail", 1)) != 0 {
		t.Errorf("a reported patch was reported again on start")
	}
	hello := r3.Patches()
	if len(hello) != 2 || hello[0].State != stateFinished || hello[1].State != stateFinished {
		t.Errorf("Patches() = %+v", hello)
	}
}

func TestDuplicateDispatch(t *testing.T) {
	t.Parallel()
	srv := testservers.StartSSHD(t, testservers.SSHDOptions{})
	state := t.TempDir()
	ran := filepath.Join(deviceDir(t), "ran")
	pub := &recorder{}
	r := newRunner(t, state, pub, nil)
	job := newJob("dup", sshTarget(t, srv, state, "dev-1"), patchmsg.StepSpec{Name: "once", Run: "echo x >> " + ran + "; sleep 1"})
	payload, _ := json.Marshal(job)
	r.HandleMessage(t.Context(), "patches/dup/start", payload)
	r.HandleMessage(t.Context(), "patches/dup/start", payload) // QoS 1 redelivery while queued or running
	first := pub.waitCompleted(t, "dup", 1)
	r.Handle(job) // re-dispatch after it finished
	completions := 0
	for deadline := 0; deadline < 200 && completions < 2; deadline++ {
		completions = 0
		for _, e := range pub.eventsOf("dup", 1) {
			if e.Type == patchmsg.EventCompleted {
				completions++
				if e.Seq != first.Seq || e.StatusMessage != first.StatusMessage {
					t.Errorf("re-reported completion %+v differs from %+v", e, first)
				}
			}
		}
		if completions < 2 {
			waitBriefly()
		}
	}
	if completions != 2 {
		t.Errorf("completed reported %d times, want 2 (run once + re-report)", completions)
	}
	accepted, connected := 0, 0
	for _, e := range pub.eventsOf("dup", 1) {
		switch e.Type {
		case patchmsg.EventAccepted:
			accepted++
		case patchmsg.EventConnected:
			connected++
		}
	}
	if connected != 1 || accepted < 1 {
		t.Errorf("accepted %d and connected %d times, want at least 1 and exactly 1", accepted, connected)
	}
	if b, _ := os.ReadFile(ran); string(b) != "x\n" {
		t.Errorf("step ran %q, want once", b)
	}
}

func TestConcurrencyAndLanes(t *testing.T) {
	t.Parallel()
	srv := testservers.StartSSHD(t, testservers.SSHDOptions{})
	state := t.TempDir()
	pub := &recorder{}
	r := newRunner(t, state, pub, func(c *Config) { c.Concurrency = 2 })
	type jobRef struct{ id, dev string }
	var jobs []jobRef
	for _, dev := range []string{"dev-a", "dev-b", "dev-c"} {
		for _, n := range []string{"1", "2"} {
			id := dev + "-" + n
			jobs = append(jobs, jobRef{id, dev})
			r.Handle(newJob(id, sshTarget(t, srv, state, dev), patchmsg.StepSpec{Name: "s", Run: "sleep 1"}))
		}
	}
	for _, j := range jobs {
		if done := pub.waitCompleted(t, j.id, 1); done.Status != patchmsg.PatchSuccess {
			t.Fatalf("%s: %q", j.id, done.StatusMessage)
		}
	}
	waitFor(t, "the last slot to be released", func() bool { return r.Stats().InFlight == 0 })
	if st := r.Stats(); st.MaxInFlight != 2 || st.Queued != 0 {
		t.Errorf("stats %+v, want at most (and at some point) 2 in flight", st)
	}
	// From the event stream: between a patch's connected and completed no
	// other patch of the same device connects, and never more than 2 run.
	pub.mu.Lock()
	evs := append([]patchmsg.Event(nil), pub.events...)
	pub.mu.Unlock()
	devOf := map[string]string{}
	for _, j := range jobs {
		devOf[j.id] = j.dev
	}
	busy := map[string]string{}
	running, maxRunning := 0, 0
	for _, e := range evs {
		switch e.Type {
		case patchmsg.EventConnected:
			if other := busy[devOf[e.PatchID]]; other != "" {
				t.Errorf("%s connected while %s still ran on %s", e.PatchID, other, devOf[e.PatchID])
			}
			busy[devOf[e.PatchID]] = e.PatchID
			running++
			maxRunning = max(maxRunning, running)
		case patchmsg.EventCompleted:
			busy[devOf[e.PatchID]] = ""
			running--
		}
	}
	if maxRunning > 2 {
		t.Errorf("%d patches ran at once, limit 2", maxRunning)
	}
}

func TestRejections(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	pub := &recorder{}
	// A device that accepts TCP but never speaks SSH keeps the first patch
	// connecting, so the next waits in the queue.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	r := newRunner(t, state, pub, func(c *Config) { c.Concurrency = 1; c.MaxQueued = 1 })
	setCred(t, state, "k", []byte("not a key but present"))
	port := l.Addr().(*net.TCPAddr).Port
	target := func(dev string) patchmsg.Target {
		return patchmsg.Target{DeviceID: dev, CoreName: "core-1", Connection: patchmsg.Connection{Type: patchmsg.ConnSSH,
			Host: "127.0.0.1", Port: port, Username: "root", HostKeyPolicy: patchmsg.HostKeyInsecure, ConnectTimeoutSeconds: 60,
			Auth: &patchmsg.Auth{Method: patchmsg.AuthPassword, CredentialRef: "core:k"}}}
	}
	step := patchmsg.StepSpec{Name: "s", Run: "true"}
	r.Handle(newJob("hangs", target("d1"), step))
	pub.waitEvent(t, "hangs", 1, "accepted", func(e patchmsg.Event) bool { return e.Type == patchmsg.EventAccepted })
	waitFor(t, "the first patch to take the only slot", func() bool { return r.Stats().InFlight == 1 })
	r.Handle(newJob("waits", target("d2"), step))

	cases := []struct {
		id     string
		job    func() patchmsg.Job
		reason string
		text   string
	}{
		{"busy", func() patchmsg.Job { return newJob("busy", target("d3"), step) }, patchmsg.RejectBusy, "waiting"},
		{"nocred", func() patchmsg.Job {
			j := newJob("nocred", target("d4"), step)
			j.Target.Connection.Auth.CredentialRef = "core:missing"
			return j
		}, patchmsg.RejectCredentialMissing, "ggagent credentials set missing"},
		{"othercore", func() patchmsg.Job {
			j := newJob("othercore", target("d5"), step)
			j.Target.CoreName = "core-2"
			return j
		}, patchmsg.RejectUnknownTarget, "core-2"},
		{"notarget", func() patchmsg.Job {
			j := newJob("notarget", target("d6"), step)
			j.Target = patchmsg.Target{}
			return j
		}, patchmsg.RejectUnknownTarget, "no connection profile"},
		{"dupsteps", func() patchmsg.Job { return newJob("dupsteps", target("d7"), step, step) }, patchmsg.RejectBadJob, "used twice"},
		{"badfile", func() patchmsg.Job {
			j := newJob("badfile", target("d8"), step)
			j.Template.Files = []patchmsg.FileSpec{{Path: "/tmp/x", Source: patchmsg.FileSource{Inline: "%%%"}}}
			return j
		}, patchmsg.RejectBadJob, "base64"},
		{"badtemplate", func() patchmsg.Job {
			return newJob("badtemplate", target("d9"), patchmsg.StepSpec{Name: "s", Run: "echo {{ .Vars.nope }}"})
		}, patchmsg.RejectBadJob, "nope"},
		{"urlnosum", func() patchmsg.Job {
			j := newJob("urlnosum", target("d10"), step)
			j.Template.Files = []patchmsg.FileSpec{{Path: "/tmp/x", Source: patchmsg.FileSource{URL: "https://example.com/x"}}}
			return j
		}, patchmsg.RejectBadJob, "sha256 is required"},
	}
	for _, c := range cases {
		t.Run(c.id, func(t *testing.T) {
			r.Handle(c.job())
			e := pub.waitEvent(t, c.id, 1, "rejected", func(e patchmsg.Event) bool { return e.Type == patchmsg.EventRejected })
			if e.Reason != c.reason || !strings.Contains(e.StatusMessage, c.text) {
				t.Errorf("rejected %s %q, want %s mentioning %q", e.Reason, e.StatusMessage, c.reason, c.text)
			}
		})
	}
	t.Run("undecodable", func(t *testing.T) {
		r.HandleMessage(t.Context(), "patches/garbled/start", []byte(`{"version":1,"patchId":"garbled","attempt":2,"deviceId":7}`))
		e := pub.waitEvent(t, "garbled", 2, "rejected", func(e patchmsg.Event) bool { return e.Type == patchmsg.EventRejected })
		if e.Reason != patchmsg.RejectBadJob {
			t.Errorf("reason %s, want BAD_JOB", e.Reason)
		}
	})
	for _, id := range []string{"hangs", "waits"} {
		for _, e := range pub.eventsOf(id, 1) {
			if e.Type == patchmsg.EventRejected {
				t.Errorf("%s was rejected: %+v", id, e)
			}
		}
	}
}
