package assetlibraryfake

import (
	"encoding/json"
	"net/http"
	"testing"
)

func TestFakeGates(t *testing.T) {
	f := New(t)
	f.AddGroup(Group{GroupPath: "/g"})
	tests := []struct {
		name, method, path, accept string
		want                       int
		wantError                  bool
	}{
		{"other endpoint", http.MethodGet, "/devices/d1", "application/vnd.aws-cdf-v2.0+json", 404, true},
		{"other method", http.MethodPost, "/bulkdevices", "application/vnd.aws-cdf-v2.0+json", 404, true},
		{"wrong accept", http.MethodGet, "/search?type=device", "application/json", 415, false},
		{"v1 accept", http.MethodGet, "/search?type=device", "application/vnd.aws-cdf-v1.0+json", 200, false},
		{"bulk without ids", http.MethodGet, "/bulkdevices", "application/vnd.aws-cdf-v2.0+json", 400, true},
		{"unknown group", http.MethodGet, "/groups/%2Fnope/members/devices", "application/vnd.aws-cdf-v2.0+json", 404, true},
		{"known group", http.MethodGet, "/groups/%2Fg/members/devices", "application/vnd.aws-cdf-v2.0+json", 200, false},
		{"traversal", http.MethodGet, "/search?eq=rel%3Aout%3Aname%3Ax", "application/vnd.aws-cdf-v2.0+json", 400, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, f.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Accept", tt.accept)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.want)
			}
			if tt.wantError {
				var body struct{ Error string }
				if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Error == "" {
					t.Errorf("body is not {\"error\": ...}: %v", err)
				}
			}
		})
	}
	if n := len(f.Requests()); n != len(tests) {
		t.Errorf("recorded %d requests, want %d", n, len(tests))
	}
}
