package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
	"github.com/ggfleet/ggfleet/broker/templates"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// tplServer serves the API with the real template service over SQLite.
func tplServer(t *testing.T) *httptest.Server {
	t.Helper()
	db := sqlstoretest.Open(t)
	now := time.Date(2022, 1, 14, 6, 58, 11, 157_000_000, time.UTC)
	svc := templates.New(templates.Config{Store: db, Now: func() time.Time { return now }})
	srv := httptest.NewServer(New(Deps{Auth: tokenAuth("tpl-token"), Templates: svc}).Handler())
	t.Cleanup(srv.Close)
	return srv
}

func tplDo(t *testing.T, srv *httptest.Server, method, path, body string) (int, http.Header, string) {
	t.Helper()
	code, h, b := doAPI(t, srv.URL, "tpl-token", method, path, body, cdf.MediaType)
	return code, h, strings.TrimSpace(b)
}

const tplCreateBody = `{"name":"edge_cameras","components":[{"key":"com.example.PythonRuntime","version":"1.0.0","configurationUpdate":{"merge":"{\"pythonVersion\":\"3.7\"}","reset":["/tags"]},"runWith":{"posixUser":"ggc_user:ggc_group"}},{"key":"aws.greengrass.Cli","version":"2.4.0"}],
 "deploymentPolicies":{"failureHandlingPolicy":"ROLLBACK","componentUpdatePolicy":{"timeoutInSeconds":60,"action":"NOTIFY_COMPONENTS"},"configurationValidationPolicy":{"timeoutInSeconds":30}}}`

func TestTemplateHTTPLifecycle(t *testing.T) {
	srv := tplServer(t)

	status, h, body := tplDo(t, srv, "POST", "/templates", tplCreateBody)
	if status != http.StatusCreated || body != "" || h.Get("location") != "/templates/edge_cameras" ||
		h.Get("x-name") != "edge_cameras" || h.Get("x-version") != "1" {
		t.Fatalf("POST = %d %v %q", status, h, body)
	}
	if status, _, body := tplDo(t, srv, "POST", "/templates", tplCreateBody); status != http.StatusConflict || !strings.Contains(body, "already exists") {
		t.Fatalf("second POST = %d %s, want 409", status, body)
	}

	status, h, body = tplDo(t, srv, "GET", "/templates/edge_cameras", "")
	want := `{"name":"edge_cameras","version":1,"components":[{"key":"aws.greengrass.Cli","version":"2.4.0"},` +
		`{"key":"com.example.PythonRuntime","version":"1.0.0","configurationUpdate":{"merge":"{\"pythonVersion\":\"3.7\"}","reset":["/tags"]},"runWith":{"posixUser":"ggc_user:ggc_group"}}],` +
		`"deploymentPolicies":{"failureHandlingPolicy":"ROLLBACK","componentUpdatePolicy":{"timeoutInSeconds":60,"action":"NOTIFY_COMPONENTS"},"configurationValidationPolicy":{"timeoutInSeconds":30}},` +
		`"createdAt":"2022-01-14T06:58:11.157Z","updatedAt":null}`
	if status != http.StatusOK || body != want || !strings.HasPrefix(h.Get("Content-Type"), "application/vnd.aws-cdf-v1.0+json") {
		t.Fatalf("GET = %d %s\nwant %s", status, body, want)
	}

	status, h, body = tplDo(t, srv, "PUT", "/templates/edge_cameras", `{"name":"other","components":[{"key":"aws.greengrass.Cli","version":"2.5.0"}]}`)
	if status != http.StatusNoContent || body != "" || h.Get("location") != "/templates/edge_cameras" ||
		h.Get("x-name") != "edge_cameras" || h.Get("x-version") != "2" {
		t.Fatalf("PUT = %d %v %q", status, h, body)
	}
	if status, _, body := tplDo(t, srv, "PUT", "/templates/missing", `{"components":[{"key":"a.b","version":"1.0.0"}]}`); status != http.StatusNotFound || !strings.Contains(body, `"message"`) {
		t.Fatalf("PUT missing = %d %s, want 404", status, body)
	}

	for _, tc := range []struct{ path, wantVersion string }{
		{"/templates/edge_cameras/versions/current", `"version":2`},
		{"/templates/edge_cameras/versions/1", `"version":1`},
		{"/templates/edge_cameras", `"version":2`},
	} {
		status, _, body := tplDo(t, srv, "GET", tc.path, "")
		if status != http.StatusOK || !strings.Contains(body, tc.wantVersion) {
			t.Errorf("GET %s = %d %s, want %s", tc.path, status, body, tc.wantVersion)
		}
	}
	for _, path := range []string{"/templates/edge_cameras/versions/3", "/templates/missing", "/templates/missing/versions/current"} {
		if status, _, _ := tplDo(t, srv, "GET", path, ""); status != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, status)
		}
	}

	status, _, body = tplDo(t, srv, "GET", "/templates", "")
	if status != http.StatusOK || strings.Contains(body, "components") || strings.Contains(body, "pagination") ||
		!strings.Contains(body, `"templates":[{"name":"edge_cameras","version":2`) {
		t.Fatalf("GET /templates = %d %s", status, body)
	}
	status, _, body = tplDo(t, srv, "GET", "/templates/edge_cameras/versions?count=1", "")
	if status != http.StatusOK || !strings.Contains(body, `"pagination":{"count":"1","lastEvaluated":{"version":1}}`) ||
		!strings.Contains(body, `"components"`) {
		t.Fatalf("GET versions?count=1 = %d %s", status, body)
	}
	status, _, body = tplDo(t, srv, "GET", "/templates/edge_cameras/versions?count=1&exclusiveStartVersion=1", "")
	if status != http.StatusOK || !strings.Contains(body, `"version":2`) || strings.Contains(body, "lastEvaluated") {
		t.Fatalf("GET versions page 2 = %d %s", status, body)
	}
	if status, _, body := tplDo(t, srv, "GET", "/templates/unknown/versions", ""); status != http.StatusOK || body != `{"templates":[]}` {
		t.Fatalf("versions of unknown = %d %s", status, body)
	}

	for range 2 {
		if status, _, body := tplDo(t, srv, "DELETE", "/templates/edge_cameras", ""); status != http.StatusNoContent || body != "" {
			t.Fatalf("DELETE = %d %q, want 204", status, body)
		}
	}
	if status, _, _ := tplDo(t, srv, "GET", "/templates/edge_cameras", ""); status != http.StatusNotFound {
		t.Fatalf("GET after DELETE = %d, want 404", status)
	}
}

