package patches_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/patches"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

// published is one message the recording publisher got.
type published struct {
	Thing, Suffix string
	Payload       []byte
}

type recPublisher struct {
	mu  sync.Mutex
	msg []published
}

func (p *recPublisher) Publish(ctx context.Context, thing, suffix string, payload []byte, retained bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msg = append(p.msg, published{thing, suffix, payload})
	return nil
}

// take returns and forgets what was published.
func (p *recPublisher) take() []published {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.msg
	p.msg = nil
	return m
}

// memBlobs is an in-memory artifact store.
type memBlobs struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (b *memBlobs) PutArtifact(ctx context.Context, key, ct string, data []byte) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.m[key] = append([]byte(nil), data...)
	return "local", nil
}

func (b *memBlobs) GetArtifact(ctx context.Context, key string) ([]byte, string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d, ok := b.m[key]
	if !ok {
		return nil, "", errkind.New(errkind.NotFound, "artifact %s does not exist", key)
	}
	return d, "application/octet-stream", nil
}

type env struct {
	t     *testing.T
	ctx   context.Context
	db    *sqlstore.DB
	pub   *recPublisher
	blobs *memBlobs
	mu    sync.Mutex
	now   time.Time
	svc   *patches.Service
	seq   map[string]int64
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	db := sqlstoretest.Open(t)
	e := &env{t: t, ctx: ctx, db: db, pub: &recPublisher{}, blobs: &memBlobs{m: map[string][]byte{}},
		now: time.UnixMilli(1_700_000_000_000).UTC(), seq: map[string]int64{}}
	e.start()
	return e
}

// start builds a service on the environment's database, as a restarted
// broker would.
func (e *env) start() {
	e.svc = patches.New(patches.Config{Store: e.db, Publisher: e.pub, Blobs: e.blobs, URLKey: []byte("0123456789abcdef0123456789abcdef"),
		BaseURL: "https://broker.example:8443", Now: e.clock})
}

func (e *env) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	e.now = e.now.Add(d)
	e.mu.Unlock()
}

func (e *env) tick() {
	e.t.Helper()
	if err := e.svc.Tick(e.ctx); err != nil {
		e.t.Fatalf("tick: %v", err)
	}
}

func (e *env) template(name string, enabled bool) {
	e.t.Helper()
	in := patches.TemplateInput{Name: name, Enabled: &enabled, ExtraVars: map[string]string{"common": "c", "over": "template"},
		Steps: []patchmsg.StepSpec{{Name: "one", Run: "echo one"}, {Name: "two", Run: "echo two"}}}
	if err := e.svc.CreateTemplate(e.ctx, in); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) target(device, core string) {
	e.t.Helper()
	_, err := e.svc.PutTarget(e.ctx, device, patchmsg.Target{CoreName: core, Connection: patchmsg.Connection{Type: patchmsg.ConnSSH,
		Host: "192.0.2.1", Port: 22, Username: "root", HostKeyPolicy: patchmsg.HostKeyTOFU,
		Auth: &patchmsg.Auth{Method: patchmsg.AuthPrivateKey, CredentialRef: "core:key"}}})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) submit(in patches.NewTask) string {
	e.t.Helper()
	id, err := e.svc.Submit(e.ctx, in)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *env) patches(taskID string) []patches.Patch {
	e.t.Helper()
	ps, _, err := e.svc.ListTaskPatches(e.ctx, taskID, 1000, "")
	if err != nil {
		e.t.Fatal(err)
	}
	return ps
}

