package e2e

import (
	"bytes"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSideListeners: --metrics-listen serves /metrics and --pprof-listen
// Go's profiles, both without a token, while the API keeps asking for one
// and serves no profiles; a --pprof-listen off loopback is refused at start.
func TestSideListeners(t *testing.T) {
	metricsAddr, pprofAddr := freeAddr(t), freeAddr(t)
	b := startBroker(t, "--metrics-listen", metricsAddr, "--pprof-listen", pprofAddr)
	client := &http.Client{Timeout: 30 * time.Second}
	get := func(url string) (int, []byte) {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		return resp.StatusCode, body
	}

	for _, tc := range []struct {
		name, url string
		code      int
		want      func(body []byte) bool
	}{
		{"metrics without a token", "http://" + metricsAddr + "/metrics", 200,
			func(b []byte) bool { return bytes.Contains(b, []byte("ggfleet_http_requests_total")) }},
		{"profile index", "http://" + pprofAddr + "/debug/pprof/", 200,
			func(b []byte) bool { return bytes.Contains(b, []byte("goroutine")) }},
		{"goroutine dump", "http://" + pprofAddr + "/debug/pprof/goroutine?debug=1", 200,
			func(b []byte) bool { return bytes.Contains(b, []byte("broker/server")) }},
		{"CPU profile", "http://" + pprofAddr + "/debug/pprof/profile?seconds=1", 200,
			func(b []byte) bool { return bytes.HasPrefix(b, []byte{0x1f, 0x8b}) }}, // gzipped protobuf
		{"execution trace", "http://" + pprofAddr + "/debug/pprof/trace?seconds=1", 200,
			func(b []byte) bool { return bytes.HasPrefix(b, []byte("go 1.")) }},
		{"no command line (it may hold a database password)", "http://" + pprofAddr + "/debug/pprof/cmdline", 404, nil},
		{"no profiles on the metrics listener", "http://" + metricsAddr + "/debug/pprof/", 404, nil},
		{"no profiles on the API", b.url + "/debug/pprof/", 0, nil},
		{"API still needs a token", b.url + "/cores", 401, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(tc.url)
			if tc.code == 0 {
				if code == 200 || bytes.Contains(body, []byte("goroutine")) {
					t.Fatalf("GET %s = %d %.200q, want no profile", tc.url, code, body)
				}
				return
			}
			if code != tc.code {
				t.Fatalf("GET %s = %d %.200q, want %d", tc.url, code, body, tc.code)
			}
			if tc.want != nil && !tc.want(body) {
				t.Fatalf("GET %s: unexpected body %.200q", tc.url, body)
			}
		})
	}

	t.Run("off loopback refused", func(t *testing.T) {
		for _, addr := range []string{"0.0.0.0:6060", ":6060", "example.com:6060"} {
			cmd := exec.Command(filepath.Join(binDir, "ggfleet"), "serve", "--data-dir", t.TempDir(), "--listen", freeAddr(t),
				"--mqtt-listen", freeAddr(t), "--pprof-listen", addr)
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), "--pprof-listen") || !strings.Contains(string(out), "loopback") {
				t.Errorf("serve --pprof-listen %s: err %v, output %q; want a refusal naming the flag", addr, err, out)
			}
		}
	})
}
