package httpapi

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/fleet"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

type fleetTestAuth struct{}

func (fleetTestAuth) Authenticate(_ context.Context, token string) error {
	if token != "fleet-token" {
		return errkind.New(errkind.Unauthorized, "bad token")
	}
	return nil
}

type fakeFleet struct {
	s     cdf.FleetSummary
	cores cdf.FleetCoreList
	err   error
	got   *fleet.CoreQuery // the last query Cores was asked
}

func (f fakeFleet) Summary(context.Context) (cdf.FleetSummary, error) { return f.s, f.err }

func (f fakeFleet) Cores(_ context.Context, q fleet.CoreQuery) (cdf.FleetCoreList, error) {
	if f.got != nil {
		*f.got = q
	}
	return f.cores, f.err
}

func TestFleetSummaryHTTP(t *testing.T) {
	summary := cdf.FleetSummary{Templates: map[string]cdf.FleetTemplate{
		"None": {Versions: map[string]cdf.FleetVersion{"0": {ReportedInUse: 1}}},
		"IntegrationTest": {LatestVersion: 2, Versions: map[string]cdf.FleetVersion{
			"2": {DesiredInUse: 1, ReportedInUse: 1, LastDeploymentSuccess: 1},
		}},
	}}
	tests := []struct {
		name     string
		svc      FleetService
		token    string
		wantCode int
		wantBody string
	}{
		{"summary", fakeFleet{s: summary}, "fleet-token", http.StatusOK,
			`{"templates":{"IntegrationTest":{"latestVersion":2,"versions":{"2":{"desiredInUse":1,"reportedInUse":1,"lastDeploymentSuccess":1,"lastDeploymentFailed":0,"lastDeploymentInProgress":0}}},` +
				`"None":{"latestVersion":0,"versions":{"0":{"desiredInUse":0,"reportedInUse":1,"lastDeploymentSuccess":0,"lastDeploymentFailed":0,"lastDeploymentInProgress":0}}}}}`},
		{"database down", fakeFleet{err: errkind.New(errkind.Unavailable, "the database cannot be read")}, "fleet-token", http.StatusServiceUnavailable,
			`{"message":"the database cannot be read"}`},
		{"not configured", nil, "fleet-token", http.StatusServiceUnavailable,
			`{"message":"the fleet summary is not configured on this broker"}`},
		{"no token", fakeFleet{s: summary}, "", http.StatusUnauthorized, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(New(Deps{Auth: fleetTestAuth{}, Fleet: tt.svc}).Handler())
			t.Cleanup(srv.Close)
			req, err := http.NewRequest(http.MethodGet, srv.URL+"/fleet/summary", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			req.Header.Set("Accept", cdf.MediaType)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status %d, want %d (body %s)", resp.StatusCode, tt.wantCode, b)
			}
			if tt.wantBody != "" && strings.TrimSpace(string(b)) != tt.wantBody {
				t.Errorf("body\n got %s\nwant %s", b, tt.wantBody)
			}
		})
	}
}

// TestFleetCoresHTTP checks GET /fleet/cores: every filter reaches the
// service, the page size is echoed, and bad values are a 400 that says
// what to send.
func TestFleetCoresHTTP(t *testing.T) {
	list := cdf.FleetCoreList{Matching: 7, Cores: []cdf.FleetCore{{Name: "c1", Status: "HEALTHY", Connectivity: "ONLINE",
		Template: cdf.CoreTemplate{Desired: cdf.TemplateRef{Name: "T", Version: 2}, Reported: cdf.ReportedTemplate{Name: "None", DeploymentStatus: "None"}}}},
		Pagination: &cdf.Pagination{LastEvaluated: map[string]any{"thingName": "c1"}}}
	tests := []struct {
		name      string
		query     string
		svcErr    error
		wantCode  int
		wantBody  string
		wantQuery *fleet.CoreQuery
	}{
		{name: "every filter", query: "?status=HEALTHY&connectivity=ONLINE&nameContains=c&templateName=T&templateVersion=2&count=1&exclusiveStartThingName=c0",
			wantCode: http.StatusOK,
			wantBody: `{"cores":[{"name":"c1","status":"HEALTHY","connectivity":"ONLINE","template":{"desired":{"name":"T","version":2},"reported":{"name":"None","version":0,"deploymentStatus":"None"}}}],` +
				`"matching":7,"pagination":{"count":"1","lastEvaluated":{"thingName":"c1"}}}`,
			wantQuery: &fleet.CoreQuery{Status: "HEALTHY", Connectivity: "ONLINE", NameContains: "c", TemplateName: "T", TemplateVersion: 2, After: "c0", Count: 1}},
		{name: "defaults", wantCode: http.StatusOK, wantQuery: &fleet.CoreQuery{Count: 100}},
		{name: "bad version", query: "?templateName=T&templateVersion=two", wantCode: http.StatusBadRequest,
			wantBody: `{"message":"templateVersion must be a positive whole number, got \"two\""}`},
		{name: "bad count", query: "?count=0", wantCode: http.StatusBadRequest,
			wantBody: `{"message":"count must be a whole number from 1 to 1000, got \"0\""}`},
		{name: "refused by the service", query: "?status=ok", svcErr: errkind.New(errkind.Invalid, "status must be one of HEALTHY, UNHEALTHY, UNKNOWN, got \"ok\""),
			wantCode: http.StatusBadRequest, wantBody: `{"message":"status must be one of HEALTHY, UNHEALTHY, UNKNOWN, got \"ok\""}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got fleet.CoreQuery
			svc := fakeFleet{cores: list, err: tt.svcErr, got: &got}
			srv := httptest.NewServer(New(Deps{Auth: fleetTestAuth{}, Fleet: svc}).Handler())
			t.Cleanup(srv.Close)
			code, _, b := doAPI(t, srv.URL, "fleet-token", http.MethodGet, "/fleet/cores"+tt.query, "", "")
			if code != tt.wantCode {
				t.Fatalf("status %d, want %d (body %s)", code, tt.wantCode, b)
			}
			if tt.wantBody != "" && strings.TrimSpace(b) != tt.wantBody {
				t.Errorf("body\n got %s\nwant %s", b, tt.wantBody)
			}
			if tt.wantQuery != nil && got != *tt.wantQuery {
				t.Errorf("query %+v, want %+v", got, *tt.wantQuery)
			}
		})
	}
}