func (e *env) patch(id string) patches.Patch {
	e.t.Helper()
	p, err := e.svc.GetPatch(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// jobs decodes the start messages published since the last call.
func (e *env) jobs() []patchmsg.Job {
	e.t.Helper()
	var out []patchmsg.Job
	for _, m := range e.pub.take() {
		if !strings.HasSuffix(m.Suffix, "/start") {
			continue
		}
		j, err := patchmsg.Decode[patchmsg.Job](m.Payload)
		if err != nil {
			e.t.Fatalf("job: %v", err)
		}
		out = append(out, j)
	}
	return out
}

// event sends an agent event with the next sequence number of the attempt.
func (e *env) event(core string, id string, attempt int, ev patchmsg.Event) {
	e.t.Helper()
	key := fmt.Sprintf("%s/%d", id, attempt)
	e.seq[key]++
	ev.Version, ev.PatchID, ev.Attempt, ev.Seq, ev.TS = 1, id, attempt, e.seq[key], e.clock()
	b, _ := json.Marshal(ev)
	if err := e.svc.HandleMessage(e.ctx, core, patchmsg.EventsTopic(id), b); err != nil {
		e.t.Fatalf("event: %v", err)
	}
}

func (e *env) complete(core, id string, attempt int, status, msg string) {
	e.t.Helper()
	e.event(core, id, attempt, patchmsg.Event{Type: patchmsg.EventAccepted})
	e.event(core, id, attempt, patchmsg.Event{Type: patchmsg.EventCompleted, Status: status, StatusMessage: msg})
}

func devices(n int, tpl string) []patches.NewPatch {
	var out []patches.NewPatch
	for i := range n {
		out = append(out, patches.NewPatch{DeviceID: fmt.Sprintf("dev%d", i), PatchTemplateName: tpl})
	}
	return out
}

func active(ps []patches.Patch) int {
	n := 0
	for _, p := range ps {
		if !p.Final() && p.StatusMessage != "" {
			n++
		}
	}
	return n
}

func TestMaxConcurrencyIsNeverExceeded(t *testing.T) {
	for _, tc := range []struct{ patches, maxConcurrency int }{{5, 2}, {3, 1}, {4, 10}} {
		t.Run(fmt.Sprintf("%d patches, maxConcurrency %d", tc.patches, tc.maxConcurrency), func(t *testing.T) {
			e := newEnv(t)
			e.template("tpl", true)
			for i := range tc.patches {
				e.target(fmt.Sprintf("dev%d", i), "core1")
			}
			taskID := e.submit(patches.NewTask{Patches: devices(tc.patches, "tpl"), MaxConcurrency: &tc.maxConcurrency})
			done := 0
			for round := 0; done < tc.patches; round++ {
				if round > tc.patches+2 {
					t.Fatalf("no progress after %d rounds", round)
				}
				e.tick()
				e.tick() // a second tick must not start more
				jobs := e.jobs()
				ps := e.patches(taskID)
				if n := active(ps); n > tc.maxConcurrency {
					t.Fatalf("%d patches running, maxConcurrency is %d", n, tc.maxConcurrency)
				}
				if want := min(tc.maxConcurrency, tc.patches-done); len(jobs) != want {
					t.Fatalf("round %d: %d jobs sent, want %d", round, len(jobs), want)
				}
				for _, j := range jobs {
					if j.Vars["common"] != "c" || j.Target.CoreName != "core1" || len(j.Template.Steps) != 2 {
						t.Errorf("job: %+v", j)
					}
					e.complete("core1", j.PatchID, j.Attempt, patchmsg.PatchSuccess, "")
					done++
				}
			}
			task, err := e.svc.GetTask(e.ctx, taskID)
			if err != nil || task.Status != patches.TaskSuccess || task.Counts["success"] != tc.patches {
				t.Errorf("task: %+v %v", task, err)
			}
		})
	}
}

func TestMaxFailuresStopsTheTask(t *testing.T) {
	e := newEnv(t)
	e.template("tpl", true)
	for i := range 4 {
		e.target(fmt.Sprintf("dev%d", i), "core1")
	}
	one := 1
	taskID := e.submit(patches.NewTask{Patches: devices(4, "tpl"), Options: &patches.TaskOptions{MaxConcurrency: 1, MaxFailures: 1}})
	e.tick()
	jobs := e.jobs()
	if len(jobs) != one {
		t.Fatalf("%d jobs, want 1", len(jobs))
	}
	e.complete("core1", jobs[0].PatchID, 1, patchmsg.PatchFailed, "AGENT:Failed:one:exit=2")
	e.tick()
	if j := e.jobs(); len(j) != 0 {
		t.Fatalf("a stopped task sent %d more jobs", len(j))
	}
	for i, p := range e.patches(taskID) {
		want := patches.MsgNotStarted
		if i == 0 {
			want = "AGENT:Failed:one:exit=2"
		}
		if p.PatchStatus != patchmsg.PatchFailed || p.StatusMessage != want {
			t.Errorf("patch %d: %s %s, want failed %s", i, p.PatchStatus, p.StatusMessage, want)
		}
	}
}

func TestDispatchFailures(t *testing.T) {
	e := newEnv(t)
	e.template("on", true)
	e.template("off", false)
	e.target("has-target", "core1")
	taskID := e.submit(patches.NewTask{Patches: []patches.NewPatch{
		{DeviceID: "has-target", PatchTemplateName: "off"},
		{DeviceID: "no-target", PatchTemplateName: "on"},
		{DeviceID: "has-target", PatchTemplateName: "missing"},
	}})
	e.tick()
	want := []string{patches.MsgTemplateDisabled, patches.MsgActivationNotFound, patches.MsgTemplateNotFound}
	for i, p := range e.patches(taskID) {
		if p.PatchStatus != patchmsg.PatchFailed || p.StatusMessage != want[i] {
			t.Errorf("patch %d: %s %s, want failed %s", i, p.PatchStatus, p.StatusMessage, want[i])
		}
	}
	if j := e.jobs(); len(j) != 0 {
		t.Errorf("%d jobs sent for patches that cannot run", len(j))
	}
}

func TestTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		deadline int
		accept   bool
		advance  time.Duration
		want     string
	}{
		{"no agent acknowledges", 0, false, patches.DefaultDispatchTimeout, patches.MsgNoAck},
		{"not yet", 0, false, patches.DefaultDispatchTimeout - time.Minute, patches.MsgQueued},
		{"task deadline", 600, true, 10 * time.Minute, patches.MsgDeadline},
		{"agent silent past the deadline", 0, true, patches.DefaultDispatchTimeout + time.Minute, patches.MsgLost},
		{"agent silent before the deadline", 0, true, time.Hour, patches.MsgInProgress},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.template("tpl", true)
			e.target("dev0", "core1")
			taskID := e.submit(patches.NewTask{Patches: devices(1, "tpl"), DeadlineSeconds: &tc.deadline})
			e.tick()
			jobs := e.jobs()
			if len(jobs) != 1 {
				t.Fatalf("%d jobs", len(jobs))
			}
			if tc.accept {
				e.event("core1", jobs[0].PatchID, 1, patchmsg.Event{Type: patchmsg.EventAccepted})
			}
			e.advance(tc.advance)
			e.tick()
			p := e.patches(taskID)[0]
			if p.StatusMessage != tc.want {
				t.Errorf("status %s %s, want %s", p.PatchStatus, p.StatusMessage, tc.want)
			}
			var cancels int
			for _, m := range e.pub.take() {
				if strings.HasSuffix(m.Suffix, "/cancel") {
					cancels++
				}
			}
			if wantCancel := tc.want == patches.MsgDeadline || tc.want == patches.MsgLost; (cancels > 0) != wantCancel {
				t.Errorf("%d cancels sent", cancels)
			}
		})
	}
}

