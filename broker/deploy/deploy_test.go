package deploy_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/cores/corestore"
	"github.com/ggfleet/ggfleet/broker/deploy"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider/local"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/broker/templates"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// published is one message the recording publisher got.
type published struct {
	Thing, Suffix string
	Payload       []byte
	Retained      bool
}

type recPublisher struct {
	mu   sync.Mutex
	msgs []published
	fail bool
}

func (p *recPublisher) Publish(ctx context.Context, thing, suffix string, payload []byte, retained bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail {
		return errors.New("broker down")
	}
	p.msgs = append(p.msgs, published{thing, suffix, payload, retained})
	return nil
}

func (p *recPublisher) last(t *testing.T, thing string) mqttmsg.DeploymentMsg {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.msgs) - 1; i >= 0; i-- {
		if m := p.msgs[i]; m.Thing == thing {
			if m.Suffix != mqttmsg.Deployments || !m.Retained {
				t.Fatalf("published %+v, want retained %s", m, mqttmsg.Deployments)
			}
			msg, err := mqttmsg.Decode[mqttmsg.DeploymentMsg](m.Payload)
			if err != nil {
				t.Fatal(err)
			}
			return msg
		}
	}
	t.Fatalf("nothing published to %s", thing)
	return mqttmsg.DeploymentMsg{}
}

func (p *recPublisher) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.msgs)
}

type event struct {
	Type   string
	Detail any
}

type env struct {
	t       *testing.T
	db      *sqlstore.DB
	prov    *local.Provider
	tmpl    *templates.Service
	pub     *recPublisher
	svc     *deploy.Service
	runner  *tasks.Runner
	mu      sync.Mutex
	queued  []tasks.BatchRef
	events  []event
	now     time.Time
	al      deploy.AssetLibrary
	timeout time.Duration
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db := sqlstoretest.Open(t)
	e := &env{t: t, db: db, pub: &recPublisher{}, now: time.UnixMilli(1_700_000_000_000).UTC()}
	db.SetEnqueuer(func(ctx context.Context, tx *sql.Tx, refs []tasks.BatchRef) error {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.queued = append(e.queued, refs...)
		return nil
	})
	prov, err := local.New(local.Config{Store: db.Registry(), ArtifactsDir: t.TempDir(), Now: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prov.Close() })
	e.prov = prov
	e.tmpl = templates.New(templates.Config{Store: db, Now: e.clock})
	e.start()
	return e
}

func (e *env) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = e.now.Add(d)
}

// start builds a fresh service over the database (also a "restart").
func (e *env) start() {
	e.svc = deploy.New(deploy.Config{
		Tasks: e.db, Store: e.db, Cores: e.db.Cores(), Templates: e.tmpl, Provider: e.prov,
		Publisher: e.pub, AssetLibrary: e.al, DeploymentTimeout: e.timeout, Now: e.clock,
		Events: func(ctx context.Context, detailType string, detail any) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.events = append(e.events, event{detailType, detail})
		},
	})
	e.runner = &tasks.Runner{Store: e.db, Processors: map[tasks.Kind]tasks.Processor{tasks.KindDeployment: e.svc}, Now: e.clock}
}

// drain runs every queued job, as the job queue would.
func (e *env) drain() {
	e.t.Helper()
	for {
		e.mu.Lock()
		if len(e.queued) == 0 {
			e.mu.Unlock()
			return
		}
		ref := e.queued[0]
		e.queued = e.queued[1:]
		e.mu.Unlock()
		if err := e.runner.RunBatch(context.Background(), ref); err != nil {
			e.t.Fatalf("run batch %+v: %v", ref, err)
		}
	}
}

