package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // PostgreSQL driver "pgx"

	"github.com/ggfleet/ggfleet/broker/events"
)

// defaultTestPostgres is the server the replica tests use unless
// GGFLEET_TEST_POSTGRES names another.
const defaultTestPostgres = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// testPostgresDB creates a fresh database on the test PostgreSQL server,
// dropped when the test ends, and returns its URL and an open handle. Outside
// CI an unreachable server skips the test; in CI it fails it.
func testPostgresDB(t *testing.T) (string, *sql.DB) {
	t.Helper()
	admin := os.Getenv("GGFLEET_TEST_POSTGRES")
	if admin == "" {
		admin = defaultTestPostgres
	}
	adb, err := sql.Open("pgx", admin)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = adb.PingContext(ctx)
		cancel()
	}
	if err != nil {
		msg := fmt.Sprintf("PostgreSQL (GGFLEET_TEST_POSTGRES or %s) is not reachable: %v; install and start PostgreSQL", defaultTestPostgres, err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() { adb.Close() })
	name := fmt.Sprintf("ggfleet_e2e_%d_%d", os.Getpid(), time.Now().UnixNano())
	if _, err := adb.Exec(`CREATE DATABASE ` + name); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	db, err := sql.Open("pgx", u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Close()
		if _, err := adb.Exec(`DROP DATABASE ` + name + ` WITH (FORCE)`); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
	return u.String(), db
}

// startReplica starts another `ggfleet serve` with a fresh data dir that
// holds nothing but the first replica's admin token (the operator's copy).
func startReplica(t *testing.T, first *broker, args ...string) *broker {
	t.Helper()
	b := &broker{t: t, dataDir: t.TempDir(), listen: freeAddr(t), mqtt: freeAddr(t), args: args,
		client: &http.Client{Timeout: 30 * time.Second}}
	b.url = "http://" + b.listen
	if err := os.WriteFile(filepath.Join(b.dataDir, "admin.token"), []byte(first.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b.start()
	t.Cleanup(b.stop)
	return b
}

// hookLog counts signed webhook deliveries by event id.
type hookLog struct {
	mu    sync.Mutex
	byID  map[string]int
	total int
}

func (h *hookLog) counts() (distinct, total int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.byID), h.total
}

// TestReplicasShareOnePostgres runs three replicas on one PostgreSQL
// database: a 2,000-core task submitted to the first is split between them,
// the second is SIGKILLed midway, and still every core ends up with exactly
// one thing and one certificate, every replica answers reads the same
// (artifacts included), every event is stored once, and the webhook gets
// them all from the one replica that leads delivery.
func TestReplicasShareOnePostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("long: three replicas and a 2,000-core task")
	}
	const n = 2000
	dbURL, pg := testPostgresDB(t)

	dir := t.TempDir()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keyFile := filepath.Join(dir, "secrets.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := []byte("replica-test-webhook-secret-0123456789")
	secretFile := filepath.Join(dir, "webhook.secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	hooks := &hookLog{byID: map[string]int{}}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !events.Verify(secret, r.Header.Get(events.HeaderTimestamp), body, r.Header.Get(events.HeaderSignature)) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		hooks.mu.Lock()
		hooks.byID[r.Header.Get(events.HeaderEventID)]++
		hooks.total++
		hooks.mu.Unlock()
	}))
	t.Cleanup(hook.Close)

	args := []string{"--database", dbURL, "--secrets-key-file", keyFile, "--webhook", hook.URL, "--webhook-secret-file", secretFile}
	r1 := startBroker(t, args...)
	r2 := startReplica(t, r1, args...)
	r3 := startReplica(t, r1, args...)
	keepReplicaLogs(t, r1, r2, r3)

	// A replica with another secrets key must refuse to start.
	otherKey := filepath.Join(dir, "other.key")
	_, _ = rand.Read(key)
	if err := os.WriteFile(otherKey, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runGGFleet(t, 30*time.Second, "serve", "--data-dir", t.TempDir(), "--listen", freeAddr(t), "--mqtt-listen", freeAddr(t),
		"--database", dbURL, "--secrets-key-file", otherKey); err == nil || !bytes.Contains(out, []byte("not the secrets key")) {
		t.Fatalf("a replica with another secrets key started or failed for another reason: %v\n%s", err, tail(string(out), 2000))
	}

	cores := make([]map[string]any, n)
	for i := range cores {
		cores[i] = core(fmt.Sprintf("rep-%04d", i))
	}
	start := time.Now()
	id := r1.createCores(cores...)

	// Kill replica 2 once a tenth of the work is done.
	waitFor(t, 5*time.Minute, "a tenth of the cores", func() bool {
		var done int
		if err := pg.QueryRow(`SELECT COUNT(*) FROM task_items WHERE task_id = $1 AND status IN ('Success', 'Failure')`, id).Scan(&done); err != nil {
			t.Fatal(err)
		}
		return done >= n/10
	})
	var owners int
	if err := pg.QueryRow(`SELECT COUNT(DISTINCT attempted_by[1]) FROM river_job WHERE args->>'taskId' = $1 AND attempted_by IS NOT NULL`, id).Scan(&owners); err != nil {
		t.Fatal(err)
	}
	r2.kill()
	t.Logf("killed replica 2 after %s; %d replicas had taken batches", time.Since(start).Round(time.Millisecond), owners)
	if owners < 2 {
		t.Errorf("only %d replica took batches: the work was not split", owners)
	}

	task := r1.waitTask("/coreTasks/"+id, 10*time.Minute)
	t.Logf("task %s ended %v after %s", id, task["taskStatus"], time.Since(start).Round(time.Millisecond))
	if task["taskStatus"] != "Success" {
		t.Fatalf("task = %v (%v)", task["taskStatus"], task["statusMessage"])
	}

	// Exactly one thing and one certificate per core.
	var things, certs int
	if err := pg.QueryRow(`SELECT (SELECT COUNT(*) FROM registry_things), (SELECT COUNT(*) FROM registry_certificates)`).Scan(&things, &certs); err != nil {
		t.Fatal(err)
	}
	if things != n || certs != n {
		t.Fatalf("registry holds %d things and %d certificates, want %d of each", things, certs, n)
	}

	// Every core has exactly one Core Created Event: a batch re-run after
	// the kill publishes the events of its items again, and the store keeps
	// the first one per task item (events.Keyed).
	var created, distinct int
	if err := pg.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT detail::json->>'coreName') FROM events WHERE detail_type = $1 AND detail::json->>'taskId' = $2`,
		events.CoreCreated, id).Scan(&created, &distinct); err != nil {
		t.Fatal(err)
	}
	if created != n || distinct != n {
		t.Fatalf("%d Core Created events for %d distinct cores, want exactly one for each of the %d cores", created, distinct, n)
	}

	// Reads agree on the surviving replicas, whichever wrote the data;
	// artifacts written by any replica are served by all.
	var task3 map[string]any
	r3.must(200, "GET", "/coreTasks/"+id, nil).JSON(t, &task3)
	if task3["taskStatus"] != "Success" {
		t.Fatalf("replica 3 reports the task %v", task3["taskStatus"])
	}
	for i := 0; i < n; i += 97 {
		name := fmt.Sprintf("rep-%04d", i)
		a := r1.must(200, "GET", "/cores/"+name, nil).Body
		b := r3.must(200, "GET", "/cores/"+name, nil).Body
		if !jsonEqual(t, a, b) {
			t.Fatalf("GET /cores/%s differs between replicas:\n%s\n%s", name, a, b)
		}
		files := r3.certsZip(name)
		var th thingView
		r1.must(200, "GET", "/registry/things/"+name, nil).JSON(t, &th)
		if len(th.Principals) != 1 || th.Principals[0] != certID(t, files["certs/cert.pem"]) {
			t.Fatalf("%s: principals %v, certs.zip from replica 3 holds %s", name, th.Principals, certID(t, files["certs/cert.pem"]))
		}
	}

	// The webhook receives every stored event (at least once: a delivery
	// interrupted by a kill may repeat).
	var stored int
	if err := pg.QueryRow(`SELECT COUNT(*) FROM events`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Minute, "the webhook to receive every event", func() bool {
		d, _ := hooks.counts()
		return d >= stored
	})
	d, total := hooks.counts()
	t.Logf("webhook: %d distinct events, %d deliveries, %d stored events", d, total, stored)
	if d != stored {
		t.Fatalf("webhook got %d distinct events, %d are stored", d, stored)
	}
}

// runGGFleet runs the ggfleet binary to completion (or kills it after
// timeout) and returns its combined output.
func runGGFleet(t *testing.T, timeout time.Duration, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "ggfleet"), args...)
	return cmd.CombinedOutput()
}

// jsonEqual compares two JSON documents by value.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("decode %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return bytes.Equal(ja, jb)
}

// keepReplicaLogs stops the replicas when the test ends, copies each one's
// log to testout/replicas/<time>-<pid>/ and prints their tails when the
// test failed: a stuck task is diagnosed from them.
func keepReplicaLogs(t *testing.T, replicas ...*broker) {
	t.Helper()
	paths := make([]string, len(replicas))
	for i, r := range replicas {
		paths[i] = r.logPath
	}
	t.Cleanup(func() {
		for _, r := range replicas {
			r.stop()
		}
		dir, err := filepath.Abs(filepath.Join("..", "testout", "replicas", fmt.Sprintf("%s-%d", time.Now().Format("20060102-150405"), os.Getpid())))
		if err == nil {
			err = os.MkdirAll(dir, 0o755)
		}
		if err != nil {
			t.Logf("keep replica logs: %v", err)
			return
		}
		for i, p := range paths {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Logf("replica %d log: %v", i+1, err)
				continue
			}
			dst := filepath.Join(dir, fmt.Sprintf("replica-%d.log", i+1))
			if err := os.WriteFile(dst, data, 0o644); err != nil {
				t.Logf("keep replica %d log: %v", i+1, err)
				continue
			}
			t.Logf("replica %d log: %s", i+1, dst)
			if t.Failed() {
				t.Logf("replica %d log tail:\n%s", i+1, tail(string(data), 4000))
			}
		}
	})
}