func TestEventsAreAppliedOnce(t *testing.T) {
	e := newEnv(t)
	e.template("tpl", true)
	e.target("dev0", "core1")
	taskID := e.submit(patches.NewTask{Patches: devices(1, "tpl")})
	e.tick()
	id := e.jobs()[0].PatchID
	send := func(core string, ev patchmsg.Event) {
		t.Helper()
		ev.Version, ev.PatchID = 1, id
		if ev.Attempt == 0 {
			ev.Attempt = 1
		}
		b, _ := json.Marshal(ev)
		if err := e.svc.HandleMessage(e.ctx, core, patchmsg.EventsTopic(id), b); err != nil {
			t.Fatal(err)
		}
	}
	send("core1", patchmsg.Event{Seq: 1, Type: patchmsg.EventAccepted})
	send("core1", patchmsg.Event{Seq: 2, Type: patchmsg.EventStepStarted, Step: &patchmsg.StepResult{Index: 1, Name: "two", Status: patchmsg.StepRunning}})
	if p := e.patch(id); p.PatchStatus != patchmsg.PatchPending || p.StatusMessage != "AGENT:InProgress:2/2:two" || p.Steps[1].Status != patchmsg.StepRunning {
		t.Fatalf("after step-started: %s %s %+v", p.PatchStatus, p.StatusMessage, p.Steps)
	}
	// A repeat of seq 2, an older seq, another core and a future attempt change nothing.
	send("core1", patchmsg.Event{Seq: 2, Type: patchmsg.EventCompleted, Status: patchmsg.PatchFailed})
	send("core1", patchmsg.Event{Seq: 1, Type: patchmsg.EventCompleted, Status: patchmsg.PatchFailed})
	send("core2", patchmsg.Event{Seq: 9, Type: patchmsg.EventCompleted, Status: patchmsg.PatchFailed})
	send("core1", patchmsg.Event{Seq: 9, Attempt: 2, Type: patchmsg.EventCompleted, Status: patchmsg.PatchFailed})
	if p := e.patch(id); p.PatchStatus != patchmsg.PatchPending {
		t.Fatalf("a duplicate or foreign event was applied: %s %s", p.PatchStatus, p.StatusMessage)
	}
	exit := 0
	send("core1", patchmsg.Event{Seq: 3, Type: patchmsg.EventStepFinished, Step: &patchmsg.StepResult{Index: 1, Name: "two", Status: patchmsg.StepSuccess, ExitCode: &exit}})
	send("core1", patchmsg.Event{Seq: 4, Type: patchmsg.EventCompleted, Status: patchmsg.PatchSuccess})
	send("core1", patchmsg.Event{Seq: 5, Type: patchmsg.EventCompleted, Status: patchmsg.PatchFailed})
	p := e.patch(id)
	if p.PatchStatus != patchmsg.PatchSuccess || p.StatusMessage != patches.MsgSuccess || p.Steps[1].Status != patchmsg.StepSuccess {
		t.Errorf("final: %s %s %+v", p.PatchStatus, p.StatusMessage, p.Steps)
	}
	steps, err := e.svc.Steps(e.ctx, id)
	if err != nil || len(steps) != 2 || steps[0].Name != "one" {
		t.Errorf("steps: %+v %v", steps, err)
	}
	if task, _ := e.svc.GetTask(e.ctx, taskID); task.Status != patches.TaskSuccess {
		t.Errorf("task status %s", task.Status)
	}
}

