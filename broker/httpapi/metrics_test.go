package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

const metricsToken = "metrics-test-token"

type metricsAuth struct{}

func (metricsAuth) Authenticate(_ context.Context, token string) error {
	if token != metricsToken {
		return errkind.New(errkind.Unauthorized, "bad token")
	}
	return nil
}

type fakeTaskCounter struct {
	counts map[string]map[string]int
	err    error
}

func (f fakeTaskCounter) CountTasks(context.Context) (map[string]map[string]int, error) {
	return f.counts, f.err
}

// metricsServer serves an API with metrics and two extra routes: one that
// needs http.Flusher (as SSE does) and one that panics.
func metricsServer(t *testing.T, m *Metrics) *httptest.Server {
	t.Helper()
	extra := []Route{
		{Pattern: "GET /test/flush", Open: true, Raw: true, Handler: func(w http.ResponseWriter, r *http.Request) {
			f, ok := w.(http.Flusher)
			if !ok {
				http.Error(w, "no flusher", http.StatusInternalServerError)
				return
			}
			w.WriteHeader(http.StatusAccepted)
			f.Flush()
		}},
		{Pattern: "GET /test/panic", Open: true, Raw: true, Handler: func(http.ResponseWriter, *http.Request) {
			panic("boom")
		}},
	}
	srv := httptest.NewServer(New(Deps{Auth: metricsAuth{}, Metrics: m, ExtraRoutes: extra}).Handler())
	t.Cleanup(srv.Close)
	return srv
}

func metricsGet(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestMetricsScrape(t *testing.T) {
	m := NewMetrics(MetricsConfig{
		Tasks: fakeTaskCounter{counts: map[string]map[string]int{
			"core":       {"Success": 3, "Failure": 1},
			"deployment": {"InProgress": 2},
		}},
		MQTTConnections: func() int { return 7 },
	})
	srv := metricsServer(t, m)

	for _, req := range []struct {
		path, token string
		want        int
	}{
		{"/healthz", "", 200},
		{"/healthz", "", 200},
		{"/cores/core-1", "", 401},
		{"/cores/core-2", "", 401},
		{"/no/such/path", metricsToken, 404},
		{"/test/flush", "", 202},
		{"/test/panic", "", 500},
	} {
		if code, body := metricsGet(t, srv.URL+req.path, req.token); code != req.want {
			t.Fatalf("GET %s = %d %s, want %d", req.path, code, body, req.want)
		}
	}

	code, body := metricsGet(t, srv.URL+"/metrics", metricsToken)
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d %s", code, body)
	}
	for _, want := range []string{
		`ggfleet_http_requests_total{code="200",route="GET /healthz"} 2`,
		`ggfleet_http_requests_total{code="401",route="GET /cores/{name}"} 2`,
		`ggfleet_http_requests_total{code="404",route="unmatched"} 1`,
		`ggfleet_http_requests_total{code="202",route="GET /test/flush"} 1`,
		`ggfleet_http_requests_total{code="500",route="GET /test/panic"} 1`,
		`ggfleet_http_request_duration_seconds_count{route="GET /healthz"} 2`,
		`ggfleet_http_request_duration_seconds_bucket{route="GET /cores/{name}",le="+Inf"} 2`,
		`ggfleet_tasks{kind="core",status="Success"} 3`,
		`ggfleet_tasks{kind="core",status="Failure"} 1`,
		`ggfleet_tasks{kind="deployment",status="InProgress"} 2`,
		`ggfleet_tasks{kind="device",status="Waiting"} 0`,
		`ggfleet_mqtt_connections 7`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	for _, raw := range []string{"core-1", "/no/such/path"} {
		if strings.Contains(body, raw) {
			t.Errorf("scrape has the raw path %q as a label value", raw)
		}
	}
}

func TestMetricsAuth(t *testing.T) {
	m := NewMetrics(MetricsConfig{MQTTConnections: func() int { return 1 }})
	srv := metricsServer(t, m)

	t.Run("API listener needs a token", func(t *testing.T) {
		if code, body := metricsGet(t, srv.URL+"/metrics", ""); code != http.StatusUnauthorized {
			t.Errorf("GET /metrics without token = %d %s, want 401", code, body)
		}
		if code, _ := metricsGet(t, srv.URL+"/metrics", "wrong"); code != http.StatusUnauthorized {
			t.Errorf("GET /metrics with a bad token = %d, want 401", code)
		}
	})
	t.Run("standalone handler needs none", func(t *testing.T) {
		standalone := httptest.NewServer(m.Handler())
		t.Cleanup(standalone.Close)
		code, body := metricsGet(t, standalone.URL+"/metrics", "")
		if code != http.StatusOK || !strings.Contains(body, "ggfleet_mqtt_connections 1") {
			t.Errorf("standalone GET /metrics = %d, want 200 with the gauge; body:\n%s", code, body)
		}
	})
}

func TestMetricsTaskCountError(t *testing.T) {
	m := NewMetrics(MetricsConfig{
		Tasks:           fakeTaskCounter{err: errors.New("database is locked")},
		MQTTConnections: func() int { return 4 },
	})
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)
	code, body := metricsGet(t, srv.URL, "")
	if code != http.StatusOK || !strings.Contains(body, "ggfleet_mqtt_connections 4") {
		t.Errorf("scrape with a failing task count = %d, want 200 with the other metrics; body:\n%s", code, body)
	}
	if strings.Contains(body, "ggfleet_tasks{") {
		t.Errorf("scrape reports task counts although counting failed")
	}
}

func TestMetricsDisabled(t *testing.T) {
	srv := metricsServer(t, nil)
	if code, body := metricsGet(t, srv.URL+"/metrics", metricsToken); code != http.StatusNotFound || !strings.Contains(body, "not enabled") {
		t.Errorf("GET /metrics without Metrics = %d %s, want 404 saying so", code, body)
	}
	if code, _ := metricsGet(t, srv.URL+"/test/flush", ""); code != http.StatusAccepted {
		t.Errorf("uninstrumented flush route = %d, want 202", code)
	}
}
