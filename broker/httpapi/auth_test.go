package httpapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// authFunc adapts a function to Authenticator.
type authFunc func(ctx context.Context, token string) error

func (f authFunc) Authenticate(ctx context.Context, token string) error { return f(ctx, token) }

// TestAuthenticationOutcomes: a refused token is 401; a token that could
// not be checked (the database is down) is 503 with a message, never a 401
// that sends the operator after a token that is fine.
func TestAuthenticationOutcomes(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"valid", nil, http.StatusNoContent},
		{"refused", errkind.New(errkind.Unauthorized, "invalid token"), http.StatusUnauthorized},
		{"database down", errkind.New(errkind.Unavailable, "the database is unavailable"), http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok := Route{Pattern: "GET /probe", Handler: func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }}
			api := New(Deps{Auth: authFunc(func(context.Context, string) error { return tt.err }), ExtraRoutes: []Route{ok}})
			srv := httptest.NewServer(api.Handler())
			t.Cleanup(srv.Close)
			req, _ := http.NewRequest("GET", srv.URL+"/probe", nil)
			req.Header.Set("Authorization", "Bearer ggf_whatever")
			req.Header.Set("Accept", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}
