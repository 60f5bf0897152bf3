package e2e

import (
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
)

// pgServer is a PostgreSQL server of the test's own, so the test can stop
// and restart it without disturbing anything else on the machine.
type pgServer struct {
	t    *testing.T
	bin  string // directory of initdb and pg_ctl
	dir  string
	port string
}

// startPrivatePostgres initdbs and starts a PostgreSQL server on a free
// port, as the postgres user; it is stopped and removed when the test
// ends. Outside CI a missing PostgreSQL skips the test.
func startPrivatePostgres(t *testing.T) *pgServer {
	t.Helper()
	skip := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CI") != "" {
			t.Fatalf(format, args...)
		}
		t.Skipf(format+" (install postgresql; tests run as root)", args...)
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(matches) == 0 {
		skip("no pg_ctl under /usr/lib/postgresql/*/bin")
	}
	pgUser, err := user.Lookup("postgres")
	if err != nil {
		skip("no postgres user: %v", err)
	}
	dir, err := os.MkdirTemp("", "ggfleet-pg-")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(freeAddr(t))
	s := &pgServer{t: t, bin: filepath.Dir(matches[0]), dir: dir, port: port}
	s.pg("initdb", "-D", filepath.Join(dir, "data"), "-A", "trust", "-U", "postgres", "--no-sync")
	t.Cleanup(func() {
		_ = exec.Command("runuser", "-u", "postgres", "--", filepath.Join(s.bin, "pg_ctl"), "-D", filepath.Join(dir, "data"), "-m", "immediate", "stop").Run()
		os.RemoveAll(dir)
	})
	s.ctl("start")
	return s
}

// pg runs a PostgreSQL program as the postgres user.
func (s *pgServer) pg(prog string, args ...string) {
	s.t.Helper()
	cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(s.bin, prog)}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("%s %v: %v\n%s", prog, args, err, out)
	}
}

// ctl runs pg_ctl start, stop or restart (fast shutdown, waiting).
func (s *pgServer) ctl(action string) {
	s.t.Helper()
	s.pg("pg_ctl", "-D", filepath.Join(s.dir, "data"), "-l", filepath.Join(s.dir, "log"), "-m", "fast", "-w",
		"-o", "-p "+s.port+" -c listen_addresses=127.0.0.1 -k "+s.dir+" -c fsync=off", action)
}

func (s *pgServer) url() string {
	return "postgres://postgres@127.0.0.1:" + s.port + "/postgres?sslmode=disable"
}

// TestFaultsPostgresRestart: two replicas share a PostgreSQL server that
// is restarted twice in the middle of a large core task. While it is down
// the API answers 503 with a message (never 500); afterwards both replicas
// serve again by themselves and the task ends Success with exactly one
// thing and one certificate per core.
func TestFaultsPostgresRestart(t *testing.T) {
	n := scale(200, 1000)
	faultCase(t, "PostgreSQL restarted twice during a %d-core task on two replicas", n)
	pg := startPrivatePostgres(t)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keyFile := filepath.Join(t.TempDir(), "secrets.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--database", pg.url(), "--secrets-key-file", keyFile}
	r1 := startBroker(t, args...)
	logBrokerOnFailure(t, r1)
	r2 := startReplica(t, r1, args...)
	logBrokerOnFailure(t, r2)

	cores := make([]map[string]any, n)
	for i := range cores {
		cores[i] = core(fmt.Sprintf("pg-%04d", i))
	}
	id := r1.createCores(cores...)
	for restart := 1; restart <= 2; restart++ {
		target := restart * n / 4
		waitFor(t, 10*time.Minute, fmt.Sprintf("%d cores done before restart %d", target, restart), func() bool {
			done, finished := r2.coreTaskProgress(id)
			return done >= target || finished
		})
		pg.ctl("stop")
		time.Sleep(3 * time.Second) // the outage
		var exited []*broker
		for _, b := range []*broker{r1, r2} {
			body := `{"name":"During","components":[{"key":"aws.greengrass.Cli","version":"2.4.0"}]}`
			req, _ := http.NewRequest("POST", b.url+"/templates", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+b.token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := b.client.Do(req)
			if err != nil {
				t.Errorf("replica %s stopped serving when PostgreSQL stopped (%v) instead of answering 503 and reconnecting", b.url, err)
				exited = append(exited, b)
				continue
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if r := (response{Status: resp.StatusCode, Body: data}); r.Status != 503 || r.Message() == "" {
				t.Errorf("a write with PostgreSQL down: %d %.300s, want 503 with a message", r.Status, r.Body)
			}
		}
		pg.ctl("start")
		// What a service manager would do for a replica that exited.
		for _, b := range exited {
			_ = b.cmd.Process.Kill()
			b.waitGone()
			b.restart()
		}
		t.Logf("PostgreSQL restarted (%d)", restart)
	}
	var task map[string]any
	waitFor(t, 15*time.Minute, "the task to end after the restarts", func() bool {
		r := r2.do("GET", "/coreTasks/"+id, nil)
		if r.Status != 200 {
			return false
		}
		task = map[string]any{}
		r.JSON(t, &task)
		return task["taskStatus"] == "Success" || task["taskStatus"] == "Failure"
	})
	if task["taskStatus"] != "Success" {
		t.Fatalf("task after the PostgreSQL restarts = %v (%v)", task["taskStatus"], task["statusMessage"])
	}
	for _, b := range []*broker{r1, r2} {
		waitFor(t, time.Minute, "both replicas ready again", func() bool { return b.do("GET", "/readyz", nil).Status == 200 })
		b.must(201, "POST", "/templates", map[string]any{"name": "After" + b.listen[len(b.listen)-4:],
			"components": []map[string]any{{"key": "aws.greengrass.Cli", "version": "2.4.0"}}})
	}
	db, err := sql.Open("pgx", pg.url())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for what, q := range map[string]string{
		"things":       `SELECT COUNT(*) FROM registry_things`,
		"certificates": `SELECT COUNT(*) FROM registry_certificates`,
		"cores":        `SELECT COUNT(*) FROM cores`,
	} {
		var got int
		if err := db.QueryRow(q).Scan(&got); err != nil || got != n {
			t.Errorf("%s: %d (%v), want exactly %d", what, got, err, n)
		}
	}
}
