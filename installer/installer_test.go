package installer

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ggfleet/ggfleet/agent/identity"
	"github.com/ggfleet/ggfleet/agent/identity/identitytest"
	"github.com/ggfleet/ggfleet/agent/statedir"
	"github.com/ggfleet/ggfleet/packaging"
	"github.com/kardianos/service"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// standin is the stand-in program built once for the package's tests.
var standin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "installer-standin-")
	if err != nil {
		panic(err)
	}
	standin = filepath.Join(dir, "standin")
	out, err := exec.Command("go", "build", "-o", standin, "./testdata/standin").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build the stand-in programs: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fakeService is a kardianos/service seam that writes the unit under the
// test root and never touches the host's init system.
type fakeService struct {
	t        *testing.T
	platform string
	root     string
	stateDir string
	cfg      service.Config
	running  bool
	calls    []string
	// report makes Start write a status.json as a running agent would.
	report bool
}

func (f *fakeService) Platform() string { return f.platform }
func (f *fakeService) unit() string {
	return filepath.Join(f.root, "etc/systemd/system/ggagent.service")
}
func (f *fakeService) Install() error {
	f.calls = append(f.calls, "install")
	if f.cfg.Option["SystemdScript"] != packaging.AgentUnit {
		f.t.Error("the service was not given packaging.AgentUnit as its SystemdScript")
	}
	if _, err := os.Stat(f.unit()); err == nil {
		return errors.New("Init already exists: " + f.unit())
	}
	text, err := packaging.RenderAgentUnit(f.cfg.Executable, f.cfg.Arguments)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(f.unit()), 0o755); err != nil {
		return err
	}
	return os.WriteFile(f.unit(), []byte(text), 0o644)
}
func (f *fakeService) Uninstall() error {
	f.calls = append(f.calls, "uninstall")
	return os.Remove(f.unit())
}
func (f *fakeService) Start() error {
	f.calls = append(f.calls, "start")
	f.running = true
	if f.report {
		dir, err := statedir.OpenExisting(f.stateDir)
		if err != nil {
			return err
		}
		return dir.WriteJSON(statedir.StatusFile, map[string]any{
			"updatedAt": time.Now().Add(time.Minute), "connected": true, "outboxLength": 0, "delivered": 1, "lastReport": time.Now(),
		})
	}
	return nil
}
func (f *fakeService) Stop() error { f.calls = append(f.calls, "stop"); f.running = false; return nil }
func (f *fakeService) Status() (service.Status, error) {
	if f.running {
		return service.StatusRunning, nil
	}
	if _, err := os.Stat(f.unit()); err == nil {
		return service.StatusStopped, nil
	}
	return service.StatusUnknown, service.ErrNotInstalled
}

// fixture is a fresh "device": a root prefix with /run/systemd/system, the
// stand-ins alone in PATH, a fake broker and a nucleus zip.
type fixture struct {
	t        *testing.T
	root     string
	record   string
	stateDir string
	broker   *identitytest.Broker
	svc      *fakeService
	zip      string
	zipSum   string
	out      bytes.Buffer
	free     uint64
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	base := t.TempDir()
	f := &fixture{t: t, root: filepath.Join(base, "root"), record: filepath.Join(base, "record"),
		stateDir: filepath.Join(base, "state"), free: 1 << 30}
	bin := filepath.Join(base, "bin")
	for _, d := range []string{filepath.Join(f.root, "run/systemd/system"), f.record, bin} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"java", "systemctl", "getent", "groupadd", "useradd", "userdel", "groupdel"} {
		if err := os.Symlink(standin, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	// Only the stand-ins: a missing one fails instead of running the host's.
	t.Setenv("PATH", bin)
	t.Setenv("STANDIN_RECORD", f.record)
	t.Setenv("STANDIN_ROOT", f.root)
	f.broker = identitytest.NewBroker(t, true)
	f.svc = &fakeService{t: t, platform: PlatformSystemd, root: f.root, stateDir: f.stateDir, report: true}
	f.zip, f.zipSum = nucleusZip(t, base)
	return f
}

func nucleusZip(t *testing.T, dir string) (path, sum string) {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.Create("lib/Greengrass.jar")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("not really a jar"))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "greengrass-nucleus-latest.zip")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(buf.Bytes())
	return path, hex.EncodeToString(s[:])
}

