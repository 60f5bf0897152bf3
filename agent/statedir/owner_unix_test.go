//go:build unix

package statedir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenRefusesAnotherOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a directory to another user")
	}
	dir := filepath.Join(t.TempDir(), "s")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir)
	if err == nil || !strings.Contains(err.Error(), "belongs to user id 65534") {
		t.Fatalf("err = %v, want a refusal naming the owner", err)
	}
}
