package httpapi_test

import (
	"context"
	"testing"
)

func TestArtifactGet(t *testing.T) {
	ctx := context.Background()
	p, srv := newRegistryServer(t)
	certsKey := "greengrass2/artifacts/core-1/core-1/certs.zip"
	configKey := "greengrass2/artifacts/core-1/core-1/installerConfig.yml"
	if _, err := p.PutArtifact(ctx, certsKey, "application/zip", []byte("PK\x03\x04zip")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.PutArtifact(ctx, configKey, "application/yaml", []byte("system: {}\n")); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, path  string
		status      int
		contentType string
		body        string // exact body for 200, message substring otherwise
	}{
		{"certs", "/artifacts/" + certsKey, 200, "application/zip", "PK\x03\x04zip"},
		{"config", "/artifacts/" + configKey, 200, "application/yaml", "system: {}\n"},
		{"missing", "/artifacts/greengrass2/artifacts/x/x/certs.zip", 404, "", "does not exist"},
		{"encoded traversal", "/artifacts/..%2F..%2Fetc%2Fpasswd", 400, "", "not valid"},
		{"encoded dot segment", "/artifacts/a%2F.%2Fb", 400, "", "not valid"},
		{"backslash", "/artifacts/a%5Cb", 400, "", "not valid"},
		{"empty segment", "/artifacts/a%2F%2Fb", 400, "", "not valid"},
		{"NUL", "/artifacts/a%00b", 400, "", "not valid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := registryDo(t, srv, "GET", tc.path, "")
			if status != tc.status {
				t.Fatalf("status = %d, want %d; body %q", status, tc.status, body)
			}
			if tc.status != 200 {
				wantMessage(t, body, tc.body)
				return
			}
			if ct := h.Get("Content-Type"); ct != tc.contentType {
				t.Errorf("Content-Type = %q, want %q", ct, tc.contentType)
			}
			if string(body) != tc.body {
				t.Errorf("body = %q, want %q", body, tc.body)
			}
		})
	}
}
