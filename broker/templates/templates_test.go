package templates_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
	"github.com/ggfleet/ggfleet/broker/templates"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// clock is a settable test clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// newService returns a template service over a fresh SQLite database.
func newService(t *testing.T, checker templates.ComponentChecker) (*templates.Service, *clock) {
	t.Helper()
	db := sqlstoretest.Open(t)
	c := &clock{t: time.Date(2022, 1, 14, 6, 58, 11, 157_000_000, time.UTC)}
	return templates.New(templates.Config{Store: db, Checker: checker, Now: c.now}), c
}

func editable(name string, keys ...string) cdf.EditableTemplate {
	t := cdf.EditableTemplate{Name: name}
	for _, k := range keys {
		t.Components = append(t.Components, cdf.Component{Key: k, Version: "2.4.0"})
	}
	return t
}

func TestTemplateCreateGetUpdate(t *testing.T) {
	ctx := context.Background()
	svc, clk := newService(t, nil)

	in := editable("edge_cameras", "com.example.Zeta", "aws.greengrass.Cli")
	in.DeploymentPolicies = json.RawMessage(`{"failureHandlingPolicy":"ROLLBACK"}`)
	in.JobConfig = json.RawMessage(`{"timeoutConfig":{"inProgressTimeoutInMinutes":5}}`)
	created, err := svc.Create(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if created.Version != 1 || !created.UpdatedAt.IsZero() || !created.CreatedAt.Equal(clk.t) {
		t.Fatalf("created = %+v", created)
	}
	got, err := svc.Get(ctx, "edge_cameras")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(got)
	want := `{"name":"edge_cameras","version":1,"components":[{"key":"aws.greengrass.Cli","version":"2.4.0"},{"key":"com.example.Zeta","version":"2.4.0"}],` +
		`"jobConfig":{"timeoutConfig":{"inProgressTimeoutInMinutes":5}},"deploymentPolicies":{"failureHandlingPolicy":"ROLLBACK"},` +
		`"createdAt":"2022-01-14T06:58:11.157Z","updatedAt":null}`
	if string(body) != want {
		t.Fatalf("GET =\n%s\nwant\n%s", body, want)
	}

	if _, err := svc.Create(ctx, in); !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("second create: %v, want Conflict", err)
	}

	clk.t = clk.t.Add(time.Hour)
	upd := editable("ignored-body-name", "aws.greengrass.Nucleus")
	v2, err := svc.Update(ctx, "edge_cameras", upd)
	if err != nil {
		t.Fatal(err)
	}
	if v2.Version != 2 || v2.Name != "edge_cameras" || !v2.CreatedAt.Equal(created.CreatedAt.Time) || !v2.UpdatedAt.Equal(clk.t) {
		t.Fatalf("v2 = %+v", v2)
	}
	latest, err := svc.Get(ctx, "edge_cameras")
	if err != nil {
		t.Fatal(err)
	}
	if latest.Version != 2 || latest.JobConfig != nil || latest.DeploymentPolicies != nil ||
		len(latest.Components) != 1 || latest.Components[0].Key != "aws.greengrass.Nucleus" {
		t.Fatalf("latest after a full-replace update = %+v", latest)
	}
	if n, err := svc.Latest(ctx, "edge_cameras"); err != nil || n != 2 {
		t.Fatalf("Latest = %d, %v", n, err)
	}
	v1, err := svc.Version(ctx, "edge_cameras", 1)
	if err != nil || v1.Version != 1 || len(v1.Components) != 2 {
		t.Fatalf("Version(1) = %+v, %v", v1, err)
	}
	if _, err := svc.Update(ctx, "missing", upd); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("update of a missing template: %v, want NotFound", err)
	}
	if _, err := svc.Get(ctx, "missing"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("get of a missing template: %v, want NotFound", err)
	}
	if _, err := svc.Latest(ctx, "missing"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("Latest of a missing template: %v, want NotFound", err)
	}

	versions := []struct {
		version string
		want    int
		kind    errkind.Kind
	}{
		{"current", 2, -1},
		{"1", 1, -1},
		{"2", 2, -1},
		{"3", 0, errkind.NotFound},
		{"0", 0, errkind.Invalid},
		{"abc", 0, errkind.Invalid},
		{"-1", 0, errkind.Invalid},
	}
	for _, tc := range versions {
		t.Run("version "+tc.version, func(t *testing.T) {
			got, err := svc.GetVersion(ctx, "edge_cameras", tc.version)
			if tc.kind >= 0 {
				if !errkind.Is(err, tc.kind) {
					t.Fatalf("GetVersion(%q) error %v, want kind %d", tc.version, err, tc.kind)
				}
				return
			}
			if err != nil || got.Version != tc.want {
				t.Fatalf("GetVersion(%q) = %d, %v; want %d", tc.version, got.Version, err, tc.want)
			}
		})
	}

	if err := svc.Delete(ctx, "edge_cameras"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Get(ctx, "edge_cameras"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("get after delete: %v, want NotFound", err)
	}
	if _, err := svc.Version(ctx, "edge_cameras", 1); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("version 1 after delete: %v, want NotFound", err)
	}
	if err := svc.Delete(ctx, "edge_cameras"); err != nil {
		t.Fatalf("deleting a missing template: %v", err)
	}
	if _, err := svc.Create(ctx, in); err != nil {
		t.Fatalf("re-create after delete: %v", err)
	}
}

