package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/provisioning"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
)

// provTplServer serves the API with the real provisioning service over SQLite.
func provTplServer(t *testing.T, maxBody int64) *httptest.Server {
	t.Helper()
	db := sqlstoretest.Open(t)
	clock := time.Date(2022, 1, 14, 6, 58, 11, 157_000_000, time.UTC)
	svc := provisioning.New(provisioning.Config{Store: db, Now: func() time.Time {
		clock = clock.Add(time.Second)
		return clock
	}})
	srv := httptest.NewServer(New(Deps{Auth: tokenAuth("prov-token"), Provisioning: svc, MaxBodyBytes: maxBody}).Handler())
	t.Cleanup(srv.Close)
	return srv
}

func provTplDo(t *testing.T, srv *httptest.Server, method, path, body, accept string) (int, http.Header, string) {
	t.Helper()
	return doAPI(t, srv.URL, "prov-token", method, path, body, accept)
}

const provTplDoc = `{
  "Parameters": {"ThingName": {"Type": "String"}},
  "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}}}}
}
`

func TestProvisioningTemplateHTTPLifecycle(t *testing.T) {
	srv := provTplServer(t, 0)
	cdfType := "application/vnd.aws-cdf-v1.0+json"

	code, h, body := provTplDo(t, srv, "PUT", "/provisioningTemplates/core-tpl", provTplDoc, "")
	if code != http.StatusCreated || h.Get("Location") != "/provisioningTemplates/core-tpl" {
		t.Fatalf("PUT new = %d %q %s", code, h.Get("Location"), body)
	}
	code, _, body = provTplDo(t, srv, "PUT", "/provisioningTemplates/core-tpl", provTplDoc, "")
	if code != http.StatusNoContent || body != "" {
		t.Fatalf("PUT replace = %d %s", code, body)
	}
	for _, accept := range []string{"", cdfType, "application/json"} {
		code, h, body = provTplDo(t, srv, "GET", "/provisioningTemplates/core-tpl", "", accept)
		if code != http.StatusOK || body != provTplDoc {
			t.Fatalf("GET (Accept %q) = %d %q; want the document as stored", accept, code, body)
		}
		want := cdfType
		if accept == "application/json" {
			want = "application/json"
		}
		if !strings.HasPrefix(h.Get("Content-Type"), want) {
			t.Errorf("GET (Accept %q) Content-Type = %q, want %s", accept, h.Get("Content-Type"), want)
		}
	}
	if code, _, _ := provTplDo(t, srv, "GET", "/provisioningTemplates/core-tpl", "", "text/html"); code != http.StatusUnsupportedMediaType {
		t.Errorf("GET with Accept text/html = %d, want 415", code)
	}

	code, _, body = provTplDo(t, srv, "PUT", "/provisioningTemplates/b-tpl", provTplDoc, "")
	if code != http.StatusCreated {
		t.Fatalf("PUT b = %d %s", code, body)
	}
	code, _, body = provTplDo(t, srv, "GET", "/provisioningTemplates", "", "")
	if code != http.StatusOK {
		t.Fatalf("list = %d %s", code, body)
	}
	var list struct {
		ProvisioningTemplates []map[string]any `json:"provisioningTemplates"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.ProvisioningTemplates) != 2 {
		t.Fatalf("list = %s", body)
	}
	b, c := list.ProvisioningTemplates[0], list.ProvisioningTemplates[1]
	if b["name"] != "b-tpl" || b["updatedAt"] != nil || b["createdAt"] != "2022-01-14T06:58:14.157Z" {
		t.Errorf("list[0] = %v", b)
	}
	if c["name"] != "core-tpl" || c["createdAt"] != "2022-01-14T06:58:12.157Z" || c["updatedAt"] != "2022-01-14T06:58:13.157Z" {
		t.Errorf("list[1] = %v", c)
	}

	if code, _, body := provTplDo(t, srv, "DELETE", "/provisioningTemplates/core-tpl", "", ""); code != http.StatusNoContent {
		t.Fatalf("DELETE = %d %s", code, body)
	}
	if code, _, body := provTplDo(t, srv, "GET", "/provisioningTemplates/core-tpl", "", ""); code != http.StatusNotFound || !strings.Contains(body, "not found") {
		t.Fatalf("GET deleted = %d %s", code, body)
	}
	if code, _, _ := provTplDo(t, srv, "DELETE", "/provisioningTemplates/core-tpl", "", ""); code != http.StatusNotFound {
		t.Fatalf("DELETE again = %d", code)
	}
}

func TestProvisioningTemplateHTTPEmptyList(t *testing.T) {
	srv := provTplServer(t, 0)
	code, _, body := provTplDo(t, srv, "GET", "/provisioningTemplates", "", "")
	if code != http.StatusOK || strings.TrimSpace(body) != `{"provisioningTemplates":[]}` {
		t.Fatalf("empty list = %d %s", code, body)
	}
}

func TestProvisioningTemplateHTTPBadRequests(t *testing.T) {
	srv := provTplServer(t, 512)
	tests := []struct {
		name, path, body string
		want             int
		message          string
	}{
		{"bad name", "/provisioningTemplates/bad%20name", provTplDoc, http.StatusBadRequest, "is not valid"},
		{"not JSON", "/provisioningTemplates/t", "{", http.StatusBadRequest, "not valid JSON"},
		{"unknown resource type", "/provisioningTemplates/t", `{"Resources": {"x": {"Type": "AWS::S3::Bucket"}}}`, http.StatusBadRequest, "AWS::IoT::Thing"},
		{"empty body", "/provisioningTemplates/t", "", http.StatusBadRequest, "empty"},
		{"too large", "/provisioningTemplates/t", `{"Description": "` + strings.Repeat("x", 600) + `"}`, http.StatusRequestEntityTooLarge, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, body := provTplDo(t, srv, "PUT", tt.path, tt.body, "")
			if code != tt.want || !strings.Contains(body, tt.message) {
				t.Fatalf("PUT = %d %s, want %d with %q", code, body, tt.want, tt.message)
			}
		})
	}
	req, _ := http.NewRequest("PUT", srv.URL+"/provisioningTemplates/t", strings.NewReader(provTplDoc))
	req.Header.Set("Authorization", "Bearer prov-token")
	req.Header.Set("Content-Type", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("PUT text/plain = %d, want 400", resp.StatusCode)
	}
	req, _ = http.NewRequest("GET", srv.URL+"/provisioningTemplates", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET without token = %d, want 401", resp.StatusCode)
	}
}
