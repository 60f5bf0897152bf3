package server

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/broker/ca"
)

// TestBannerAdminToken: the banner points to an admin.token only where one
// exists; a replica whose data dir has none (another replica created the
// token) says where it is instead.
func TestBannerAdminToken(t *testing.T) {
	tests := []struct {
		name     string
		file     bool
		created  bool
		want     string
		wantNone string
	}{
		{"created here", true, true, "written to", "not in this data dir"},
		{"created earlier here", true, false, "Admin token:  ", "not in this data dir"},
		{"created by another replica", false, false, "not in this data dir: the first replica", "written to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "admin.token")
			if tt.file {
				if err := os.WriteFile(path, []byte("x\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var out bytes.Buffer
			printBanner(&out, Config{DataDir: dir}, path, tt.created, ca.CA{ID: "ca1"}, "", "")
			banner := out.String()
			if !strings.Contains(banner, tt.want) || strings.Contains(banner, tt.wantNone) {
				t.Fatalf("banner does not say %q (or says %q):\n%s", tt.want, tt.wantNone, banner)
			}
			if !tt.file && strings.Contains(banner, path) {
				t.Fatalf("banner points to %s, which does not exist:\n%s", path, banner)
			}
		})
	}
}
