package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/shared/apiclient"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run go test -update to create it): %v", err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n--- got ---\n%s--- want ---\n%s", name, got, want)
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, 0},
		{"usage", usagef("bad"), 2},
		{"wrapped usage", fmt.Errorf("x: %w", usagef("bad")), 2},
		{"not found", &apiclient.APIError{Status: 404, Message: "no"}, 1},
		{"conflict", fmt.Errorf("create: %w", &apiclient.APIError{Status: 409, Message: "exists"}), 1},
		{"unauthorized", &apiclient.APIError{Status: 401, Message: "bad token"}, 3},
		{"forbidden", &apiclient.APIError{Status: 403, Message: "no"}, 3},
		{"task failed", &taskFailedError{id: "t", msg: "failed"}, 1},
		{"interrupted", &interruptedError{id: "t"}, 130},
		{"unreachable", errors.New("cannot reach the broker at http://x: refused"), 3},
		{"other", errors.New("boom"), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := exitCode(tt.err); got != tt.want {
				t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}

func TestExitCodeOfRealNetworkError(t *testing.T) {
	var out, errb bytes.Buffer
	// Port 1 on loopback refuses connections.
	code := Run(context.Background(), []string{"cores", "list", "--broker-url", "http://127.0.0.1:1", "--token", "x"}, &out, &errb)
	if code != 3 {
		t.Fatalf("exit %d, want 3; stderr: %s", code, errb.String())
	}
	if !strings.Contains(errb.String(), "cannot reach the broker at http://127.0.0.1:1") {
		t.Errorf("stderr does not say the broker is unreachable: %s", errb.String())
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no verb", []string{"cores"}, "which one?"},
		{"unknown verb", []string{"cores", "explode"}, `unknown command "explode"`},
		{"bad output", []string{"cores", "list", "-o", "xml"}, `-o "xml"`},
		{"unknown flag", []string{"templates", "list", "--nope"}, "unknown flag"},
		{"missing arg", []string{"templates", "show"}, "expected the template NAME"},
		{"create without names", []string{"cores", "create", "--template", "pt"}, "name the cores"},
		{"deploy without template", []string{"deploy", "--core", "c1"}, "--template is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append(tt.args, "--broker-url", "http://127.0.0.1:1")
			if code := Run(context.Background(), args, &out, &errb); code != 2 {
				t.Fatalf("exit %d, want 2; stderr: %s", code, errb.String())
			}
			if !strings.Contains(errb.String(), tt.want) {
				t.Errorf("stderr %q does not contain %q", errb.String(), tt.want)
			}
		})
	}
}