func TestTemplateValidation(t *testing.T) {
	long := strings.Repeat("a", 91)
	tests := []struct {
		name    string
		in      cdf.EditableTemplate
		wantMsg string
	}{
		{"missing name", editable("", "a.b"), "name is required"},
		{"bad name", editable("has:colon", "a.b"), "not valid"},
		{"name too long", editable(long, "a.b"), "1 to 90 characters"},
		{"no components", editable("t"), "components is required"},
		{"empty key", cdf.EditableTemplate{Name: "t", Components: []cdf.Component{{Version: "1.0.0"}}}, "components[0].key is required"},
		{"bad key", cdf.EditableTemplate{Name: "t", Components: []cdf.Component{{Key: ".bad", Version: "1.0.0"}}}, `".bad" is not a valid component name`},
		{"empty version", cdf.EditableTemplate{Name: "t", Components: []cdf.Component{{Key: "a.b"}}}, "version is required for component a.b"},
		{"bad version", cdf.EditableTemplate{Name: "t", Components: []cdf.Component{{Key: "a.b", Version: "latest"}}}, `"latest" of component a.b`},
		{"duplicate", editable("t", "a.b", "a.b"), "a.b is listed twice"},
		{"bad merge", cdf.EditableTemplate{Name: "t", Components: []cdf.Component{{Key: "a.b", Version: "1.0.0",
			ConfigurationUpdate: &cdf.ConfigurationUpdate{Merge: "{not json"}}}}, "merge of component a.b"},
		{"jobConfig not an object", cdf.EditableTemplate{Name: "t", Components: []cdf.Component{{Key: "a.b", Version: "1.0.0"}},
			JobConfig: json.RawMessage(`[1]`)}, "jobConfig is not a valid job configuration: it must be a JSON object"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := templates.Validate(tc.in)
			if !errkind.Is(err, errkind.Invalid) || !strings.Contains(errkind.Message(err), tc.wantMsg) {
				t.Fatalf("Validate = %v, want Invalid containing %q", err, tc.wantMsg)
			}
		})
	}
	ok := cdf.EditableTemplate{Name: "Integration-Test_1", Components: []cdf.Component{
		{Key: "aws.greengrass.Cli", Version: "2.4.0"},
		{Key: "com.example.Py", Version: "1.0.0-beta.1+build.5", ConfigurationUpdate: &cdf.ConfigurationUpdate{Merge: `{"a":1}`, Reset: []string{"/tags"}}},
	}, DeploymentPolicies: json.RawMessage(`{}`)}
	if err := templates.Validate(ok); err != nil {
		t.Fatalf("valid template rejected: %v", err)
	}
}

// rejectChecker rejects one component key, as the aws catalogue would.
type rejectChecker struct{ key string }

func (c rejectChecker) CheckComponent(ctx context.Context, key, version string) error {
	if key == c.key {
		return errkind.New(errkind.Invalid, "component %s:%s does not exist in the Greengrass catalogue", key, version)
	}
	return nil
}

