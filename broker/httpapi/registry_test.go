package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/httpapi"
	"github.com/ggfleet/ggfleet/broker/provider/local"
	"github.com/ggfleet/ggfleet/broker/provider/providertest"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
)

const registryTestToken = "registry-test-token"

// registryTestAuth accepts only registryTestToken.
type registryTestAuth struct{}

func (registryTestAuth) Authenticate(_ context.Context, token string) error {
	if token != registryTestToken {
		return errkind.New(errkind.Unauthorized, "bad token")
	}
	return nil
}

// newRegistryServer serves the API over a local provider on a fresh database.
func newRegistryServer(t *testing.T) (*local.Provider, *httptest.Server) {
	t.Helper()
	dir := t.TempDir()
	db := sqlstoretest.OpenIn(t, dir)
	p, err := local.New(local.Config{Store: db.Registry(), ArtifactsDir: filepath.Join(dir, "artifacts")})
	if err != nil {
		t.Fatalf("local.New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	api := httpapi.New(httpapi.Deps{Registry: p, Artifacts: p, Auth: registryTestAuth{}})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	return p, srv
}

// registryDo sends an authenticated request and returns status, headers and body.
func registryDo(t *testing.T, srv *httptest.Server, method, path, body string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+registryTestToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// wantMessage fails unless body is {"message"} containing substr.
func wantMessage(t *testing.T, body []byte, substr string) {
	t.Helper()
	var m struct {
		Message string `json:"message"`
	}
	if err := json.Unmarshal(body, &m); err != nil || m.Message == "" {
		t.Fatalf("body %s is not {\"message\": ...}", body)
	}
	if !strings.Contains(m.Message, substr) {
		t.Fatalf("message %q does not mention %q", m.Message, substr)
	}
}

func TestRegistryGetThing(t *testing.T) {
	ctx := context.Background()
	p, srv := newRegistryServer(t)

	if err := p.CreateThing(ctx, "bare", "", nil); err != nil {
		t.Fatal(err)
	}
	if err := p.CreateThing(ctx, "core-1", "", map[string]string{"site": "lab"}); err != nil {
		t.Fatal(err)
	}
	is := providertest.NewIssuer(t)
	id, err := p.RegisterCertificate(ctx, is.Issue(t, "core-1"), is.CAPEM, "ACTIVE")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AttachThingPrincipal(ctx, "core-1", id); err != nil {
		t.Fatal(err)
	}
	if _, err := p.PutPolicy(ctx, "core-policy", `{"Version":"2012-10-17","Statement":[]}`); err != nil {
		t.Fatal(err)
	}
	if err := p.AttachPolicy(ctx, "core-policy", id); err != nil {
		t.Fatal(err)
	}
	if err := p.CreateThingGroup(ctx, "fleet", ""); err != nil {
		t.Fatal(err)
	}
	if err := p.AddThingToGroup(ctx, "core-1", "fleet"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, path string
		status     int
		want       string // exact JSON for 200, message substring otherwise
	}{
		{"full", "/registry/things/core-1", 200,
			`{"thingName":"core-1","thingGroups":["fleet"],"attributes":{"site":"lab"},"principals":["` + id + `"],"policies":["core-policy"]}`},
		{"empty lists are arrays", "/registry/things/bare", 200,
			`{"thingName":"bare","thingGroups":[],"attributes":{},"principals":[],"policies":[]}`},
		{"missing", "/registry/things/ghost", 404, `"ghost"`},
		{"bad name", "/registry/things/bad:name", 400, "not valid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := registryDo(t, srv, "GET", tc.path, "")
			if status != tc.status {
				t.Fatalf("status = %d, want %d; body %s", status, tc.status, body)
			}
			if tc.status != 200 {
				wantMessage(t, body, tc.want)
				return
			}
			var got, want any
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tc.want), &want); err != nil {
				t.Fatal(err)
			}
			gb, _ := json.Marshal(got)
			wb, _ := json.Marshal(want)
			if string(gb) != string(wb) {
				t.Fatalf("body = %s, want %s", gb, wb)
			}
		})
	}
}