func TestRetryAndCancel(t *testing.T) {
	e := newEnv(t)
	e.template("tpl", true)
	e.target("dev0", "core1")
	taskID := e.submit(patches.NewTask{Patches: devices(1, "tpl")})
	e.tick()
	id := e.jobs()[0].PatchID
	e.complete("core1", id, 1, patchmsg.PatchFailed, "AGENT:Failed:two:exit=1")

	p, err := e.svc.Retry(e.ctx, id)
	if err != nil || p.Attempt != 2 || p.PatchStatus != patchmsg.PatchRetry || p.StatusMessage != "" || p.Steps != nil {
		t.Fatalf("retry: %+v %v", p, err)
	}
	e.start() // the attempt is persisted: a restarted broker dispatches it
	e.tick()
	jobs := e.jobs()
	if len(jobs) != 1 || jobs[0].Attempt != 2 {
		t.Fatalf("retry jobs: %+v", jobs)
	}
	// Events of attempt 1 no longer count.
	e.event("core1", id, 1, patchmsg.Event{Type: patchmsg.EventCompleted, Status: patchmsg.PatchSuccess})
	if p := e.patch(id); p.PatchStatus != patchmsg.PatchRetry {
		t.Fatalf("an old attempt's event was applied: %s", p.PatchStatus)
	}
	e.event("core1", id, 2, patchmsg.Event{Type: patchmsg.EventAccepted})
	p, err = e.svc.Cancel(e.ctx, id)
	if err != nil || p.PatchStatus != patchmsg.PatchFailed || p.StatusMessage != patches.MsgCancelled {
		t.Fatalf("cancel: %+v %v", p, err)
	}
	var cancel *patchmsg.Cancel
	for _, m := range e.pub.take() {
		if m.Suffix == patchmsg.CancelTopic(id) && m.Thing == "core1" {
			c, err := patchmsg.Decode[patchmsg.Cancel](m.Payload)
			if err != nil {
				t.Fatal(err)
			}
			cancel = &c
		}
	}
	if cancel == nil || cancel.Attempt != 2 {
		t.Fatalf("cancel message: %+v", cancel)
	}
	if _, err := e.svc.Cancel(e.ctx, id); !errkind.Is(err, errkind.Conflict) {
		t.Errorf("cancel of a finished patch: %v, want Conflict", err)
	}
	if err := e.svc.DeletePatch(e.ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.GetPatch(e.ctx, id); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("deleted patch: %v", err)
	}
	if ps := e.patches(taskID); len(ps) != 0 {
		t.Errorf("task still lists %d patches", len(ps))
	}
}