func TestTemplateHTTPListPagination(t *testing.T) {
	srv := tplServer(t)
	for _, name := range []string{"b", "a", "c"} {
		if status, _, body := tplDo(t, srv, "POST", "/templates", `{"name":"`+name+`","components":[{"key":"a.b","version":"1.0.0"}]}`); status != http.StatusCreated {
			t.Fatalf("POST %s = %d %s", name, status, body)
		}
	}
	var names []string
	cursor := ""
	for range 5 {
		_, _, body := tplDo(t, srv, "GET", "/templates?count=2"+cursor, "")
		var page struct {
			Templates  []struct{ Name string }
			Pagination struct {
				Count         string
				LastEvaluated map[string]string
			}
		}
		if err := json.Unmarshal([]byte(body), &page); err != nil {
			t.Fatal(err)
		}
		if page.Pagination.Count != "2" {
			t.Fatalf("pagination.count = %q, want \"2\": %s", page.Pagination.Count, body)
		}
		for _, tpl := range page.Templates {
			names = append(names, tpl.Name)
		}
		if page.Pagination.LastEvaluated == nil {
			break
		}
		cursor = "&exclusiveStartName=" + page.Pagination.LastEvaluated["name"]
	}
	if strings.Join(names, ",") != "a,b,c" {
		t.Fatalf("names = %v, want a,b,c", names)
	}
	if status, _, _ := tplDo(t, srv, "GET", "/templates?count=0", ""); status != http.StatusBadRequest {
		t.Fatalf("count=0 = %d, want 400", status)
	}
}

func TestTemplateHTTPBadRequests(t *testing.T) {
	srv := tplServer(t)
	tests := []struct {
		name, method, path, body, wantMsg string
	}{
		{"missing name", "POST", "/templates", `{"components":[{"key":"a.b","version":"1.0.0"}]}`, "name is required"},
		{"missing components", "POST", "/templates", `{"name":"t"}`, "components is required"},
		{"empty components", "POST", "/templates", `{"name":"t","components":[]}`, "components is required"},
		{"numeric version", "POST", "/templates", `{"name":"t","components":[{"key":"a.b","version":"1.0.0"},{"key":"c.d","version":1}]}`, `components[1].version of component \"c.d\" must be a JSON string`},
		{"bad name", "POST", "/templates", `{"name":"a:b","components":[{"key":"a.b","version":"1.0.0"}]}`, "is not valid"},
		{"malformed", "POST", "/templates", `{"name":`, "malformed JSON"},
		{"empty body", "POST", "/templates", ``, "body is empty"},
		{"array body", "POST", "/templates", `[]`, "must be"},
		{"bad path name", "PUT", "/templates/a%3Ab", `{"components":[{"key":"a.b","version":"1.0.0"}]}`, "is not valid"},
		{"put numeric version", "PUT", "/templates/t", `{"components":[{"key":"a.b","version":2.5}]}`, "not the number 2.5"},
		{"bad version param", "GET", "/templates/t/versions/x", ``, "whole number"},
		{"bad exclusiveStartVersion", "GET", "/templates/t/versions?exclusiveStartVersion=x", ``, "exclusiveStartVersion"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := tplDo(t, srv, tc.method, tc.path, tc.body)
			if status != http.StatusBadRequest || !strings.Contains(body, tc.wantMsg) {
				t.Fatalf("%s %s = %d %s, want 400 containing %q", tc.method, tc.path, status, body, tc.wantMsg)
			}
		})
	}
}

// FuzzDecodeTemplate checks the template request decoder and validation
// never panic and only ever reject input as invalid (a 400, never a 5xx).
func FuzzDecodeTemplate(f *testing.F) {
	f.Add([]byte(tplCreateBody), "")
	f.Add([]byte(`{"name":"t","components":[{"key":"a.b","version":1}]}`), "")
	f.Add([]byte(`{"components":[{"key":"a.b","version":"1.0.0"}],"jobConfig":[]}`), "t")
	f.Add([]byte(`{"name":"t","components":[{"key":"a.b","version":"1.0.0","configurationUpdate":{"merge":"{"}}]}`), "")
	f.Add([]byte(`null`), "x")
	f.Add([]byte(`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`), "")
	f.Fuzz(func(t *testing.T, body []byte, pathName string) {
		in, err := decodeTemplate(body, pathName)
		if err != nil {
			if !errkind.Is(err, errkind.Invalid) || errkind.Message(err) == "" {
				t.Fatalf("decodeTemplate(%q) = %v: not an Invalid error with a message", body, err)
			}
			return
		}
		if templates.Validate(in) != nil || len(in.Components) == 0 || in.Name == "" {
			t.Fatalf("decodeTemplate(%q) accepted an invalid template %+v", body, in)
		}
	})
}