func TestTemplateComponentChecker(t *testing.T) {
	ctx := context.Background()
	svc, _ := newService(t, rejectChecker{key: "com.example.Missing"})
	_, err := svc.Create(ctx, editable("t", "aws.greengrass.Cli", "com.example.Missing"))
	if !errkind.Is(err, errkind.Invalid) || !strings.Contains(errkind.Message(err), "com.example.Missing") {
		t.Fatalf("create with an unknown component: %v", err)
	}
	if _, err := svc.Get(ctx, "t"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("a rejected template was stored: %v", err)
	}
	if _, err := svc.Create(ctx, editable("t", "aws.greengrass.Cli")); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Update(ctx, "t", editable("t", "com.example.Missing")); !errkind.Is(err, errkind.Invalid) {
		t.Fatalf("update with an unknown component: %v", err)
	}
}

func TestTemplateListing(t *testing.T) {
	ctx := context.Background()
	svc, _ := newService(t, nil)
	for _, name := range []string{"charlie", "alpha", "echo", "bravo", "delta"} {
		if _, err := svc.Create(ctx, editable(name, "aws.greengrass.Cli")); err != nil {
			t.Fatal(err)
		}
	}
	for range 11 {
		if _, err := svc.Update(ctx, "bravo", editable("bravo", "aws.greengrass.Cli")); err != nil {
			t.Fatal(err)
		}
	}

	var pages []string
	after := ""
	for {
		list, more, err := svc.List(ctx, 2, after)
		if err != nil {
			t.Fatal(err)
		}
		var page []string
		for _, tpl := range list {
			if tpl.Components != nil {
				t.Errorf("list item %s has components", tpl.Name)
			}
			page = append(page, fmt.Sprintf("%s@%d", tpl.Name, tpl.Version))
		}
		pages = append(pages, strings.Join(page, ","))
		if !more {
			break
		}
		after = list[len(list)-1].Name
	}
	if got, want := strings.Join(pages, " | "), "alpha@1,bravo@12 | charlie@1,delta@1 | echo@1"; got != want {
		t.Fatalf("pages = %s, want %s", got, want)
	}

	var versions []int
	cursor := ""
	for {
		list, more, err := svc.ListVersions(ctx, "bravo", 5, cursor)
		if err != nil {
			t.Fatal(err)
		}
		for _, tpl := range list {
			if len(tpl.Components) != 1 {
				t.Errorf("version %d has %d components, want 1", tpl.Version, len(tpl.Components))
			}
			versions = append(versions, tpl.Version)
		}
		if !more {
			break
		}
		cursor = fmt.Sprint(list[len(list)-1].Version)
	}
	if got := fmt.Sprint(versions); got != "[1 2 3 4 5 6 7 8 9 10 11 12]" {
		t.Fatalf("versions = %s, want 1..12 in numeric order", got)
	}
	list, more, err := svc.ListVersions(ctx, "unknown", 10, "")
	if err != nil || more || list == nil || len(list) != 0 {
		t.Fatalf("versions of an unknown template = %v %v %v, want an empty list", list, more, err)
	}
	if _, _, err := svc.ListVersions(ctx, "bravo", 10, "x"); !errkind.Is(err, errkind.Invalid) {
		t.Fatalf("bad exclusiveStartVersion: %v, want Invalid", err)
	}
}

// failingChecker fails every check with err, as a throttled or unreachable
// catalogue would.
type failingChecker struct{ err error }

func (c failingChecker) CheckComponent(ctx context.Context, key, version string) error { return c.err }

// TestTemplateCheckerUnavailable: a catalogue that cannot answer is not the
// caller's fault (503, not 400), and nothing is stored.
func TestTemplateCheckerUnavailable(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		err  error
		kind errkind.Kind
	}{
		{"throttled", errkind.New(errkind.Unavailable, "describe component: AWS ThrottlingException"), errkind.Unavailable},
		{"unclassified", fmt.Errorf("describe component: connection reset"), errkind.Other},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc, _ := newService(t, failingChecker{err: tc.err})
			_, err := svc.Create(ctx, editable("t", "aws.greengrass.Cli"))
			if err == nil || errkind.KindOf(err) != tc.kind || errkind.Is(err, errkind.Invalid) {
				t.Fatalf("create: %v (kind %v), want kind %v", err, errkind.KindOf(err), tc.kind)
			}
			if _, err := svc.Get(ctx, "t"); !errkind.Is(err, errkind.NotFound) {
				t.Fatalf("a template whose components could not be checked was stored: %v", err)
			}
		})
	}
}