func TestHelloResendsUnacknowledgedJobs(t *testing.T) {
	e := newEnv(t)
	e.template("tpl", true)
	e.target("dev0", "core1")
	e.target("dev1", "core1")
	e.submit(patches.NewTask{Patches: devices(2, "tpl")})
	e.tick()
	jobs := e.jobs()
	e.event("core1", jobs[1].PatchID, 1, patchmsg.Event{Type: patchmsg.EventAccepted})
	// The agent knows neither: only the one it never accepted is sent again.
	if err := e.svc.HandleHello(e.ctx, "core1", nil); err != nil {
		t.Fatal(err)
	}
	again := e.jobs()
	if len(again) != 1 || again[0].PatchID != jobs[0].PatchID {
		t.Fatalf("re-sent %+v", again)
	}
	// A hello that lists it sends nothing.
	if err := e.svc.HandleHello(e.ctx, "core1", []mqttmsg.PatchState{{PatchID: jobs[0].PatchID, Attempt: 1, State: "queued"}}); err != nil {
		t.Fatal(err)
	}
	if again := e.jobs(); len(again) != 0 {
		t.Fatalf("re-sent a job the agent has: %+v", again)
	}
}

func TestLogsAndProbes(t *testing.T) {
	e := newEnv(t)
	e.template("tpl", true)
	e.target("dev0", "core1")
	e.submit(patches.NewTask{Patches: devices(1, "tpl")})
	e.tick()
	id := e.jobs()[0].PatchID
	for i, data := range []string{"hello ", "world\n"} {
		b, _ := json.Marshal(patchmsg.LogChunk{Version: 1, PatchID: id, Attempt: 1, Step: "one", Stream: "stdout", Seq: int64(i), Data: data})
		for range 2 { // a repeated chunk is stored once
			if err := e.svc.HandleMessage(e.ctx, "core1", patchmsg.LogsTopic(id), b); err != nil {
				t.Fatal(err)
			}
		}
	}
	b, _ := json.Marshal(patchmsg.LogChunk{Version: 1, PatchID: id, Attempt: 1, Step: "one", Stream: "stdout", Seq: 5, Data: "intruder"})
	_ = e.svc.HandleMessage(e.ctx, "core2", patchmsg.LogsTopic(id), b)
	logs, err := e.svc.Logs(e.ctx, id, 0, "one", "stdout")
	if err != nil || string(logs) != "hello world\n" {
		t.Errorf("logs = %q, %v", logs, err)
	}
	if p := e.patch(id); p.Logs == nil || !p.Logs.Available || p.Logs.Bytes != 12 {
		t.Errorf("logs info %+v", p.Logs)
	}

	probe, err := e.svc.ProbeTarget(e.ctx, "dev0")
	if err != nil || probe.Status != patches.ProbeRequested {
		t.Fatal(probe, err)
	}
	msgs := e.pub.take()
	if len(msgs) != 1 || msgs[0].Thing != "core1" || msgs[0].Suffix != patchmsg.ProbeTopic("dev0") {
		t.Fatalf("probe messages %+v", msgs)
	}
	for _, r := range []patchmsg.ProbeResult{
		{Version: 1, ProbeID: "stale", DeviceID: "dev0", OK: false, Error: "old"},
		{Version: 1, ProbeID: probe.ProbeID, DeviceID: "dev0", OK: true, Uname: "Linux dev0", HostKeyFingerprint: "SHA256:x"},
	} {
		b, _ := json.Marshal(r)
		if err := e.svc.HandleMessage(e.ctx, "core1", patchmsg.ProbeResultTopic("dev0"), b); err != nil {
			t.Fatal(err)
		}
	}
	tg, err := e.svc.GetTarget(e.ctx, "dev0")
	if err != nil || tg.LastProbe == nil || tg.LastProbe.Status != patches.ProbeOK || tg.LastProbe.Uname != "Linux dev0" {
		t.Errorf("last probe %+v %v", tg.LastProbe, err)
	}
}

