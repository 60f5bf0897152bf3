package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/shared/cdf"
	"gopkg.in/yaml.v3"
)

var updateCLIGolden = flag.Bool("update-cli", false, "rewrite e2e/testdata/cli golden files")

// cliResult is one finished run of the ggfleet binary.
type cliResult struct {
	code           int
	stdout, stderr string
}

// cli runs `ggfleet args...` against b with the token in GGFLEET_TOKEN.
func (b *broker) cli(args ...string) cliResult {
	b.t.Helper()
	return runCLI(b.t, []string{"GGFLEET_BROKER_URL=" + b.url, "GGFLEET_TOKEN=" + b.token}, args...)
}

// runCLI runs the ggfleet binary with extra environment variables (and no
// GGFLEET_* variables from the test's own environment).
func runCLI(t testing.TB, env []string, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "ggfleet"), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GGFLEET_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Dir = t.TempDir() // no ./ggfleet-data/admin.token by accident
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := cliResult{stdout: out.String(), stderr: errb.String()}
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run ggfleet %v: %v", args, err)
	}
	return res
}

// wantCode fails the test when r did not exit with code.
func (r cliResult) wantCode(t testing.TB, code int) cliResult {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	return r
}

var (
	tableTime = regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ`)
	taskLine  = regexp.MustCompile(`(?m)^(Task:\s+)\S+$`)
)

// cliGolden compares a table with e2e/testdata/cli/name, timestamps and
// task ids masked (same width, so the columns stay aligned).
func cliGolden(t *testing.T, name, got string) {
	t.Helper()
	got = tableTime.ReplaceAllString(got, "YYYY-MM-DD hh:mm:ssZ")
	got = taskLine.ReplaceAllString(got, "${1}ID")
	path := filepath.Join("testdata", "cli", name)
	if *updateCLIGolden {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s (go test ./e2e -run TestCLI -update-cli writes it): %v", path, err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n--- got ---\n%s--- want ---\n%s", name, got, want)
	}
}

func TestCLI(t *testing.T) {
	b := startBroker(t)
	dir := t.TempDir()
	tmplFile := filepath.Join(dir, "base.yaml")
	if err := os.WriteFile(tmplFile, []byte("name: base\ncomponents:\n  - key: aws.greengrass.Nucleus\n    version: 2.12.0\n  - key: com.example.Hello\n    version: 1.0.0\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("templates", func(t *testing.T) {
		b.cli("templates", "create", "-f", tmplFile).wantCode(t, 0)
		b.cli("templates", "update", "base", "-f", tmplFile).wantCode(t, 0)
		cliGolden(t, "templates_list.txt", b.cli("templates", "list").wantCode(t, 0).stdout)
		cliGolden(t, "templates_show.txt", b.cli("templates", "show", "base", "--version", "1").wantCode(t, 0).stdout)
		var l struct {
			Templates []struct {
				Name    string `json:"name"`
				Version int    `json:"version"`
			} `json:"templates"`
		}
		decodeCLI(t, b.cli("templates", "versions", "base", "-o", "json").wantCode(t, 0).stdout, &l)
		if len(l.Templates) != 2 || l.Templates[1].Version != 2 {
			t.Errorf("versions: %+v", l.Templates)
		}
		r := b.cli("templates", "create", "-f", tmplFile).wantCode(t, 1)
		if !strings.Contains(r.stderr, "409") || !strings.Contains(r.stderr, "already exists") {
			t.Errorf("duplicate template: stderr %q", r.stderr)
		}
	})

	t.Run("cores create waits", func(t *testing.T) {
		r := b.cli("cores", "create", "--template", "ggfleet-core", "core-1", "core-2").wantCode(t, 0)
		if !strings.Contains(r.stdout, "Success 2, Failure 0, InProgress 0") {
			t.Errorf("no final counts in:\n%s", r.stdout)
		}
		final := r.stdout[strings.Index(r.stdout, "Task:"):]
		cliGolden(t, "cores_create.txt", final)
	})

	t.Run("failing core", func(t *testing.T) {
		r := b.cli("cores", "create", "--template", "no-such-template", "bad-1").wantCode(t, 1)
		if !strings.Contains(r.stdout, "Failures:\n  bad-1: ") || !strings.Contains(r.stdout, "no-such-template") {
			t.Errorf("the failure message is not printed:\n%s", r.stdout)
		}
		if !strings.Contains(r.stderr, "ended Failure with 1 of 1 failed") {
			t.Errorf("stderr: %q", r.stderr)
		}
	})

	t.Run("no-wait, tasks show -o json", func(t *testing.T) {
		r := b.cli("cores", "create", "--template", "ggfleet-core", "core-3", "--no-wait").wantCode(t, 0)
		id := strings.TrimSpace(r.stdout)
		if id == "" || strings.Contains(id, "\n") {
			t.Fatalf("--no-wait printed %q, want the task id", r.stdout)
		}
		b.cli("tasks", "watch", id).wantCode(t, 0)
		var task struct {
			ID         string `json:"id"`
			TaskStatus string `json:"taskStatus"`
			Cores      []struct {
				Name       string `json:"name"`
				TaskStatus string `json:"taskStatus"`
			} `json:"cores"`
		}
		decodeCLI(t, b.cli("tasks", "show", id, "-o", "json").wantCode(t, 0).stdout, &task)
		if task.ID != id || task.TaskStatus != "Success" || len(task.Cores) != 1 || task.Cores[0].Name != "core-3" {
			t.Errorf("task: %+v", task)
		}
		b.cli("tasks", "show", "no-such-task").wantCode(t, 1)
	})

	t.Run("cores list and show", func(t *testing.T) {
		cliGolden(t, "cores_list.txt", b.cli("cores", "list").wantCode(t, 0).stdout)
		var l struct {
			Cores []struct {
				Name string `json:"name"`
			} `json:"cores"`
		}
		decodeCLI(t, b.cli("cores", "list", "-o", "json").wantCode(t, 0).stdout, &l)
		if len(l.Cores) != 4 {
			t.Errorf("cores -o json: %+v", l.Cores)
		}
		r := b.cli("cores", "show", "core-1").wantCode(t, 0)
		if !strings.Contains(r.stdout, "Connectivity:") || !strings.Contains(r.stdout, "OFFLINE") {
			t.Errorf("cores show:\n%s", r.stdout)
		}
		b.cli("cores", "show", "nope").wantCode(t, 1)
	})

	t.Run("fleet summary", func(t *testing.T) {
		cliGolden(t, "fleet_summary.txt", b.cli("fleet", "summary").wantCode(t, 0).stdout)
	})

	t.Run("fleet cores", func(t *testing.T) {
		var l struct {
			Cores []struct {
				Name         string `json:"name"`
				Status       string `json:"status"`
				Connectivity string `json:"connectivity"`
			} `json:"cores"`
			Matching int `json:"matching"`
		}
		decodeCLI(t, b.cli("fleet", "cores", "--connectivity", "offline", "--name-contains", "CORE-", "-o", "json").wantCode(t, 0).stdout, &l)
		if l.Matching != 3 || len(l.Cores) != 3 || l.Cores[0].Name != "core-1" || l.Cores[0].Status != "UNKNOWN" || l.Cores[0].Connectivity != "OFFLINE" {
			t.Errorf("fleet cores --connectivity offline: %+v", l)
		}
		decodeCLI(t, b.cli("fleet", "cores", "--connectivity", "ONLINE", "-o", "json").wantCode(t, 0).stdout, &l)
		if l.Matching != 0 || len(l.Cores) != 0 {
			t.Errorf("fleet cores --connectivity ONLINE (no agent runs): %+v", l)
		}
		r := b.cli("fleet", "cores", "--status", "fine").wantCode(t, 1)
		if !strings.Contains(r.stderr, "400") || !strings.Contains(r.stderr, "status must be one of HEALTHY, UNHEALTHY, UNKNOWN") {
			t.Errorf("bad status: stderr %q", r.stderr)
		}
	})

	t.Run("token from the data dir", func(t *testing.T) {
		runCLI(t, nil, "templates", "list", "--broker-url", b.url, "--data-dir", b.dataDir).wantCode(t, 0)
		r := runCLI(t, nil, "templates", "list", "--broker-url", b.url, "--token", "wrong").wantCode(t, 3)
		if !strings.Contains(r.stderr, "401") {
			t.Errorf("bad token: stderr %q", r.stderr)
		}
	})

	t.Run("cores delete", func(t *testing.T) {
		b.cli("cores", "delete", "core-3", "--deprovision").wantCode(t, 0)
		b.cli("cores", "show", "core-3").wantCode(t, 1)
	})
}

func TestCLINoBroker(t *testing.T) {
	url := "http://" + freeAddr(t)
	r := runCLI(t, []string{"GGFLEET_TOKEN=x"}, "cores", "list", "--broker-url", url).wantCode(t, 3)
	if !strings.Contains(r.stderr, "cannot reach the broker at "+url) {
		t.Errorf("stderr: %q", r.stderr)
	}
	runCLI(t, nil, "cores", "frobnicate").wantCode(t, 2)
}

func decodeCLI(t testing.TB, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
}

// TestCLIPlansDevicesCAs covers deploy --plan against a core running the
// real agent, core and device task plans, device tasks and CA creation.
func TestCLIPlansDevicesCAs(t *testing.T) {
	b := startBroker(t)
	logBrokerOnFailure(t, b)
	dir := t.TempDir()
	writeFile := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	v1 := writeFile("v1.yaml", "name: app\ncomponents:\n  - key: com.example.Hello\n    version: 1.0.0\n  - key: com.example.Old\n    version: 2.0.0\n  - key: com.example.Cfg\n    version: 1.0.0\n    configurationUpdate:\n      merge: '{\"a\":1}'\n")
	v2 := writeFile("v2.yaml", "name: app\ncomponents:\n  - key: com.example.Hello\n    version: 1.1.0\n  - key: com.example.New\n    version: 0.1.0\n  - key: com.example.Cfg\n    version: 1.0.0\n    configurationUpdate:\n      merge: '{\"a\":2}'\n")

	// One core running the real agent on template app v1, one never enrolled.
	b.cli("cores", "create", "--template", "ggfleet-core", "live", "fresh").wantCode(t, 0)
	state := b.enrollAgent("live")
	start := time.Now()
	startAgent(t, state)
	b.waitOnline("live", start.Add(-time.Second))
	b.cli("templates", "create", "-f", v1).wantCode(t, 0)
	b.cli("deploy", "--template", "app", "--core", "live").wantCode(t, 0)
	waitFor(t, time.Minute, "live reports app v1", func() bool {
		r := b.reportedTemplate("live")
		return r["name"] == "app" && r["version"] == float64(1)
	})
	b.cli("templates", "update", "app", "-f", v2).wantCode(t, 0)

	t.Run("deploy --plan", func(t *testing.T) {
		var before, after cdf.DeploymentTaskList
		b.must(200, "GET", "/deploymentTasks", nil).JSON(t, &before)
		cliGolden(t, "deploy_plan.txt", b.cli("deploy", "--template", "app", "--core", "live", "--core", "fresh", "--plan").wantCode(t, 0).stdout)
		var plan cdf.DeploymentPlan
		decodeCLI(t, b.cli("deploy", "--template", "app", "--core", "live,fresh", "--plan", "-o", "json").wantCode(t, 0).stdout, &plan)
		if !plan.DryRun || len(plan.Cores) != 2 || plan.Cores[0].From == nil || plan.Cores[0].From.Version != 1 || plan.Cores[0].To.Version != 2 ||
			len(plan.Cores[0].Changes) != 4 || plan.Cores[0].WouldFail != "" || plan.Cores[1].WouldFail == "" {
			t.Errorf("plan: %+v", plan)
		}
		y := b.cli("deploy", "--template", "app", "--core", "live", "--plan", "-o", "yaml").wantCode(t, 0).stdout
		var yplan cdf.DeploymentPlan
		var generic any
		if err := yaml.Unmarshal([]byte(y), &generic); err != nil {
			t.Fatalf("-o yaml is not YAML: %v\n%s", err, y)
		}
		j, _ := json.Marshal(generic)
		if err := json.Unmarshal(j, &yplan); err != nil || yplan.Cores[0].CoreName != "live" || len(yplan.Cores[0].Changes) != 4 {
			t.Errorf("-o yaml: %v %+v\n%s", err, yplan, y)
		}
		b.must(200, "GET", "/deploymentTasks", nil).JSON(t, &after)
		if len(after.DeploymentTasks) != len(before.DeploymentTasks) {
			t.Errorf("deploy --plan created a task: %d before, %d after", len(before.DeploymentTasks), len(after.DeploymentTasks))
		}
		if r := b.reportedTemplate("live"); r["version"] != float64(1) {
			t.Errorf("live moved: %v", r)
		}
	})

	t.Run("cores and devices --plan", func(t *testing.T) {
		cliGolden(t, "cores_create_plan.txt", b.cli("cores", "create", "--template", "ggfleet-core", "live", "brand-new", "--plan").wantCode(t, 0).stdout)
		b.cli("cores", "show", "brand-new").wantCode(t, 1)
		cliGolden(t, "devices_create_plan.txt", b.cli("devices", "create", "--core", "live", "--template", "ggfleet-client-device", "dev-1", "--plan").wantCode(t, 0).stdout)
		r := b.cli("devices", "create", "--core", "fresh", "--template", "ggfleet-client-device", "dev-1", "--plan").wantCode(t, 1)
		if !strings.Contains(r.stderr, "not registered") {
			t.Errorf("plan on an unenrolled core: %s", r.stderr)
		}
		b.cli("devices", "show", "dev-1").wantCode(t, 1)
	})

	t.Run("devices create and delete", func(t *testing.T) {
		r := b.cli("devices", "create", "--core", "live", "--template", "ggfleet-client-device", "dev-1", "dev-2").wantCode(t, 0)
		if !strings.Contains(r.stdout, "Success 2, Failure 0, InProgress 0") {
			t.Errorf("devices create:\n%s", r.stdout)
		}
		var l cdf.ClientDeviceList
		decodeCLI(t, b.cli("devices", "list", "--core", "live", "-o", "json").wantCode(t, 0).stdout, &l)
		if len(l.Devices) != 2 {
			t.Errorf("devices: %+v", l.Devices)
		}
		var p cdf.DeviceTaskPlan
		decodeCLI(t, b.cli("devices", "delete", "--core", "live", "dev-2", "dev-9", "--plan", "-o", "json").wantCode(t, 0).stdout, &p)
		if len(p.Devices) != 2 || p.Devices[0].Action != "delete" || p.Devices[1].Action != "notFound" {
			t.Errorf("delete plan: %+v", p)
		}
		b.cli("devices", "delete", "--core", "live", "dev-2", "--deprovision").wantCode(t, 0)
		b.cli("devices", "show", "dev-2").wantCode(t, 1)
		b.cli("devices", "create", "--template", "x", "dev-3").wantCode(t, 2)
	})

	t.Run("cas create and import", func(t *testing.T) {
		var created struct {
			CAID    string `json:"caId"`
			Subject string `json:"subject"`
		}
		decodeCLI(t, b.cli("cas", "create", "--common-name", "Line 7 CA", "--days", "30", "-o", "json").wantCode(t, 0).stdout, &created)
		if !strings.Contains(created.Subject, "Line 7 CA") || created.CAID == "" {
			t.Errorf("created CA: %+v", created)
		}
		certPEM, keyPEM := selfSignedCA(t, "Imported CA")
		r := b.cli("cas", "import", "--cert", writeFile("ca.pem", certPEM), "--key", writeFile("ca.key", keyPEM)).wantCode(t, 0)
		if !strings.Contains(r.stdout, "Imported CA") {
			t.Errorf("import:\n%s", r.stdout)
		}
		list := b.cli("cas", "list").wantCode(t, 0).stdout
		if !strings.Contains(list, "Line 7 CA") || !strings.Contains(list, "Imported CA") {
			t.Errorf("cas list:\n%s", list)
		}
		b.cli("cas", "import", "--cert", writeFile("bad.pem", "nope"), "--key", writeFile("bad.key", "nope")).wantCode(t, 1)
		b.cli("cas", "create").wantCode(t, 2)
	})
}

// selfSignedCA makes a CA certificate and its key, PEM-encoded.
func selfSignedCA(t *testing.T, cn string) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
}