func TestParseCoresCSV(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []csvCore
		wantErr string
	}{
		{"names only", "a\nb\n", []csvCore{{Name: "a"}, {Name: "b"}}, ""},
		{"header and templates", "name,provisioningTemplate\na,pt1\n# comment\n\nb\n", []csvCore{{Name: "a", Template: "pt1"}, {Name: "b"}}, ""},
		{"spaces trimmed", "a , pt\n", []csvCore{{Name: "a", Template: "pt"}}, ""},
		{"too many columns", "a,b,c\n", nil, "line 1: 3 columns"},
		{"duplicate", "a\nb\na\n", nil, `core "a" is already on line 1`},
		{"empty name", "a\n,pt\n", nil, "line 2: the name is empty"},
		{"empty", "name\n", nil, "no cores"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCoresCSV(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseDocument(t *testing.T) {
	yamlDoc := "name: base\ncomponents:\n  - key: a\n    version: 1.0.0\n"
	jsonDoc := `{"name":"base","components":[{"key":"a","version":"1.0.0"}]}`
	for name, in := range map[string]string{"yaml": yamlDoc, "json": jsonDoc} {
		t.Run(name, func(t *testing.T) {
			doc, err := parseDocument("f", []byte(in))
			if err != nil {
				t.Fatal(err)
			}
			comps, _ := doc["components"].([]any)
			if doc["name"] != "base" || len(comps) != 1 {
				t.Errorf("parsed %v", doc)
			}
		})
	}
	if _, err := parseDocument("f", []byte("")); err == nil {
		t.Error("an empty file was accepted")
	}
	if _, err := parseDocument("f", []byte("- a\n- b\n")); err == nil {
		t.Error("a list was accepted as a template")
	}
}

func at(s string) cdf.Time {
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return cdf.At(tm)
}

func TestTables(t *testing.T) {
	created := at("2026-01-02T03:04:05Z")
	seen := at("2026-01-02T04:00:00Z")
	cores := []cdf.Core{
		{Name: "core-1", Template: cdf.CoreTemplate{Desired: cdf.TemplateRef{Name: "base", Version: 2},
			Reported: cdf.ReportedTemplate{Name: "base", Version: 2, DeploymentStatus: cdf.DeploymentStatusSuccessful}}, CreatedAt: created},
		{Name: "a-much-longer-core-name", Template: cdf.CoreTemplate{Desired: cdf.TemplateRef{Name: "base", Version: 3},
			Reported: cdf.ReportedTemplate{Name: "base", Version: 2, DeploymentStatus: cdf.DeploymentStatusInProgress}}},
		{Name: "fresh"},
	}
	task := taskView{ID: "T1", Kind: kindCore, Type: "Create", Status: cdf.StatusFailure, Items: []taskItem{
		{Name: "core-1", Status: cdf.StatusSuccess}, {Name: "core-2", Status: cdf.StatusFailure, StatusMessage: "provisioning template nope not found"},
		{Name: "core-3", Status: cdf.StatusInProgress}}}
	summary := cdf.FleetSummary{Templates: map[string]cdf.FleetTemplate{
		"base":  {LatestVersion: 10, Versions: map[string]cdf.FleetVersion{"2": {DesiredInUse: 1, ReportedInUse: 2, LastDeploymentSuccess: 2}, "10": {DesiredInUse: 1, LastDeploymentInProgress: 1}}},
		"other": {LatestVersion: 1, Versions: map[string]cdf.FleetVersion{"1": {LastDeploymentFailed: 4}}},
	}}
	detail := cdf.Core{Name: "core-1", Template: cores[0].Template, CreatedAt: created,
		Device: &cdf.Device{Status: "HEALTHY", Connectivity: "ONLINE", LastSeenAt: &seen, CoreVersion: "2.12.0", Platform: "linux", Architecture: "amd64",
			InstalledComponents: []cdf.InstalledComponent{{Name: "aws.greengrass.Nucleus", Version: "2.12.0"}, {Name: "com.example.Hello", Version: "1.0.0"}}}}
	fleetCores := []cdf.FleetCore{
		{Name: "core-1", Status: "HEALTHY", Connectivity: "ONLINE", LastSeenAt: &seen, CoreVersion: "2.12.0", Template: cores[0].Template},
		{Name: "fresh", Status: "UNKNOWN", Connectivity: "OFFLINE"},
	}
	tmpl := cdf.Template{Name: "base", Version: 2, CreatedAt: created, Components: []cdf.Component{
		{Key: "com.example.Hello", Version: "1.0.0", RunWith: &cdf.RunWith{PosixUser: "ggc_user"}}}}
	tests := []struct {
		name string
		draw func(b *bytes.Buffer)
	}{
		{"cores_list.txt", func(b *bytes.Buffer) { coreTable(b, cores) }},
		{"cores_show.txt", func(b *bytes.Buffer) { coreDetail(b, detail) }},
		{"task.txt", func(b *bytes.Buffer) { taskTable(b, task) }},
		{"fleet_summary.txt", func(b *bytes.Buffer) { fleetTable(b, summary) }},
		{"fleet_cores.txt", func(b *bytes.Buffer) { fleetCoreTable(b, fleetCores) }},
		{"templates_list.txt", func(b *bytes.Buffer) { templateTable(b, []cdf.Template{tmpl, {Name: "x", Version: 1}}) }},
		{"templates_show.txt", func(b *bytes.Buffer) { templateDetail(b, tmpl) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			tt.draw(&b)
			golden(t, tt.name, b.String())
		})
	}
}

func TestWriteAsFormats(t *testing.T) {
	v := map[string]any{"name": "base", "version": 2}
	var j, y bytes.Buffer
	if err := writeAs(&j, "json", v, nil); err != nil {
		t.Fatal(err)
	}
	if err := writeAs(&y, "yaml", v, nil); err != nil {
		t.Fatal(err)
	}
	if j.String() != "{\n  \"name\": \"base\",\n  \"version\": 2\n}\n" {
		t.Errorf("json: %q", j.String())
	}
	if y.String() != "name: base\nversion: 2\n" {
		t.Errorf("yaml: %q", y.String())
	}
}

func TestProgressLines(t *testing.T) {
	var b bytes.Buffer
	p := newProgress(&b, false)
	p.update(taskView{ID: "T1", Status: cdf.StatusInProgress, Items: []taskItem{{Status: cdf.StatusSuccess}, {Status: cdf.StatusWaiting}}})
	p.finish()
	want := "task T1: InProgress — 1/2 done: Success 1, Failure 0, InProgress 1\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
	b.Reset()
	p = newProgress(&b, true)
	p.update(taskView{ID: "T1", Status: cdf.StatusInProgress, Items: []taskItem{{Status: cdf.StatusSuccess}, {Status: cdf.StatusFailure}}})
	p.finish()
	if !strings.HasPrefix(b.String(), "\r\033[K["+strings.Repeat("#", 30)+"] 2/2") || !strings.HasSuffix(b.String(), "\n") {
		t.Errorf("bar: %q", b.String())
	}
}

func TestCursorParam(t *testing.T) {
	for in, want := range map[string]string{"thingName": "exclusiveStartThingName", "taskId": "exclusiveStartTaskId", "name": "exclusiveStartName"} {
		if got := cursorParam(in); got != want {
			t.Errorf("cursorParam(%q) = %q, want %q", in, got, want)
		}
	}
}