func (f *fixture) options() Options {
	return Options{
		BrokerURL: f.broker.URL(), Core: "core-1", Token: f.broker.Token("core-1"), CASHA256: f.broker.CA.SHA256(),
		StateDir: f.stateDir, Runtime: RuntimeGreengrass, NucleusZip: f.zip, NucleusSHA256: f.zipSum,
		Wait: 10 * time.Second, Executable: "/usr/bin/ggagent",
	}
}

func (f *fixture) env(o Options) *Env {
	f.out.Reset()
	return &Env{
		Options: o, Root: f.root, Out: &f.out,
		FreeBytes:    func(string) (uint64, error) { return f.free, nil },
		NewService:   func(c service.Config) (Service, error) { f.svc.cfg = c; return f.svc, nil },
		PollInterval: 10 * time.Millisecond,
	}
}

func (f *fixture) record_() Record {
	f.t.Helper()
	var r Record
	dir, err := statedir.OpenExisting(f.stateDir)
	if err != nil {
		return r
	}
	if err := dir.ReadJSON(RecordFile, &r); err != nil && !errors.Is(err, os.ErrNotExist) {
		f.t.Fatal(err)
	}
	return r
}

func (f *fixture) calls() string {
	b, _ := os.ReadFile(filepath.Join(f.record, "calls.log"))
	return string(b)
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestInstallFullAndRerun(t *testing.T) {
	f := newFixture(t)
	o := f.options()
	if err := Install(t.Context(), f.env(o)); err != nil {
		t.Fatalf("Install: %v\n%s", err, f.out.String())
	}
	first := f.out.String()
	for _, want := range []string{"[1/8] preflight checks", "[2/8] enroll with the broker … done", "[4/8] create user ggc_user:ggc_group … done", "[7/8] wait for the first acknowledged health report … done", "Core (thing):    core-1", "Service:         ggagent (active)"} {
		if !strings.Contains(first, want) {
			t.Errorf("output lacks %q:\n%s", want, first)
		}
	}

	// The exact nucleus installer command line and the config it received.
	argv, err := os.ReadFile(filepath.Join(f.record, "java.argv"))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "java.argv.golden", []byte(strings.ReplaceAll(string(argv), f.stateDir, "STATE")))
	initConfig, err := os.ReadFile(filepath.Join(f.record, "init-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "init-config.golden", initConfig)

	// Files the nucleus needs, with the key private.
	for name, mode := range map[string]os.FileMode{"cert.pem": 0o644, "private.key": 0o600, "rootCA.pem": 0o644} {
		fi, err := os.Stat(filepath.Join(f.root, "greengrass/v2", name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s mode %04o, want %04o", name, fi.Mode().Perm(), mode)
		}
	}
	// The unit is packaging's, rendered for this ggagent and state dir.
	unit, err := os.ReadFile(filepath.Join(f.root, "etc/systemd/system/ggagent.service"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := packaging.RenderAgentUnit("/usr/bin/ggagent", []string{"run", "--state-dir", f.stateDir, "--runtime", "greengrass"})
	if string(unit) != want {
		t.Errorf("unit:\n%s\nwant:\n%s", unit, want)
	}
	if got, _ := os.ReadFile(filepath.Join(f.root, "etc/default/ggagent")); string(got) != packaging.AgentDefaults {
		t.Error("/etc/default/ggagent is not packaging.AgentDefaults")
	}
	rec := f.record_()
	if rec.Options.Token != "" {
		t.Error("install.json stored the token")
	}
	if want := (Added{Group: true, User: true, GreengrassRoot: true, Nucleus: true, NucleusWorkDir: true, Service: true, Defaults: true}); rec.Added != want {
		t.Errorf("added = %+v, want %+v", rec.Added, want)
	}

	// A re-run (even with a spent token) changes nothing and spends nothing.
	callsBefore := f.calls()
	enrolls := f.broker.Calls()
	svcCalls := len(f.svc.calls)
	if err := Install(t.Context(), f.env(o)); err != nil {
		t.Fatalf("re-run: %v\n%s", err, f.out.String())
	}
	for _, step := range []string{"enroll with the broker", "obtain the Greengrass nucleus", "create user ggc_user:ggc_group", "install the Greengrass nucleus", "register and start the ggagent service"} {
		if !strings.Contains(f.out.String(), step+" … done (already present)") {
			t.Errorf("re-run did not skip %q:\n%s", step, f.out.String())
		}
	}
	if f.broker.Calls() != enrolls {
		t.Error("re-run contacted the broker's enroll")
	}
	if len(f.svc.calls) != svcCalls {
		t.Errorf("re-run called the service: %v", f.svc.calls[svcCalls:])
	}
	newCalls := strings.TrimPrefix(f.calls(), callsBefore)
	for _, prog := range []string{"groupadd", "useradd", "java -Droot"} {
		if strings.Contains(newCalls, prog) {
			t.Errorf("re-run ran %s:\n%s", prog, newCalls)
		}
	}
}

// TestStepsIdempotent runs each step on its own twice: Done is true after
// Run, and a second Run is harmless.
func TestStepsIdempotent(t *testing.T) {
	f := newFixture(t)
	e := f.env(f.options())
	if err := e.init(); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, s := range Plan(e.Options) {
		if s.Name == "preflight" || s.Name == "wait" || s.Name == "summary" {
			if err := s.Run(ctx, e); err != nil {
				t.Fatalf("%s: %v", s.Name, err)
			}
			continue
		}
		t.Run(s.Name, func(t *testing.T) {
			if done, err := s.Done(ctx, e); err != nil || done {
				t.Fatalf("Done before Run = %v, %v", done, err)
			}
			if err := s.Run(ctx, e); err != nil {
				t.Fatal(err)
			}
			e.rec.Steps[s.Name] = time.Now()
			if done, err := s.Done(ctx, e); err != nil || !done {
				t.Fatalf("Done after Run = %v, %v", done, err)
			}
			if s.Name == "enroll" {
				return // a second Run must not spend the token: covered by identity
			}
			if err := s.Run(ctx, e); err != nil {
				t.Fatalf("second Run: %v", err)
			}
			if done, err := s.Done(ctx, e); err != nil || !done {
				t.Fatalf("Done after second Run = %v, %v", done, err)
			}
		})
	}
	if n := strings.Count(f.calls(), "groupadd"); n != 1 {
		t.Errorf("groupadd ran %d times", n)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	f := newFixture(t)
	if err := DryRun(t.Context(), f.env(f.options())); err != nil {
		t.Fatal(err)
	}
	out := f.out.String()
	for _, want := range []string{"Dry run: nothing will be changed", "[8/8] summary", "java -Droot=/greengrass/v2 -Dlog.store=FILE -jar", "groupadd --system ggc_group"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(f.stateDir); !errors.Is(err, os.ErrNotExist) {
		t.Error("dry run created the state directory")
	}
	if f.broker.Calls() != 0 || len(f.svc.calls) != 0 {
		t.Error("dry run enrolled or touched the service")
	}
	if c := f.calls(); strings.Contains(c, "groupadd") || strings.Contains(c, "-jar") {
		t.Errorf("dry run ran commands:\n%s", c)
	}
}

func TestFailuresLeaveNoStepDone(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(f *fixture, o *Options)
		want    string
	}{
		{"missing java", func(f *fixture, o *Options) { os.Remove(filepath.Join(os.Getenv("PATH"), "java")) }, "Java 8 or later is required for the greengrass runtime: install openjdk-17-jre-headless, or use --runtime simulated"},
		{"old java", func(f *fixture, o *Options) { f.t.Setenv("STANDIN_JAVA_VERSION", `java version "1.7.0_80"`) }, "found Java 7"},
		{"disk full", func(f *fixture, o *Options) { f.free = 10 << 20 }, "disk full"},
		{"no systemd", func(f *fixture, o *Options) { os.RemoveAll(filepath.Join(f.root, "run/systemd")) }, "not booted with systemd"},
		{"clock", func(f *fixture, o *Options) {}, "before 2025-01-01"},
		{"wrong token", func(f *fixture, o *Options) { o.Token = "gge_wrong" }, "enrollment token is not valid"},
		{"wrong CA pin", func(f *fixture, o *Options) { o.CASHA256 = strings.Repeat("ab", 32) }, "enroll core"},
		{"unreachable broker", func(f *fixture, o *Options) { o.BrokerURL = "https://127.0.0.1:1" }, "enroll core"},
		{"bad nucleus checksum", func(f *fixture, o *Options) { o.NucleusSHA256 = strings.Repeat("0", 64) }, "not the expected"},
		{"SysV fallback", func(f *fixture, o *Options) { f.svc.platform = "unix-systemv" }, `"unix-systemv", not systemd`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			o := f.options()
			tc.prepare(f, &o)
			e := f.env(o)
			if tc.name == "clock" {
				e.Now = func() time.Time { return time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC) }
			}
			err := Install(t.Context(), e)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Install error = %v, want one containing %q\n%s", err, tc.want, f.out.String())
			}
			if !strings.Contains(f.out.String(), "FAILED") {
				t.Errorf("no FAILED progress line:\n%s", f.out.String())
			}
			failed := failedStep(f.out.String())
			if _, done := f.record_().Steps[failed]; done || failed == "" {
				t.Errorf("the failed step %q is recorded as done: %v", failed, f.record_().Steps)
			}
			if tc.name == "SysV fallback" && len(f.svc.calls) != 0 {
				t.Errorf("the service was touched on a SysV system: %v", f.svc.calls)
			}
		})
	}
}

// failedStep maps the FAILED progress line back to its step name.
func failedStep(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasSuffix(line, "FAILED") {
			continue
		}
		for _, s := range Plan(Options{Runtime: RuntimeGreengrass}) {
			if strings.Contains(line, s.Title) {
				return s.Name
			}
		}
	}
	return ""
}

// TestRealKardianosRefusesSysV uses the real kardianos/service detection on
// this host: without systemd as PID 1 it picks SysV, and the service step
// must refuse before writing anything.
func TestRealKardianosRefusesSysV(t *testing.T) {
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		t.Skip("this host runs systemd: the SysV fallback cannot happen here")
	}
	if _, err := os.Stat("/etc/init.d/" + ServiceName); err == nil {
		t.Skip("/etc/init.d/ggagent already exists on this host")
	}
	f := newFixture(t)
	e := f.env(f.options())
	e.NewService = nil // the real kardianos/service
	if err := e.init(); err != nil {
		t.Fatal(err)
	}
	err := serviceStep().Run(t.Context(), e)
	if !errors.Is(err, ErrNotSystemd) {
		t.Fatalf("service step on a non-systemd host: %v", err)
	}
	if _, err := os.Stat("/etc/init.d/" + ServiceName); err == nil {
		t.Fatal("a SysV init script was written")
	}
}

func TestUninstallKeepsIdentity(t *testing.T) {
	f := newFixture(t)
	o := f.options()
	if err := Install(t.Context(), f.env(o)); err != nil {
		t.Fatalf("Install: %v\n%s", err, f.out.String())
	}
	if err := Uninstall(t.Context(), f.env(Options{StateDir: f.stateDir, Executable: "/usr/bin/ggagent"}), false); err != nil {
		t.Fatalf("Uninstall: %v\n%s", err, f.out.String())
	}
	for _, p := range []string{"etc/systemd/system/ggagent.service", "etc/default/ggagent", "greengrass", "etc/systemd/system/greengrass.service"} {
		if _, err := os.Stat(filepath.Join(f.root, p)); err == nil {
			t.Errorf("%s is still there", p)
		}
	}
	calls := f.calls()
	for _, want := range []string{"userdel ggc_user", "groupdel ggc_group", "systemctl disable greengrass.service"} {
		if !strings.Contains(calls, want) {
			t.Errorf("uninstall did not run %q:\n%s", want, calls)
		}
	}
	dir, err := statedir.OpenExisting(f.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := identity.Load(dir); err != nil {
		t.Errorf("the identity was not kept: %v", err)
	}
	for _, want := range []string{"Kept the state directory", "Kept the ggagent program /usr/bin/ggagent"} {
		if !strings.Contains(f.out.String(), want) {
			t.Errorf("uninstall did not say %q:\n%s", want, f.out.String())
		}
	}
	// A new install reuses the identity without a token.
	o.Token = "gge_spent"
	enrolls := f.broker.Calls()
	if err := Install(t.Context(), f.env(o)); err != nil {
		t.Fatalf("reinstall: %v\n%s", err, f.out.String())
	}
	if f.broker.Calls() != enrolls {
		t.Error("reinstall enrolled again")
	}
	if err := Uninstall(t.Context(), f.env(Options{StateDir: f.stateDir, Executable: "/usr/bin/ggagent"}), true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(f.stateDir); !errors.Is(err, os.ErrNotExist) {
		t.Error("--purge kept the state directory")
	}
}

func TestUninstallKeepsWhatItDidNotAdd(t *testing.T) {
	f := newFixture(t)
	os.WriteFile(filepath.Join(f.record, "group"), []byte("ggc_group\n"), 0o644)
	os.WriteFile(filepath.Join(f.record, "passwd"), []byte("ggc_user\n"), 0o644)
	if err := Install(t.Context(), f.env(f.options())); err != nil {
		t.Fatalf("Install: %v\n%s", err, f.out.String())
	}
	if err := Uninstall(t.Context(), f.env(Options{StateDir: f.stateDir, Executable: "/usr/bin/ggagent"}), false); err != nil {
		t.Fatal(err)
	}
	if c := f.calls(); strings.Contains(c, "userdel") || strings.Contains(c, "groupdel") {
		t.Errorf("uninstall removed a user it did not add:\n%s", c)
	}
}

func TestWaitTimeout(t *testing.T) {
	f := newFixture(t)
	f.svc.report = false
	o := f.options()
	o.Wait = 2 * time.Minute
	e := f.env(o)
	if err := e.init(); err != nil {
		t.Fatal(err)
	}
	if err := e.openStateDir(); err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		e.Now = time.Now
		e.dir.WriteJSON(statedir.StatusFile, map[string]any{"updatedAt": time.Now().Add(time.Hour), "connected": false})
		err := waitStep().Run(context.Background(), e)
		if err == nil || !strings.Contains(err.Error(), "journalctl -u ggagent") || !strings.Contains(err.Error(), "not connected") {
			t.Fatalf("wait error = %v", err)
		}
	})
}

func TestCDFWay(t *testing.T) {
	f := newFixture(t)
	base := t.TempDir()
	ca := f.broker.CA
	key, keyPEM := newKey(t)
	certDER := ca.Issue(t, key.Public(), "core-cdf", 0)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range map[string]string{"certs/cert.pem": pemCert(certDER), "certs/private.key": keyPEM, "certs/root.ca.pem": ca.PEM} {
		w, _ := zw.Create(name)
		w.Write([]byte(body))
	}
	zw.Close()
	certsZip := filepath.Join(base, "certs.zip")
	os.WriteFile(certsZip, buf.Bytes(), 0o600)
	conf := filepath.Join(base, "installerConfig.yml")
	os.WriteFile(conf, []byte("system:\n  thingName: core-cdf\nservices:\n  aws.greengrass.Nucleus:\n    configuration:\n      iotDataEndpoint: broker.example\n      mqtt:\n        port: 8884\n"), 0o644)

	o := f.options()
	o.Core, o.Token, o.CertsZip, o.InstallerConfig, o.Runtime = "", "", certsZip, conf, RuntimeSimulated
	if err := Install(t.Context(), f.env(o)); err != nil {
		t.Fatalf("Install: %v\n%s", err, f.out.String())
	}
	dir, _ := statedir.OpenExisting(f.stateDir)
	id, err := identity.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if id.ThingName != "core-cdf" || id.MQTTEndpoint != "broker.example:8884" || id.Mode != "local" {
		t.Errorf("identity = %+v", id)
	}
	if _, err := id.TLSConfig(); err != nil {
		t.Errorf("the imported identity gives no TLS config: %v", err)
	}

	t.Run("wrong pin", func(t *testing.T) {
		o := o
		o.StateDir = filepath.Join(base, "other")
		o.CASHA256 = strings.Repeat("cd", 32)
		err := Install(t.Context(), f.env(o))
		if err == nil || !strings.Contains(err.Error(), "wrong CA pin") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestInitConfigFromGGConfig(t *testing.T) {
	in, err := os.ReadFile("../shared/ggconfig/testdata/manual_install_full.golden")
	if err != nil {
		t.Fatal(err)
	}
	got, err := InitConfig(in, "/greengrass/v2")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "init-config-full.golden", got)
}