func TestPlaybookTemplateAndBigFiles(t *testing.T) {
	e := newEnv(t)
	playbook := "- hosts: all\n"
	big := strings.Repeat("x", patches.InlineLimit+1)
	err := e.svc.CreateTemplate(e.ctx, patches.TemplateInput{Name: "cdf", PatchType: ptr("agentbased"), PlaybookName: ptr("play.yml"),
		PlaybookFileContents: ptr(base64.StdEncoding.EncodeToString([]byte(playbook))), ExtraVars: map[string]string{"b": "two", "a": "one"}})
	if err != nil {
		t.Fatal(err)
	}
	err = e.svc.CreateTemplate(e.ctx, patches.TemplateInput{Name: "v2",
		Files: []patchmsg.FileSpec{{Path: "/opt/big", Source: patchmsg.FileSource{Inline: base64.StdEncoding.EncodeToString([]byte(big))}},
			{Path: "/opt/art", Source: patchmsg.FileSource{Artifact: "tool.bin"}, SHA256: sha("tool")}},
		Steps: []patchmsg.StepSpec{{Name: "s", Run: "true"}}})
	if err != nil {
		t.Fatal(err)
	}
	tpl, _ := e.svc.GetTemplate(e.ctx, "v2", 0)
	if tpl.PatchType != patches.TypeAgentless {
		t.Errorf("v2 template patchType %q", tpl.PatchType)
	}
	e.target("dev0", "core1")
	e.target("dev1", "core1")
	taskID := e.submit(patches.NewTask{Patches: []patches.NewPatch{{DeviceID: "dev0", PatchTemplateName: "cdf", ExtraVars: map[string]string{"b": "mine"}},
		{DeviceID: "dev1", PatchTemplateName: "v2"}}})
	e.tick()
	jobs := e.jobs()
	if len(jobs) != 1 {
		t.Fatalf("%d jobs, want the cdf one only", len(jobs))
	}
	j := jobs[0]
	wantRun := `ansible-playbook -i "localhost," -c local -e "a=b25l b=bWluZQ==" -v '/var/lib/ggpatch/cdf___play.yml'`
	if len(j.Template.Steps) != 1 || j.Template.Steps[0].Run != wantRun || j.Template.VarsEncoding != "base64" ||
		len(j.Template.Files) != 1 || j.Template.Files[0].Path != "/var/lib/ggpatch/cdf___play.yml" || j.Template.Files[0].SHA256 != sha(playbook) {
		t.Errorf("cdf job template: %+v", j.Template)
	}
	if p := e.patches(taskID)[1]; p.StatusMessage != patches.MsgArtifactNotFound+":tool.bin" {
		t.Errorf("patch without its artifact: %s %s", p.PatchStatus, p.StatusMessage)
	}

	if _, err := e.svc.PutArtifact(e.ctx, "v2", "tool.bin", []byte("tool")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.PutArtifact(e.ctx, "nope", "tool.bin", []byte("tool")); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("artifact of a missing template: %v", err)
	}
	e.submit(patches.NewTask{Patches: []patches.NewPatch{{DeviceID: "dev1", PatchTemplateName: "v2"}}})
	e.tick()
	jobs = e.jobs()
	if len(jobs) != 1 || len(jobs[0].Template.Files) != 2 {
		t.Fatalf("v2 jobs: %+v", jobs)
	}
	var last url.Values
	var lastSum string
	for _, f := range jobs[0].Template.Files {
		if f.Source.Inline != "" || f.Source.Artifact != "" || f.Source.URL == "" {
			t.Fatalf("file %s goes by URL: %+v", f.Path, f.Source)
		}
		u, err := url.Parse(f.Source.URL)
		if err != nil || u.Host != "broker.example:8443" {
			t.Fatalf("url %q", f.Source.URL)
		}
		sum := strings.TrimPrefix(u.Path, "/patchBlobs/")
		q := u.Query()
		data, err := e.svc.Blob(e.ctx, sum, q.Get("expires"), q.Get("signature"))
		if err != nil || sha(string(data)) != f.SHA256 {
			t.Errorf("blob of %s: %d bytes, %v", f.Path, len(data), err)
		}
		if _, err := e.svc.Blob(e.ctx, sum, q.Get("expires"), strings.Repeat("0", 64)); !errkind.Is(err, errkind.Forbidden) {
			t.Errorf("a wrong signature: %v", err)
		}
		last, lastSum = q, sum
	}
	e.advance(patches.DefaultDispatchTimeout + 2*time.Hour)
	if _, err := e.svc.Blob(e.ctx, lastSum, last.Get("expires"), last.Get("signature")); !errkind.Is(err, errkind.Forbidden) {
		t.Errorf("an expired URL: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

func sha(s string) string {
	h := patches.SHA256Hex([]byte(s))
	return h
}

func TestTemplateValidation(t *testing.T) {
	good := func() patches.TemplateInput {
		return patches.TemplateInput{Name: "t", Steps: []patchmsg.StepSpec{{Name: "a", Run: "true"}},
			Files: []patchmsg.FileSpec{{Path: "/etc/x", Mode: "0644", Source: patchmsg.FileSource{Inline: "eA=="}}}}
	}
	for _, tc := range []struct {
		name   string
		change func(*patches.TemplateInput)
		want   string
	}{
		{"ok", func(*patches.TemplateInput) {}, ""},
		{"templated path", func(in *patches.TemplateInput) { in.Files[0].Path = "{{ .Vars.dir }}/x" }, ""},
		{"no name", func(in *patches.TemplateInput) { in.Name = "" }, "name is required"},
		{"nothing to run", func(in *patches.TemplateInput) { in.Steps = nil }, "give steps"},
		{"duplicate step", func(in *patches.TemplateInput) { in.Steps = append(in.Steps, in.Steps[0]) }, "must be unique"},
		{"empty run", func(in *patches.TemplateInput) { in.Steps[0].Run = " " }, "steps[0].run is required"},
		{"two sources", func(in *patches.TemplateInput) { in.Files[0].Source.URL = "https://x" }, "exactly one of"},
		{"no source", func(in *patches.TemplateInput) { in.Files[0].Source.Inline = "" }, "exactly one of"},
		{"url without sha", func(in *patches.TemplateInput) { in.Files[0].Source = patchmsg.FileSource{URL: "https://x/y"} }, "sha256 is required"},
		{"artifact without sha", func(in *patches.TemplateInput) { in.Files[0].Source = patchmsg.FileSource{Artifact: "a"} }, "sha256 is required"},
		{"bad mode", func(in *patches.TemplateInput) { in.Files[0].Mode = "rw-r--r--" }, "must be octal"},
		{"relative path", func(in *patches.TemplateInput) { in.Files[0].Path = "etc/x" }, "must be absolute"},
		{"bad base64", func(in *patches.TemplateInput) { in.Files[0].Source.Inline = "%%%" }, "must be base64"},
		{"bad onInterrupt", func(in *patches.TemplateInput) { in.Steps[0].OnInterrupt = "retry" }, "onInterrupt must be"},
		{"bad var", func(in *patches.TemplateInput) { in.ExtraVars = map[string]string{"a-b": "x"} }, `extraVars key "a-b"`},
		{"playbook not base64", func(in *patches.TemplateInput) { in.Steps = nil; in.PlaybookFileContents = ptr("###") }, "playbookFileContents must be base64"},
		{"control char", func(in *patches.TemplateInput) { in.Name = "a\x01" }, "control characters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			in := good()
			tc.change(&in)
			err := e.svc.CreateTemplate(e.ctx, in)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errkind.Is(err, errkind.Invalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want Invalid containing %q", err, tc.want)
			}
		})
	}
}

func TestTemplateVersions(t *testing.T) {
	e := newEnv(t)
	e.template("tpl", true)
	if err := e.svc.CreateTemplate(e.ctx, patches.TemplateInput{Name: "tpl", Steps: []patchmsg.StepSpec{{Name: "a", Run: "x"}}}); !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("duplicate create: %v", err)
	}
	off := false
	v2, err := e.svc.UpdateTemplate(e.ctx, "tpl", patches.TemplateInput{Enabled: &off, ExtraVars: map[string]string{"over": "v2", "new": "n"}})
	if err != nil {
		t.Fatal(err)
	}
	if v2.VersionNo != 2 || v2.Enabled || v2.ExtraVars["common"] != "c" || v2.ExtraVars["over"] != "v2" || v2.ExtraVars["new"] != "n" {
		t.Errorf("v2: %+v", v2)
	}
	v1, err := e.svc.GetTemplate(e.ctx, "tpl", 1)
	if err != nil || v1.VersionNo != 1 || !v1.Enabled || v1.ExtraVars["over"] != "template" {
		t.Errorf("v1 kept: %+v %v", v1, err)
	}
	if _, err := e.svc.UpdateTemplate(e.ctx, "tpl", patches.TemplateInput{}); !errkind.Is(err, errkind.Invalid) {
		t.Errorf("empty update: %v", err)
	}
	if _, err := e.svc.UpdateTemplate(e.ctx, "nope", patches.TemplateInput{Enabled: &off}); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("update of a missing template: %v", err)
	}
}