func (e *env) core(name string, registered bool) {
	e.t.Helper()
	ctx := context.Background()
	if err := e.prov.CreateThing(ctx, name, "", nil); err != nil {
		e.t.Fatal(err)
	}
	if err := e.db.Cores().EnsureCores(ctx, []string{name}, e.clock()); err != nil {
		e.t.Fatal(err)
	}
	if registered {
		if err := e.prov.MarkCoreRegistered(ctx, name); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *env) template(name string, version string) {
	e.t.Helper()
	in := cdf.EditableTemplate{Name: name, Components: []cdf.Component{
		{Key: "aws.greengrass.Cli", Version: version},
		{Key: "com.example.App", Version: "1.0.0", ConfigurationUpdate: &cdf.ConfigurationUpdate{Merge: `{"a":1}`}, RunWith: &cdf.RunWith{PosixUser: "ggc_user"}},
	}, DeploymentPolicies: json.RawMessage(`{"failureHandlingPolicy":"ROLLBACK"}`)}
	var err error
	if _, gerr := e.tmpl.Get(context.Background(), name); gerr != nil {
		_, err = e.tmpl.Create(context.Background(), in)
	} else {
		_, err = e.tmpl.Update(context.Background(), name, in)
	}
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) submit(in cdf.NewDeploymentTask) string {
	e.t.Helper()
	id, err := e.svc.Submit(context.Background(), in)
	if err != nil {
		e.t.Fatalf("submit: %v", err)
	}
	return id
}

func (e *env) task(id string) cdf.DeploymentTask {
	e.t.Helper()
	got, err := e.svc.GetTask(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return got
}

func (e *env) coreRecord(name string) corestore.Record {
	e.t.Helper()
	r, err := e.db.Cores().GetCore(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *env) groups(thing string) []string {
	e.t.Helper()
	g, err := e.prov.ListThingGroupsForThing(context.Background(), thing)
	if err != nil {
		e.t.Fatal(err)
	}
	return g
}

func (e *env) report(thing string, m mqttmsg.DeploymentStatusMsg) {
	e.t.Helper()
	m.Version = 1
	if err := e.svc.HandleStatus(context.Background(), thing, m); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) eventsOf(detailType string) []any {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []any
	for _, ev := range e.events {
		if ev.Type == detailType {
			out = append(out, ev.Detail)
		}
	}
	return out
}

func statuses(task cdf.DeploymentTask) map[string]string {
	out := map[string]string{}
	for _, d := range task.Deployments {
		out[d.CoreName] = d.TaskStatus + "|" + d.StatusMessage
	}
	return out
}

func deployTo(name string, version int, cores ...string) cdf.NewDeploymentTask {
	return cdf.NewDeploymentTask{
		Template: cdf.NewDeploymentTemplate{Name: name, Version: cdf.DeploymentVersion(version)},
		Targets:  cdf.DeploymentTargets{ThingNames: cores},
	}
}

// TestJourney follows the CDF integration test at the service level.
func TestJourney(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.core("core1", true)
	e.core("core2", false)
	e.template("IntegrationTest", "2.4.0")

	id := e.submit(deployTo("IntegrationTest", 0, "core1", "core2"))
	if got := e.task(id); got.TaskStatus != cdf.StatusWaiting || len(got.Deployments) != 0 || got.BatchesTotal != nil || got.Template.Version != 1 {
		t.Fatalf("before expansion: %+v", got)
	}
	e.drain()

	got := e.task(id)
	if got.TaskStatus != cdf.StatusInProgress || *got.BatchesTotal != 1 || *got.BatchesComplete != 0 {
		t.Fatalf("while waiting: %+v", got)
	}
	want := map[string]string{"core1": "InProgress|", "core2": "Failure|" + deploy.MsgNotRegistered}
	if s := statuses(got); !equalMaps(s, want) {
		t.Fatalf("items = %v, want %v", s, want)
	}
	if g := e.groups("core1"); !slices.Equal(g, []string{"cdf_ggv2_deploymentForTemplate_IntegrationTest_1"}) {
		t.Fatalf("core1 groups = %v", g)
	}
	if g := e.groups("core2"); len(g) != 0 {
		t.Fatalf("core2 groups = %v", g)
	}
	if r := e.coreRecord("core2"); r.DesiredName != "IntegrationTest" || r.DesiredVersion != 1 || r.DeploymentStatus != cdf.DeploymentStatusFailure || r.DeploymentStatusMessage != deploy.MsgNotRegistered {
		t.Fatalf("core2 = %+v", r)
	}
	if r := e.coreRecord("core1"); r.DesiredName != "IntegrationTest" || r.DeploymentStatus != cdf.DeploymentStatusInProgress || r.ReportedName != "None" {
		t.Fatalf("core1 while waiting = %+v", r)
	}
	doc := e.pub.last(t, "core1")
	if doc.TaskID != id || doc.TemplateName != "IntegrationTest" || doc.TemplateVersion != 1 || doc.DeploymentID == "" ||
		doc.Components["aws.greengrass.Cli"].ComponentVersion != "2.4.0" ||
		doc.Components["com.example.App"].RunWith.PosixUser != "ggc_user" ||
		doc.Components["com.example.App"].ConfigurationUpdate.Merge != `{"a":1}` ||
		string(doc.DeploymentPolicies) != `{"failureHandlingPolicy":"ROLLBACK"}` {
		t.Fatalf("document = %+v", doc)
	}
	created := e.eventsOf(deploy.EventDeploymentTaskCreated)
	if len(created) != 2 {
		t.Fatalf("created events = %+v", created)
	}

	e.report("core1", mqttmsg.DeploymentStatusMsg{DeploymentID: doc.DeploymentID, TaskID: id, Status: mqttmsg.StatusInProgress})
	if s := statuses(e.task(id)); s["core1"] != "InProgress|" {
		t.Fatalf("after IN_PROGRESS: %v", s)
	}
	e.report("core1", mqttmsg.DeploymentStatusMsg{DeploymentID: doc.DeploymentID, TaskID: id, Status: mqttmsg.StatusSucceeded, DetailedStatus: mqttmsg.DetailSuccessful})
	got = e.task(id)
	if got.TaskStatus != cdf.StatusFailure || *got.BatchesComplete != 1 || statuses(got)["core1"] != "Success|" {
		t.Fatalf("after success: %+v", got)
	}
	if r := e.coreRecord("core1"); r.ReportedName != "IntegrationTest" || r.ReportedVersion != 1 || r.DeploymentStatus != cdf.DeploymentStatusSuccessful {
		t.Fatalf("core1 = %+v", r)
	}
	updated := e.eventsOf(deploy.EventCoreTemplateUpdated)
	if len(updated) != 1 || updated[0].(deploy.CoreTemplateUpdatedEvent).Status != "success" || updated[0].(deploy.CoreTemplateUpdatedEvent).JobID != doc.DeploymentID {
		t.Fatalf("updated events = %+v", updated)
	}

	// v2 to core1: the group moves, the task succeeds.
	e.template("IntegrationTest", "2.5.0")
	id2 := e.submit(deployTo("IntegrationTest", 2, "core1"))
	e.drain()
	if g := e.groups("core1"); !slices.Equal(g, []string{"cdf_ggv2_deploymentForTemplate_IntegrationTest_2"}) {
		t.Fatalf("core1 groups = %v", g)
	}
	doc2 := e.pub.last(t, "core1")
	if doc2.DeploymentID == doc.DeploymentID || doc2.TemplateVersion != 2 {
		t.Fatalf("second document = %+v", doc2)
	}
	// A stale report of the first deployment changes nothing.
	e.report("core1", mqttmsg.DeploymentStatusMsg{DeploymentID: doc.DeploymentID, TaskID: id, Status: mqttmsg.StatusFailed})
	if s := statuses(e.task(id2)); s["core1"] != "InProgress|" {
		t.Fatalf("after stale report: %v", s)
	}
	e.report("core1", mqttmsg.DeploymentStatusMsg{DeploymentID: doc2.DeploymentID, TaskID: id2, Status: mqttmsg.StatusSucceeded})
	// A duplicate is harmless.
	e.report("core1", mqttmsg.DeploymentStatusMsg{DeploymentID: doc2.DeploymentID, TaskID: id2, Status: mqttmsg.StatusSucceeded})
	if got := e.task(id2); got.TaskStatus != cdf.StatusSuccess || *got.BatchesComplete != 1 {
		t.Fatalf("second task = %+v", got)
	}
	if n := len(e.eventsOf(deploy.EventCoreTemplateUpdated)); n != 2 {
		t.Fatalf("%d Core Template Updated events, want 2", n)
	}
	if r := e.coreRecord("core1"); r.DesiredVersion != 2 || r.ReportedVersion != 2 {
		t.Fatalf("core1 = %+v", r)
	}

	// The core's deployments list both tasks with their ids.
	list, more, err := e.svc.ListCoreDeployments(ctx, "core1", 10, "")
	if err != nil || more || len(list) != 2 {
		t.Fatalf("core deployments = %+v %v %v", list, more, err)
	}
	for _, d := range list {
		if d.TaskID != id && d.TaskID != id2 {
			t.Fatalf("core deployment %+v", d)
		}
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestFailedReport(t *testing.T) {
	tests := []struct {
		name       string
		msg        mqttmsg.DeploymentStatusMsg
		wantStatus string
		wantMsg    string
	}{
		{"rollback", mqttmsg.DeploymentStatusMsg{Status: mqttmsg.StatusFailed, DetailedStatus: mqttmsg.DetailFailedRollbackComplete, Reason: "component crashed"},
			cdf.DeploymentStatusFailedRollbackComplete, "FAILED_ROLLBACK_COMPLETE: component crashed"},
		{"no detail", mqttmsg.DeploymentStatusMsg{Status: mqttmsg.StatusFailed, Reason: "disk full"},
			cdf.DeploymentStatusFailure, "disk full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			e.core("c1", true)
			e.core("c2", true)
			e.template("T", "1.0.0")
			id := e.submit(deployTo("T", 1, "c1"))
			e.drain()
			m := tt.msg
			m.DeploymentID = e.pub.last(t, "c1").DeploymentID
			e.report("c1", m)
			got := e.task(id)
			if got.TaskStatus != cdf.StatusFailure || statuses(got)["c1"] != "Failure|"+tt.wantMsg {
				t.Fatalf("task = %+v", got)
			}
			r := e.coreRecord("c1")
			if r.DeploymentStatus != tt.wantStatus || r.ReportedName != "None" {
				t.Fatalf("core = %+v", r)
			}
			// failedOnly finds it, narrowed by template.
			one := 1
			for _, f := range []corestore.Filter{{FailedOnly: true}, {FailedOnly: true, TemplateName: "T", TemplateVersion: &one}} {
				list, _, err := e.db.Cores().ListCores(ctx, f, 10, "")
				if err != nil || len(list) != 1 || list[0].Name != "c1" {
					t.Fatalf("failedOnly %+v = %+v, %v", f, list, err)
				}
			}
			ev := e.eventsOf(deploy.EventCoreTemplateUpdated)
			if len(ev) != 1 || ev[0].(deploy.CoreTemplateUpdatedEvent).Status != "failed" {
				t.Fatalf("events = %+v", ev)
			}
			// A later success of a new deployment clears the failure.
			id2 := e.submit(deployTo("T", 1, "c1"))
			e.drain()
			e.report("c1", mqttmsg.DeploymentStatusMsg{DeploymentID: e.pub.last(t, "c1").DeploymentID, Status: mqttmsg.StatusSucceeded})
			if got := e.task(id2); got.TaskStatus != cdf.StatusSuccess {
				t.Fatalf("second task = %+v", got)
			}
			list, _, err := e.db.Cores().ListCores(ctx, corestore.Filter{FailedOnly: true}, 10, "")
			if err != nil || len(list) != 0 {
				t.Fatalf("failedOnly after success = %+v, %v", list, err)
			}
		})
	}
}

func TestDeadline(t *testing.T) {
	e := newEnv(t)
	e.core("c1", true)
	e.core("c2", true)
	e.template("T", "1.0.0")
	id := e.submit(deployTo("T", 1, "c1", "c2"))
	e.drain()
	e.report("c2", mqttmsg.DeploymentStatusMsg{DeploymentID: e.pub.last(t, "c2").DeploymentID, Status: mqttmsg.StatusSucceeded})

	ctx := context.Background()
	e.advance(9 * time.Minute)
	if err := e.svc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if s := statuses(e.task(id)); s["c1"] != "InProgress|" {
		t.Fatalf("before the deadline: %v", s)
	}
	e.advance(2 * time.Minute)
	if err := e.svc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	got := e.task(id)
	wantMsg := "Core device did not report the outcome of the deployment within 10m0s"
	if got.TaskStatus != cdf.StatusFailure || statuses(got)["c1"] != "Failure|"+wantMsg || statuses(got)["c2"] != "Success|" {
		t.Fatalf("after the deadline: %+v", got)
	}
	if r := e.coreRecord("c1"); r.DeploymentStatus != cdf.DeploymentStatusFailure || r.DeploymentStatusMessage != wantMsg {
		t.Fatalf("core = %+v", r)
	}
	// A late report changes nothing.
	e.report("c1", mqttmsg.DeploymentStatusMsg{DeploymentID: e.pub.last(t, "c1").DeploymentID, Status: mqttmsg.StatusSucceeded})
	if s := statuses(e.task(id)); s["c1"] != "Failure|"+wantMsg {
		t.Fatalf("after a late report: %v", s)
	}
}

func TestRunSweeps(t *testing.T) {
	e := newEnv(t)
	e.timeout = time.Millisecond
	e.start()
	e.core("c1", true)
	e.template("T", "1.0.0")
	id := e.submit(deployTo("T", 1, "c1"))
	e.drain()
	e.advance(time.Second)
	svc := deploy.New(deploy.Config{Tasks: e.db, Store: e.db, Cores: e.db.Cores(), Templates: e.tmpl, Provider: e.prov,
		DeploymentTimeout: time.Millisecond, SweepInterval: 10 * time.Millisecond, Now: e.clock})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for e.task(id).TaskStatus != cdf.StatusFailure {
		if time.Now().After(deadline) {
			t.Fatal("Run did not fail the overdue item")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestRestartWhileWaiting(t *testing.T) {
	e := newEnv(t)
	e.core("c1", true)
	e.template("T", "1.0.0")
	id := e.submit(deployTo("T", 1, "c1"))
	e.drain()
	depID := e.pub.last(t, "c1").DeploymentID

	// A new broker over the same database: it re-publishes, then the report arrives.
	e.pub = &recPublisher{}
	e.start()
	if err := e.svc.RepublishAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.pub.last(t, "c1"); got.DeploymentID != depID {
		t.Fatalf("re-published %+v", got)
	}
	e.report("c1", mqttmsg.DeploymentStatusMsg{DeploymentID: depID, TaskID: id, Status: mqttmsg.StatusSucceeded})
	if got := e.task(id); got.TaskStatus != cdf.StatusSuccess {
		t.Fatalf("task = %+v", got)
	}
}

func TestOnConnectAndPublishFailure(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.core("c1", true)
	e.core("c2", true)
	e.template("T", "1.0.0")
	e.pub.fail = true // publishing fails: not fatal
	id := e.submit(deployTo("T", 1, "c1"))
	e.drain()
	if s := statuses(e.task(id)); s["c1"] != "InProgress|" {
		t.Fatalf("items = %v", s)
	}
	e.pub.fail = false
	if err := e.svc.OnConnect(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.OnConnect(ctx, "c2"); err != nil { // nothing stored: nothing sent
		t.Fatal(err)
	}
	if n := e.pub.count(); n != 1 {
		t.Fatalf("%d messages, want 1", n)
	}
	if got := e.pub.last(t, "c1"); got.TaskID != id {
		t.Fatalf("document = %+v", got)
	}
}

func TestExpansion(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, c := range []string{"a", "b", "c"} {
		e.core(c, true)
	}
	if err := e.prov.CreateThingGroup(ctx, "line1", ""); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"c", "b"} {
		if err := e.prov.AddThingToGroup(ctx, c, "line1"); err != nil {
			t.Fatal(err)
		}
	}
	e.template("T", "1.0.0")
	id := e.submit(cdf.NewDeploymentTask{Template: cdf.NewDeploymentTemplate{Name: "T"},
		Targets: cdf.DeploymentTargets{ThingNames: []string{"b"}, ThingGroupNames: []string{"line1"}}})
	e.drain()
	got := e.task(id)
	var names []string
	for _, d := range got.Deployments {
		names = append(names, d.CoreName)
	}
	if !slices.Equal(names, []string{"b", "c"}) {
		t.Fatalf("cores = %v", names)
	}
	if got.Targets.ThingGroupNames[0] != "line1" || got.Targets.ThingNames[0] != "b" {
		t.Fatalf("targets not echoed: %+v", got.Targets)
	}
}

func TestEmptyExpansionFails(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.prov.CreateThingGroup(ctx, "empty", ""); err != nil {
		t.Fatal(err)
	}
	e.template("T", "1.0.0")
	id := e.submit(cdf.NewDeploymentTask{Template: cdf.NewDeploymentTemplate{Name: "T"},
		Targets: cdf.DeploymentTargets{ThingGroupNames: []string{"empty", "missing"}}})
	e.drain()
	got := e.task(id)
	want := "The deployment targets resolved to no core devices (thing group empty has no members; thing group missing does not exist)"
	if got.TaskStatus != cdf.StatusFailure || got.StatusMessage != want || len(got.Deployments) != 0 || got.BatchesTotal != nil {
		t.Fatalf("task = %+v", got)
	}
}

type fakeAssets struct{}

func (fakeAssets) DeviceThings(ctx context.Context, ids []string) ([]string, error) { return ids, nil }
func (fakeAssets) GroupThings(ctx context.Context, paths []string) ([]string, error) {
	return []string{"g1", "a"}, nil
}
func (fakeAssets) QueryThings(ctx context.Context, q json.RawMessage) ([]string, error) {
	return nil, errkind.New(errkind.Invalid, "bad query")
}

func TestAssetLibraryTargets(t *testing.T) {
	e := newEnv(t)
	e.template("T", "1.0.0")
	targets := cdf.DeploymentTargets{AssetLibraryDeviceIDs: []string{"a", "b"}, AssetLibraryGroupPaths: []string{"/x"}, AssetLibraryQuery: json.RawMessage(`{"types":["device"]}`)}
	_, err := e.svc.Submit(context.Background(), cdf.NewDeploymentTask{Template: cdf.NewDeploymentTemplate{Name: "T"}, Targets: targets})
	if !errkind.Is(err, errkind.Invalid) || errkind.Message(err) != deploy.MsgNoAssetLibrary {
		t.Fatalf("without an Asset Library: %v", err)
	}
	e.al = fakeAssets{}
	e.start()
	id := e.submit(cdf.NewDeploymentTask{Template: cdf.NewDeploymentTemplate{Name: "T"}, Targets: targets})
	e.drain()
	var names []string
	for _, d := range e.task(id).Deployments {
		names = append(names, d.CoreName)
	}
	if !slices.Equal(names, []string{"a", "b", "g1"}) {
		t.Fatalf("cores = %v", names)
	}
}

func TestSubmitErrors(t *testing.T) {
	e := newEnv(t)
	e.template("T", "1.0.0")
	tests := []struct {
		name string
		in   cdf.NewDeploymentTask
		kind errkind.Kind
		msg  string
	}{
		{"no name", cdf.NewDeploymentTask{Targets: cdf.DeploymentTargets{ThingNames: []string{"a"}}}, errkind.Invalid, "template.name is required"},
		{"no targets", cdf.NewDeploymentTask{Template: cdf.NewDeploymentTemplate{Name: "T"}}, errkind.Invalid, "targets must name"},
		{"bad thing", deployTo("T", 1, "a:b"), errkind.Invalid, `targets.thingNames[0] "a:b" is not valid`},
		{"missing template", deployTo("Nope", 0, "a"), errkind.NotFound, "template Nope not found"},
		{"missing version", deployTo("T", 7, "a"), errkind.NotFound, "template T version 7 not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.svc.Submit(context.Background(), tt.in)
			if !errkind.Is(err, tt.kind) || !contains(errkind.Message(err), tt.msg) {
				t.Fatalf("err = %v (%q), want kind %v with %q", err, errkind.Message(err), tt.kind, tt.msg)
			}
		})
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// TestSupersede: a second deployment to a waiting core ends the first
// item at once without touching the core's state.
func TestSupersede(t *testing.T) {
	e := newEnv(t)
	e.core("c1", true)
	e.template("T", "1.0.0")
	id1 := e.submit(deployTo("T", 1, "c1"))
	e.drain()
	id2 := e.submit(deployTo("T", 1, "c1"))
	e.drain()
	got := e.task(id1)
	if got.TaskStatus != cdf.StatusFailure || !contains(statuses(got)["c1"], "Superseded by deployment task "+id2) {
		t.Fatalf("first task = %+v", got)
	}
	if r := e.coreRecord("c1"); r.DeploymentStatus != cdf.DeploymentStatusInProgress {
		t.Fatalf("core = %+v", r)
	}
	e.advance(time.Hour)
	if err := e.svc.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.task(id2); got.TaskStatus != cdf.StatusFailure {
		t.Fatalf("second task after its deadline = %+v", got)
	}
}