func TestRegistryAssociatedClientDevices(t *testing.T) {
	ctx := context.Background()
	p, srv := newRegistryServer(t)
	for _, n := range []string{"core-1", "dev-b", "dev-a"} {
		if err := p.CreateThing(ctx, n, "", nil); err != nil {
			t.Fatal(err)
		}
	}

	status, _, body := registryDo(t, srv, "GET", "/registry/coreDevices/core-1/associatedClientDevices", "")
	if status != 200 || strings.TrimSpace(string(body)) != `{"associatedClientDevices":[]}` {
		t.Fatalf("before association: %d %s, want 200 with an empty array", status, body)
	}

	if err := p.MarkCoreRegistered(ctx, "core-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.AssociateClientDevices(ctx, "core-1", []string{"dev-b", "dev-a"}); err != nil {
		t.Fatal(err)
	}
	status, _, body = registryDo(t, srv, "GET", "/registry/coreDevices/core-1/associatedClientDevices", "")
	if status != 200 {
		t.Fatalf("status = %d, body %s", status, body)
	}
	var got struct {
		AssociatedClientDevices []struct {
			ThingName            string  `json:"thingName"`
			AssociationTimestamp *string `json:"associationTimestamp"`
		} `json:"associatedClientDevices"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	list := got.AssociatedClientDevices
	if len(list) != 2 || list[0].ThingName != "dev-a" || list[1].ThingName != "dev-b" {
		t.Fatalf("associatedClientDevices = %s, want dev-a then dev-b", body)
	}
	for _, a := range list {
		if a.AssociationTimestamp == nil || !strings.HasSuffix(*a.AssociationTimestamp, "Z") || len(*a.AssociationTimestamp) != len("2006-01-02T15:04:05.000Z") {
			t.Fatalf("associationTimestamp of %s = %v, want a millisecond UTC timestamp", a.ThingName, a.AssociationTimestamp)
		}
	}

	status, _, body = registryDo(t, srv, "GET", "/registry/coreDevices/bad:core/associatedClientDevices", "")
	if status != 400 {
		t.Fatalf("bad core name: status %d, want 400", status)
	}
	wantMessage(t, body, "not valid")
}

func TestRegistryPutPolicy(t *testing.T) {
	ctx := context.Background()
	p, srv := newRegistryServer(t)
	doc := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"*"}]}`

	tests := []struct {
		name, policy, body string
		status             int
		message            string
	}{
		{"create", "my.policy", doc, 201, ""},
		{"replace", "my.policy", doc, 204, ""},
		{"bad name", "bad:name", doc, 400, "policy name"},
		{"array body", "p2", `[1,2]`, 400, "not an array"},
		{"null body", "p2", `null`, 400, "JSON object"},
		{"string body", "p2", `"x"`, 400, "not a string"},
		{"malformed", "p2", `{"Version":`, 400, "malformed JSON"},
		{"empty", "p2", ``, 400, "empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := registryDo(t, srv, "PUT", "/registry/policies/"+tc.policy, tc.body)
			if status != tc.status {
				t.Fatalf("status = %d, want %d; body %s", status, tc.status, body)
			}
			if tc.message != "" {
				wantMessage(t, body, tc.message)
			}
		})
	}
	got, err := p.GetPolicy(ctx, "my.policy")
	if err != nil {
		t.Fatal(err)
	}
	if got.Document != doc {
		t.Fatalf("stored document = %s, want %s as sent", got.Document, doc)
	}
	if _, err := p.GetPolicy(ctx, "p2"); err == nil {
		t.Fatal("a rejected policy was stored")
	}
}

func TestRegistryNeedsToken(t *testing.T) {
	_, srv := newRegistryServer(t)
	for _, path := range []string{"/registry/things/x", "/registry/coreDevices/x/associatedClientDevices", "/artifacts/a.zip"} {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("GET %s without a token: status %d, want 401", path, resp.StatusCode)
		}
	}
}
