package mqttclient

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// contents reads back every waiting message as "suffix payload".
func contents(t *testing.T, o *outbox) []string {
	t.Helper()
	var got []string
	for _, e := range o.peek(1 << 20) {
		m, err := o.read(e)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m.suffix+" "+string(m.payload))
	}
	return got
}

func TestOutboxKeepsOrderAcrossReopen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	o, err := openOutbox(dir, 100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 12 {
		suffix := suffixFor(i)
		payload := fmt.Sprintf("payload %d\nwith a newline", i)
		if _, err := o.add(suffix, []byte(payload)); err != nil {
			t.Fatal(err)
		}
		want = append(want, suffix+" "+payload)
	}
	if got := contents(t, o); !slices.Equal(got, want) {
		t.Fatalf("contents = %q, want %q", got, want)
	}

	// Deliver the first two, leave a half-written temp file, reopen.
	for _, e := range o.peek(2) {
		if err := o.remove(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, ".tmp-123"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	o2, err := openOutbox(dir, 100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got := contents(t, o2); !slices.Equal(got, want[2:]) {
		t.Fatalf("after reopen = %q, want %q", got, want[2:])
	}
	n, size, _ := o2.counts()
	_, wantSize, _ := o.counts()
	if n != 10 || size != wantSize {
		t.Errorf("reopened counts = %d, %d bytes; want 10, %d bytes", n, size, wantSize)
	}
	if _, err := os.Stat(filepath.Join(dir, ".tmp-123")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leftover temp file not removed: %v", err)
	}
	// New messages go after the old ones.
	if _, err := o2.add(mqttmsg.Health, []byte("late")); err != nil {
		t.Fatal(err)
	}
	got := contents(t, o2)
	if got[len(got)-1] != mqttmsg.Health+" late" {
		t.Errorf("new message not last: %q", got)
	}

	info, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o700 {
		t.Errorf("outbox dir mode = %v, want 0700", info.Mode().Perm())
	}
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		fi, _ := de.Info()
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", de.Name(), fi.Mode().Perm())
		}
	}
}

func TestOutboxBound(t *testing.T) {
	h, s := mqttmsg.Health, mqttmsg.DeploymentStatus
	tests := []struct {
		name        string
		maxCount    int
		maxBytes    int64
		adds        []string // suffixes, payload = index
		wantErrAt   int      // index of the add that fails with ErrOutboxFull, -1 none
		wantKept    []int
		wantDropped uint64
	}{
		{"under the bound", 5, 1 << 20, []string{h, s, h}, -1, []int{0, 1, 2}, 0},
		{"oldest health dropped first", 3, 1 << 20, []string{h, s, h, h}, -1, []int{1, 2, 3}, 1},
		{"status never dropped", 3, 1 << 20, []string{h, s, h, s, s}, -1, []int{1, 3, 4}, 2},
		{"full of status", 2, 1 << 20, []string{s, s, s}, 2, []int{0, 1}, 0},
		{"health cannot push out status", 2, 1 << 20, []string{s, s, h}, 2, []int{0, 1}, 0},
		{"byte bound drops health", 100, 3 * int64(len(outboxHeader)+len(h)+2), []string{h, h, h, h}, -1, []int{1, 2, 3}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := openOutbox(t.TempDir(), tt.maxCount, tt.maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			for i, suffix := range tt.adds {
				_, err := o.add(suffix, fmt.Append(nil, i))
				if i == tt.wantErrAt {
					if !errors.Is(err, ErrOutboxFull) {
						t.Fatalf("add %d = %v, want ErrOutboxFull", i, err)
					}
				} else if err != nil {
					t.Fatalf("add %d: %v", i, err)
				}
			}
			var want []string
			for _, i := range tt.wantKept {
				want = append(want, fmt.Sprintf("%s %d", tt.adds[i], i))
			}
			if got := contents(t, o); !slices.Equal(got, want) {
				t.Errorf("kept %q, want %q", got, want)
			}
			if _, _, dropped := o.counts(); dropped != tt.wantDropped {
				t.Errorf("dropped = %d, want %d", dropped, tt.wantDropped)
			}
		})
	}
}

func TestOutboxRejectsMessageLargerThanTheBound(t *testing.T) {
	o, err := openOutbox(t.TempDir(), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.add(mqttmsg.Health, make([]byte, 100)); err == nil {
		t.Fatal("oversized message accepted")
	}
}

func TestOutboxReadDetectsDamage(t *testing.T) {
	dir := t.TempDir()
	o, err := openOutbox(dir, 10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.add(mqttmsg.Health, []byte("x")); err != nil {
		t.Fatal(err)
	}
	e := o.peek(1)[0]
	if err := os.WriteFile(filepath.Join(dir, e.name()), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := o.read(e); err == nil {
		t.Fatal("damaged file read without error")
	}
	if err := o.remove(e); err != nil {
		t.Fatal(err)
	}
	if _, err := o.read(e); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read after remove = %v, want not exist", err)
	}
	if err := o.remove(e); err != nil {
		t.Fatalf("second remove: %v", err)
	}
}