func TestSubmitValidation(t *testing.T) {
	e := newEnv(t)
	neg := -1
	for _, tc := range []struct {
		name string
		in   patches.NewTask
		want string
	}{
		{"no patches", patches.NewTask{}, "patches is required"},
		{"no device", patches.NewTask{Patches: []patches.NewPatch{{PatchTemplateName: "t"}}}, "patches[0].deviceId is required"},
		{"no template", patches.NewTask{Patches: []patches.NewPatch{{DeviceID: "d"}}}, "patches[0].patchTemplateName is required"},
		{"bad type", patches.NewTask{Patches: []patches.NewPatch{{DeviceID: "d", PatchTemplateName: "t", PatchType: "ssm"}}}, "patchType must be"},
		{"bad device", patches.NewTask{Patches: []patches.NewPatch{{DeviceID: "a/b", PatchTemplateName: "t"}}}, "deviceId \"a/b\" is not valid"},
		{"negative failures", patches.NewTask{Patches: devices(1, "t"), MaxFailures: &neg}, "maxFailures must not be negative"},
		{"negative concurrency", patches.NewTask{Patches: devices(1, "t"), Options: &patches.TaskOptions{MaxConcurrency: -1}}, "maxConcurrency must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.Submit(e.ctx, tc.in)
			if !errkind.Is(err, errkind.Invalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want Invalid containing %q", err, tc.want)
			}
		})
	}
}

