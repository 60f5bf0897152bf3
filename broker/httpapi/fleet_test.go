package httpapi

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/broker/errkind"
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
	s   cdf.FleetSummary
	err error
}

func (f fakeFleet) Summary(context.Context) (cdf.FleetSummary, error) { return f.s, f.err }

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
