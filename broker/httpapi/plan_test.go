package httpapi

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/broker/deploy"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/provider/local"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/broker/templates"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// dumpDB is every row of every table, to prove a request wrote nothing.
func dumpDB(t *testing.T, db *sql.DB) string {
	t.Helper()
	rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	rows.Close()
	var b strings.Builder
	for _, n := range names {
		r, err := db.Query(`SELECT * FROM "` + n + `"`)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := r.Columns()
		for r.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := r.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s %v\n", n, vals)
		}
		r.Close()
	}
	return b.String()
}

func TestDeploymentDryRun(t *testing.T) {
	ctx := context.Background()
	db := sqlstoretest.Open(t)
	var queued int
	db.SetEnqueuer(func(ctx context.Context, tx *sql.Tx, refs []tasks.BatchRef) error { queued += len(refs); return nil })
	prov, err := local.New(local.Config{Store: db.Registry(), ArtifactsDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prov.Close() })
	tmpl := templates.New(templates.Config{Store: db})
	for _, v := range []string{"2.4.0", "2.5.0"} {
		in := cdf.EditableTemplate{Name: "T", Components: []cdf.Component{{Key: "aws.greengrass.Cli", Version: v}}}
		if v == "2.4.0" {
			_, err = tmpl.Create(ctx, in)
		} else {
			_, err = tmpl.Update(ctx, "T", in)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []string{"core1", "core2"} {
		if err := prov.CreateThing(ctx, c, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := prov.MarkCoreRegistered(ctx, "core1"); err != nil {
		t.Fatal(err)
	}
	view := func(ctx context.Context, name string) (cdf.Core, error) {
		return cdf.Core{Name: name, Template: cdf.CoreTemplate{Reported: cdf.ReportedTemplate{Name: "T", Version: 1}},
			Device: &cdf.Device{Connectivity: "ONLINE"}}, nil
	}
	svc := deploy.New(deploy.Config{Tasks: db, Store: db, Cores: db.Cores(), Templates: tmpl, Provider: prov, CoreView: view})
	srv := httptest.NewServer(New(Deps{Auth: tokenAuth("core-token"), Deployments: svc}).Handler())
	t.Cleanup(srv.Close)
	do := func(method, path, body string) (int, string) {
		code, _, b := doAPI(t, srv.URL, "core-token", method, path, body, cdf.MediaType)
		return code, b
	}

	before := dumpDB(t, db.SQL())
	code, body := do("POST", "/deploymentTasks?dryRun=true", `{"template":{"name":"T"},"targets":{"thingNames":["core1","core2"]}}`)
	if code != 200 {
		t.Fatalf("dry run = %d %s", code, body)
	}
	if after := dumpDB(t, db.SQL()); after != before || queued != 0 {
		t.Fatalf("the dry run wrote to the database (queued %d):\nbefore:\n%s\nafter:\n%s", queued, before, after)
	}
	var plan cdf.DeploymentPlan
	if err := json.Unmarshal([]byte(body), &plan); err != nil {
		t.Fatal(err)
	}
	want := `{"dryRun":true,"template":{"name":"T","version":2},"cores":[` +
		`{"coreName":"core1","from":{"name":"T","version":1},"to":{"name":"T","version":2},"changes":[{"component":"aws.greengrass.Cli","change":"upgraded","from":"2.4.0","to":"2.5.0"}]},` +
		`{"coreName":"core2","from":{"name":"T","version":1},"to":{"name":"T","version":2},"changes":[{"component":"aws.greengrass.Cli","change":"upgraded","from":"2.4.0","to":"2.5.0"}],"wouldFail":"` + deploy.MsgNotRegistered + ` (the core never enrolled: run ggagent install on it)"}]}`
	if strings.TrimSpace(body) != want {
		t.Errorf("plan body\n got %s\nwant %s", strings.TrimSpace(body), want)
	}

	tests := []struct {
		name, path, body string
		status           int
		msg              string
	}{
		{"bad dryRun", "/deploymentTasks?dryRun=maybe", `{"template":{"name":"T"},"targets":{"thingNames":["core1"]}}`, 400, "dryRun must be true, false"},
		{"no targets", "/deploymentTasks?dryRun=true", `{"template":{"name":"T"}}`, 400, "targets must name at least one of"},
		{"missing template", "/deploymentTasks?dryRun=true", `{"template":{"name":"Nope"},"targets":{"thingNames":["core1"]}}`, 404, "template Nope not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := do("POST", tt.path, tt.body)
			if code != tt.status || !strings.Contains(body, tt.msg) {
				t.Fatalf("got %d %s, want %d with %q", code, body, tt.status, tt.msg)
			}
		})
	}
	// dryRun=false submits as usual.
	if code, body := do("POST", "/deploymentTasks?dryRun=false", `{"template":{"name":"T"},"targets":{"thingNames":["core1"]}}`); code != 202 {
		t.Fatalf("dryRun=false = %d %s", code, body)
	}
}

func TestCoreAndDeviceTaskDryRun(t *testing.T) {
	f := newCoreFixture(t)
	// A real core with one client device first.
	code, h, body := f.do(t, "POST", "/coreTasks", `{"type":"Create","coreVersion":"2.5.0","cores":[{"name":"core-1","provisioningTemplate":"broker-cert","provisioningParameters":{"ThingName":"core-1"}}]}`)
	if code != 202 {
		t.Fatalf("create core = %d %s", code, body)
	}
	f.run(t, h.Get("X-Taskid"))
	f.prov.Cores["core-1"] = provider.CoreDevice{Name: "core-1", Status: "HEALTHY"}

	code, body = doDry(t, f, "/coreTasks?dryRun=true", `{"type":"Create","coreVersion":"2.5.0","cores":[
		{"name":"core-1","provisioningTemplate":"broker-cert"},{"name":"core-2","provisioningTemplate":"broker-cert"}]}`)
	wantCores := `{"dryRun":true,"type":"Create","cores":[{"name":"core-1","action":"exists","message":"the core already exists; its item re-checks the thing and certificate and keeps its template state"},{"name":"core-2","action":"create"}]}`
	if code != 200 || body != wantCores {
		t.Fatalf("core plan = %d\n got %s\nwant %s", code, body, wantCores)
	}
	code, body = doDry(t, f, "/cores/core-1/deviceTasks?dryRun=true", `{"type":"Create","devices":[{"name":"dev-1","provisioningTemplate":"broker-cert"}]}`)
	if code != 200 || body != `{"dryRun":true,"type":"Create","coreName":"core-1","devices":[{"name":"dev-1","action":"create"}]}` {
		t.Fatalf("device plan = %d %s", code, body)
	}
	if code, body = doDry(t, f, "/cores/core-2/deviceTasks?dryRun=true", `{"type":"Create","devices":[{"name":"dev-1","provisioningTemplate":"broker-cert"}]}`); code != 400 || !strings.Contains(body, `core \"core-2\" does not exist`) {
		t.Fatalf("device plan on a missing core = %d %s", code, body)
	}
	if code, body = doDry(t, f, "/coreTasks?dryRun=yes", `{"type":"Create","coreVersion":"2.5.0","cores":[{"name":"c","provisioningTemplate":"p"}]}`); code != 400 || !strings.Contains(body, "dryRun must be") {
		t.Fatalf("bad dryRun = %d %s", code, body)
	}
	// Nothing was written: still one task, and core-2 is unknown.
	code, _, body = f.do(t, "GET", "/coreTasks", "")
	var l cdf.CoreTaskList
	if err := json.Unmarshal([]byte(body), &l); code != 200 || err != nil || len(l.Tasks) != 1 {
		t.Fatalf("core tasks after dry runs = %d %s", code, body)
	}
	if code, _, _ := f.do(t, "GET", "/cores/core-2", ""); code != 404 {
		t.Fatalf("GET /cores/core-2 = %d, want 404", code)
	}
	if code, _, _ := f.do(t, "GET", "/devices/dev-1", ""); code != 404 {
		t.Fatalf("GET /devices/dev-1 = %d, want 404", code)
	}
}

func doDry(t *testing.T, f *coreFixture, path, body string) (int, string) {
	t.Helper()
	code, _, b := f.do(t, "POST", path, body)
	return code, strings.TrimSpace(b)
}
