package httpapi

import (
	"context"
	"database/sql"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/ggfleet/ggfleet/broker/deploy"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider/local"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/broker/templates"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// deployFixture serves the API with the real deployment service over
// SQLite and the local provider; queued jobs run when drain is called.
type deployFixture struct {
	srv    *httptest.Server
	runner *tasks.Runner
	mu     sync.Mutex
	queued []tasks.BatchRef
}

func newDeployFixture(t *testing.T) *deployFixture {
	t.Helper()
	ctx := context.Background()
	db := sqlstoretest.Open(t)
	f := &deployFixture{}
	db.SetEnqueuer(func(ctx context.Context, tx *sql.Tx, refs []tasks.BatchRef) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.queued = append(f.queued, refs...)
		return nil
	})
	prov, err := local.New(local.Config{Store: db.Registry(), ArtifactsDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prov.Close() })
	tmpl := templates.New(templates.Config{Store: db})
	if _, err := tmpl.Create(ctx, cdf.EditableTemplate{Name: "T", Components: []cdf.Component{{Key: "aws.greengrass.Cli", Version: "2.4.0"}}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"core1", "core2", "core3"} {
		if err := prov.CreateThing(ctx, c, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := prov.MarkCoreRegistered(ctx, "core1"); err != nil {
		t.Fatal(err)
	}
	svc := deploy.New(deploy.Config{Tasks: db, Store: db, Cores: db.Cores(), Templates: tmpl, Provider: prov})
	f.runner = &tasks.Runner{Store: db, Processors: map[tasks.Kind]tasks.Processor{tasks.KindDeployment: svc}}
	f.srv = httptest.NewServer(New(Deps{Auth: tokenAuth("core-token"), Deployments: svc}).Handler())
	t.Cleanup(f.srv.Close)
	return f
}

func (f *deployFixture) drain(t *testing.T) {
	t.Helper()
	for {
		f.mu.Lock()
		if len(f.queued) == 0 {
			f.mu.Unlock()
			return
		}
		ref := f.queued[0]
		f.queued = f.queued[1:]
		f.mu.Unlock()
		if err := f.runner.RunBatch(context.Background(), ref); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *deployFixture) do(t *testing.T, method, path, body string) (int, http.Header, string) {
	t.Helper()
	code, h, b := doAPI(t, f.srv.URL, "core-token", method, path, body, cdf.MediaType)
	return code, h, strings.TrimSpace(b)
}

func TestDeploymentTaskErrors(t *testing.T) {
	f := newDeployFixture(t)
	tests := []struct {
		name, body string
		status     int
		msg        string
	}{
		{"no template name", `{"template":{},"targets":{"thingNames":["core1"]}}`, 400, "template.name is required"},
		{"empty targets", `{"template":{"name":"T"},"targets":{}}`, 400, "targets must name at least one of"},
		{"no targets", `{"template":{"name":"T"}}`, 400, "targets must name at least one of"},
		{"bad version", `{"template":{"name":"T","version":"abc"},"targets":{"thingNames":["core1"]}}`, 400, "template.version must be a whole number from 1"},
		{"zero version", `{"template":{"name":"T","version":0},"targets":{"thingNames":["core1"]}}`, 400, "template.version must be a whole number from 1"},
		{"targets not an object", `{"template":{"name":"T"},"targets":[]}`, 400, "targets must be an object"},
		{"asset library without client", `{"template":{"name":"T"},"targets":{"assetLibraryDeviceIds":["d1"]}}`, 400, deploy.MsgNoAssetLibrary},
		{"missing template", `{"template":{"name":"Nope"},"targets":{"thingNames":["core1"]}}`, 404, "template Nope not found"},
		{"missing version", `{"template":{"name":"T","version":"9"},"targets":{"thingNames":["core1"]}}`, 404, "template T version 9 not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := f.do(t, "POST", "/deploymentTasks", tt.body)
			var e cdf.ErrorBody
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("body %s: %v", body, err)
			}
			if status != tt.status || !strings.Contains(e.Message, tt.msg) {
				t.Fatalf("got %d %s, want %d with %q", status, body, tt.status, tt.msg)
			}
		})
	}
	for _, path := range []string{"/deploymentTasks/nope12345", "/deploymentTasks/nope12345/cores", "/deploymentTasks/nope12345/cores/core1"} {
		if status, _, body := f.do(t, "GET", path, ""); status != 404 || !strings.Contains(body, "deployment task nope12345 not found") {
			t.Fatalf("GET %s = %d %s", path, status, body)
		}
	}
}

func TestDeploymentTaskEndpoints(t *testing.T) {
	f := newDeployFixture(t)

	// No tasks yet: CDF's exact empty shape.
	if status, _, body := f.do(t, "GET", "/deploymentTasks", ""); status != 200 || body != `{"pagination":{}}` {
		t.Fatalf("empty list = %d %s", status, body)
	}

	status, h, body := f.do(t, "POST", "/deploymentTasks",
		`{"template":{"name":"T","version":"1"},"targets":{"thingNames":["core1","core2"]},"iotJobConfig":{"jobExecutionsRolloutConfig":{"maximumPerMinute":5}}}`)
	id := h.Get("X-Taskid")
	if status != 202 || body != "" || len(id) != 9 || h.Get("Location") != "/deploymentTasks/"+id {
		t.Fatalf("create = %d %v %q", status, h, body)
	}

	// Before expansion: deployments [] and no batch fields.
	_, _, body = f.do(t, "GET", "/deploymentTasks/"+id, "")
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &raw); err != nil {
		t.Fatal(err)
	}
	if string(raw["deployments"]) != "[]" || raw["batchesTotal"] != nil || string(raw["taskStatus"]) != `"Waiting"` ||
		string(raw["template"]) != `{"name":"T","version":1}` || string(raw["targets"]) != `{"thingNames":["core1","core2"]}` ||
		string(raw["iotJobConfig"]) != `{"jobExecutionsRolloutConfig":{"maximumPerMinute":5}}` || string(raw["updatedAt"]) != "null" {
		t.Fatalf("before expansion: %s", body)
	}

	f.drain(t)
	_, _, body = f.do(t, "GET", "/deploymentTasks/"+id, "")
	var task cdf.DeploymentTask
	if err := json.Unmarshal([]byte(body), &task); err != nil {
		t.Fatal(err)
	}
	if task.BatchesTotal == nil || *task.BatchesTotal != 1 || *task.BatchesComplete != 0 || len(task.Deployments) != 2 ||
		task.Deployments[0].CoreName != "core1" || task.Deployments[0].TaskStatus != "InProgress" ||
		task.Deployments[1].StatusMessage != deploy.MsgNotRegistered || task.Deployments[0].TaskID != "" {
		t.Fatalf("after expansion: %s", body)
	}

	// A second task so lists have pages.
	_, h, _ = f.do(t, "POST", "/deploymentTasks", `{"template":{"name":"T"},"targets":{"thingNames":["core2"]}}`)
	id2 := h.Get("X-Taskid")
	f.drain(t)

	_, _, body = f.do(t, "GET", "/deploymentTasks", "")
	var list struct {
		DeploymentTasks []map[string]json.RawMessage `json:"deploymentTasks"`
		Pagination      map[string]any               `json:"pagination"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.DeploymentTasks) != 2 || list.Pagination == nil || len(list.Pagination) != 0 {
		t.Fatalf("list = %s", body)
	}
	for _, dt := range list.DeploymentTasks {
		if string(dt["deployments"]) != "[]" || dt["batchesTotal"] != nil || dt["batchesComplete"] != nil {
			t.Fatalf("list item = %s", body)
		}
	}
	_, _, body = f.do(t, "GET", "/deploymentTasks?count=1", "")
	first := min(id, id2)
	if !strings.Contains(body, `"pagination":{"count":"1","lastEvaluated":{"taskId":"`+first+`"}}`) {
		t.Fatalf("page = %s", body)
	}

	// The task's cores, paged by thing name.
	status, _, body = f.do(t, "GET", "/deploymentTasks/"+id+"/cores?count=1", "")
	if status != 200 || !strings.Contains(body, `"cores":[{"coreName":"core1","taskStatus":"InProgress"`) ||
		!strings.Contains(body, `"pagination":{"count":"1","lastEvaluated":{"thingName":"core1"}}`) {
		t.Fatalf("cores page 1 = %d %s", status, body)
	}
	_, _, body = f.do(t, "GET", "/deploymentTasks/"+id+"/cores?count=1&exclusiveStartThingName=core1", "")
	if !strings.Contains(body, `"coreName":"core2"`) || !strings.Contains(body, `"pagination":{"count":"1"}`) {
		t.Fatalf("cores page 2 = %s", body)
	}
	_, _, body = f.do(t, "GET", "/deploymentTasks/"+id+"/cores?exclusiveStartThingName=core2", "")
	if body != `{"cores":[],"pagination":{}}` {
		t.Fatalf("cores past the end = %s", body)
	}

	// One core of the task.
	status, _, body = f.do(t, "GET", "/deploymentTasks/"+id+"/cores/core2", "")
	if status != 200 || !strings.Contains(body, `"statusMessage":"`+deploy.MsgNotRegistered+`"`) {
		t.Fatalf("core of task = %d %s", status, body)
	}
	if status, _, body = f.do(t, "GET", "/deploymentTasks/"+id+"/cores/core3", ""); status != 404 || !strings.Contains(body, "core3 is not part of task") {
		t.Fatalf("core not in task = %d %s", status, body)
	}
	if status, _, _ = f.do(t, "GET", "/deploymentTasks/"+id+"/cores/bad:name", ""); status != 400 {
		t.Fatalf("bad core name = %d", status)
	}

	// A core's deployments, with task ids, paged by task id.
	_, _, body = f.do(t, "GET", "/cores/core2/deployments", "")
	var cd cdf.CoreDeploymentList
	if err := json.Unmarshal([]byte(body), &cd); err != nil {
		t.Fatal(err)
	}
	if len(cd.Deployments) != 2 || cd.Pagination == nil || cd.Deployments[0].TaskID != first || cd.Deployments[0].CoreName != "core2" {
		t.Fatalf("core deployments = %s", body)
	}
	_, _, body = f.do(t, "GET", "/cores/core2/deployments?count=1", "")
	if !strings.Contains(body, `"lastEvaluated":{"taskId":"`+first+`"}`) {
		t.Fatalf("core deployments page = %s", body)
	}
	if _, _, body = f.do(t, "GET", "/cores/core3/deployments", ""); body != `{"deployments":[],"pagination":{}}` {
		t.Fatalf("no deployments = %s", body)
	}
	if status, _, _ = f.do(t, "GET", "/cores/core2/deployments?count=0", ""); status != 400 {
		t.Fatalf("count=0 = %d", status)
	}
}

func TestDeploymentsUnavailable(t *testing.T) {
	srv := httptest.NewServer(New(Deps{Auth: tokenAuth("core-token")}).Handler())
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest("GET", srv.URL+"/deploymentTasks", nil)
	req.Header.Set("Authorization", "Bearer core-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func FuzzDecodeDeploymentTask(f *testing.F) {
	for _, s := range []string{
		`{"template":{"name":"T","version":2},"targets":{"thingNames":["a"]}}`,
		`{"template":{"name":"T","version":"2"},"targets":{"thingGroupNames":["g"],"assetLibraryQuery":{"types":["device"]}},"iotJobConfig":{}}`,
		`{"template":{"version":"x"}}`,
		`{"template":{"version":1e99}}`,
		`[]`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := DecodeDeploymentTask(body)
		if err != nil {
			if !errkind.Is(err, errkind.Invalid) || errkind.Message(err) == "" {
				t.Fatalf("decode error is not a 400 with a message: %v", err)
			}
			return
		}
		if got.Template.Version < 0 {
			t.Fatalf("negative version %d", got.Template.Version)
		}
	})
}
