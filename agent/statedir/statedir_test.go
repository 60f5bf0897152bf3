package statedir

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func openTemp(t *testing.T) *Dir {
	t.Helper()
	d, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestOpenCreates0700(t *testing.T) {
	d := openTemp(t)
	fi, err := os.Stat(d.Path())
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != DirMode {
		t.Fatalf("mode %04o, want %04o", got, DirMode)
	}
}

func TestOpenModes(t *testing.T) {
	tests := []struct {
		name    string
		mode    os.FileMode
		wantErr string
		want    os.FileMode
	}{
		{"private", 0o700, "", 0o700},
		{"readable by others is tightened", 0o755, "", 0o700},
		{"writable by others", 0o777, "writable by other users", 0},
		{"writable by group", 0o770, "writable by other users", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "s")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := Open(dir)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "chmod 700") {
					t.Fatalf("err = %v, want one containing %q and the fix", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fi, _ := os.Stat(dir)
			if fi.Mode().Perm() != tc.want {
				t.Fatalf("mode %04o, want %04o", fi.Mode().Perm(), tc.want)
			}
		})
	}
}

func TestOpenExistingMissing(t *testing.T) {
	_, err := OpenExisting(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
}

func TestOpenNotADirectory(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(f); err == nil {
		t.Fatal("Open of a regular file succeeded")
	}
}

func TestWriteFileModes(t *testing.T) {
	d := openTemp(t)
	for _, mode := range []os.FileMode{SecretMode, PublicMode} {
		if err := d.WriteFile(KeyFile, []byte("k"), mode); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(d.File(KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Fatalf("mode %04o, want %04o", fi.Mode().Perm(), mode)
		}
	}
	b, err := d.ReadFile(KeyFile)
	if err != nil || string(b) != "k" {
		t.Fatalf("ReadFile = %q, %v", b, err)
	}
}

func TestWriteFileAtomicOnFailure(t *testing.T) {
	d := openTemp(t)
	if err := d.WriteFile(CertFile, []byte("old contents"), PublicMode); err != nil {
		t.Fatal(err)
	}
	injected := errors.New("disk full")
	d.write = func(f *os.File, data []byte) error {
		f.Write(data[:len(data)/2]) // a partial write, then the failure
		return injected
	}
	err := d.WriteFile(CertFile, []byte("new contents that never land"), PublicMode)
	if !errors.Is(err, injected) {
		t.Fatalf("err = %v, want the injected failure", err)
	}
	b, err := os.ReadFile(d.File(CertFile))
	if err != nil || string(b) != "old contents" {
		t.Fatalf("after a failed write the file is %q (%v), want the old contents", b, err)
	}
	// A failed first write leaves no file at all.
	if err := d.WriteFile(CAFile, []byte("abc"), PublicMode); !errors.Is(err, injected) {
		t.Fatalf("err = %v", err)
	}
	if ok, _ := d.Exists(CAFile); ok {
		t.Fatal("a failed write left a file behind")
	}
	entries, err := os.ReadDir(d.Path())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != CertFile {
			t.Fatalf("unexpected file %s left in the state dir", e.Name())
		}
	}
}

func TestWriteFileRejectsPaths(t *testing.T) {
	d := openTemp(t)
	for _, name := range []string{"", "..", "a/b", "../x"} {
		if err := d.WriteFile(name, nil, PublicMode); err == nil {
			t.Errorf("WriteFile(%q) succeeded", name)
		}
	}
}

type record struct {
	Version int    `json:"version"`
	Name    string `json:"name"`
}

func TestJSONRoundTrip(t *testing.T) {
	d := openTemp(t)
	// A value without a version gets "version": 1 first.
	if err := d.WriteJSON(StatusFile, map[string]string{"state": "ONLINE"}); err != nil {
		t.Fatal(err)
	}
	b, _ := d.ReadFile(StatusFile)
	if !strings.HasPrefix(string(b), "{\n  \"version\": 1,\n  \"state\"") {
		t.Fatalf("file = %s", b)
	}
	if err := d.WriteJSON("empty.json", struct{}{}); err != nil {
		t.Fatal(err)
	}
	var empty map[string]any
	if err := d.ReadJSON("empty.json", &empty); err != nil || empty["version"] != 1.0 {
		t.Fatalf("empty = %v, %v", empty, err)
	}
	// A versioned struct keeps its own version.
	if err := d.WriteJSON(IdentityFile, record{Version: 1, Name: "core-1"}); err != nil {
		t.Fatal(err)
	}
	var got record
	if err := d.ReadJSON(IdentityFile, &got); err != nil {
		t.Fatal(err)
	}
	if got != (record{1, "core-1"}) {
		t.Fatalf("got %+v", got)
	}
	if err := d.WriteJSON(IdentityFile, record{Name: "v0"}); err == nil {
		t.Fatal("WriteJSON accepted version 0")
	}
	if err := d.WriteJSON(IdentityFile, []int{1}); err == nil {
		t.Fatal("WriteJSON accepted a non-object")
	}
}

func TestReadJSONErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		corrupt bool
		wantErr string
	}{
		{"truncated", `{"version": 1, "name": "co`, true, "re-run ggagent enroll"},
		{"empty", ``, true, "re-run ggagent enroll"},
		{"not an object", `[1,2]`, true, "remove the file"},
		{"no version", `{"name": "x"}`, true, `no "version"`},
		{"zero version", `{"version": 0}`, true, `"version" is 0`},
		{"wrong type", `{"version": 1, "name": 7}`, true, IdentityFile},
		{"newer", `{"version": 2}`, false, "upgrade ggagent"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := openTemp(t)
			if err := d.WriteFile(IdentityFile, []byte(tc.content), PublicMode); err != nil {
				t.Fatal(err)
			}
			var r record
			err := d.ReadJSON(IdentityFile, &r)
			if err == nil {
				t.Fatal("ReadJSON succeeded")
			}
			if errors.Is(err, ErrCorrupt) != tc.corrupt {
				t.Fatalf("errors.Is(ErrCorrupt) = %v, want %v: %v", !tc.corrupt, tc.corrupt, err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), d.File(IdentityFile)) {
				t.Fatalf("err = %v, want it to name the file and contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestReadJSONMissing(t *testing.T) {
	d := openTemp(t)
	var v json.RawMessage
	if err := d.ReadJSON(IdentityFile, &v); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
}