func TestTargetsRefuseSecrets(t *testing.T) {
	for _, tc := range []struct {
		body string
		want string
	}{
		{`{"coreName":"c","connection":{"type":"ssh","auth":{"method":"password","password":"hunter2"}}}`, "connection.auth.password looks like a secret"},
		{`{"coreName":"c","connection":{"type":"serial","login":{"passphrase":"x"}}}`, "connection.login.passphrase"},
		{`{"coreName":"c","connection":{"type":"ssh","hostKey":"ssh-ed25519 AAAA"}}`, ""},
	} {
		err := patches.CheckNoSecrets([]byte(tc.body))
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.body, err, tc.want)
		}
	}
	e := newEnv(t)
	_, err := e.svc.PutTarget(e.ctx, "dev0", patchmsg.Target{CoreName: "core1", Connection: patchmsg.Connection{Type: "ssh", Host: "h", Username: "u",
		HostKeyPolicy: "tofu", Auth: &patchmsg.Auth{Method: "password", CredentialRef: "plain-secret"}}})
	if !errkind.Is(err, errkind.Invalid) || !strings.Contains(err.Error(), "core:NAME") {
		t.Errorf("a credentialRef that is not core:NAME: %v", err)
	}
}

// A running patch whose agent went quiet (its reports lost on the way) is
// sent again, at most once a heartbeat interval, so the agent re-reports
// its state; a report keeps it from being re-sent.
func TestQuietRunningPatchIsAskedForItsState(t *testing.T) {
	e := newEnv(t)
	e.template("tpl", true)
	e.target("dev0", "core1")
	e.submit(patches.NewTask{Patches: devices(1, "tpl")})
	e.tick()
	jobs := e.jobs()
	if len(jobs) != 1 {
		t.Fatalf("%d jobs", len(jobs))
	}
	id := jobs[0].PatchID
	e.event("core1", id, 1, patchmsg.Event{Type: patchmsg.EventAccepted})

	steps := []struct {
		name    string
		advance time.Duration
		report  bool
		want    int
	}{
		{"one heartbeat of silence", patches.HeartbeatInterval, false, 0},
		{"two heartbeats of silence", patches.HeartbeatInterval, false, 1},
		{"again at once", time.Second, false, 0},
		{"a heartbeat after the re-send", patches.HeartbeatInterval, false, 1},
		{"the agent answered", time.Second, true, 0},
		{"a heartbeat after the answer", patches.HeartbeatInterval, false, 0},
	}
	for _, st := range steps {
		e.advance(st.advance)
		if st.report {
			e.event("core1", id, 1, patchmsg.Event{Type: patchmsg.EventHeartbeat})
		}
		e.tick()
		got := e.jobs()
		if len(got) != st.want {
			t.Fatalf("%s: %d jobs sent, want %d", st.name, len(got), st.want)
		}
		for _, j := range got {
			if j.PatchID != id || j.Attempt != 1 {
				t.Fatalf("%s: re-sent %s attempt %d, want %s attempt 1", st.name, j.PatchID, j.Attempt, id)
			}
		}
	}
	if p := e.patch(id); p.StatusMessage != patches.MsgInProgress {
		t.Fatalf("status %s %s, want still %s", p.PatchStatus, p.StatusMessage, patches.MsgInProgress)
	}
}
