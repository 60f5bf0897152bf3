package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // PostgreSQL driver "pgx"

	"github.com/ggfleet/ggfleet/bench/loadgen"
	"github.com/ggfleet/ggfleet/broker/events"
	"github.com/ggfleet/ggfleet/broker/mqttbus/external/mosquittotest"
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

// writeSecretsKey writes a fresh random secrets key (base64) to dir/name.
func writeSecretsKey(t *testing.T, dir, name string) string {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// signedWebhook starts a webhook receiver that counts the deliveries signed
// with secret by event id and refuses the others.
func signedWebhook(t *testing.T, secret []byte) (*httptest.Server, *hookLog) {
	t.Helper()
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
	return hook, hooks
}

// pgInt runs a query that returns one integer.
func pgInt(t *testing.T, pg *sql.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := pg.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// finalItems counts a task's items that ended (Success or Failure).
func finalItems(t *testing.T, pg *sql.DB, taskID string) int {
	t.Helper()
	return pgInt(t, pg, `SELECT COUNT(*) FROM task_items WHERE task_id = $1 AND status IN ('Success', 'Failure')`, taskID)
}

// replicaFleet creates n cores named prefix-NNNN through the first replica,
// enrolls core i through replica i%len(replicas) (its token made there too)
// and starts a simulated agent for each with cfg(i); the agents connect to
// the MQTT endpoint enrollment handed out and stop when the test ends.
func replicaFleet(t *testing.T, replicas []*broker, prefix string, n int, cfg func(i int) loadgen.Config) (*fleet, []string) {
	t.Helper()
	names := make([]string, n)
	cores := make([]map[string]any, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%04d", prefix, i)
		cores[i] = core(names[i])
	}
	first := replicas[0]
	if task := first.waitTask("/coreTasks/"+first.createCores(cores...), 10*time.Minute); task["taskStatus"] != "Success" {
		t.Fatalf("core task for the fleet: %v (%v)", task["taskStatus"], task["statusMessage"])
	}
	via := func(i int) *broker { return replicas[i%len(replicas)] }
	tokens := make([]string, n)
	for i, name := range names {
		tokens[i] = via(i).enrollmentToken(name)
	}
	ids := make([]*loadgen.Identity, n)
	errs := make([]error, n)
	client := &http.Client{Timeout: time.Minute}
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				ids[i], errs[i] = loadgen.Enroll(context.Background(), client, via(i).url, names[i], tokens[i])
			}
		})
	}
	for i := range names {
		work <- i
	}
	close(work)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &fleet{cancel: cancel, errs: make(chan error, n)}
	for i, id := range ids {
		c := cfg(i)
		c.Identity = id
		a := loadgen.New(c)
		f.agents = append(f.agents, a)
		f.wg.Go(func() {
			if err := a.Run(ctx); err != nil {
				f.errs <- err
			}
		})
		time.Sleep(10 * time.Millisecond) // a fleet comes up over time, not in one instant
	}
	t.Cleanup(f.stop)
	return f, names
}

// ledEvents tells whether a replica's log says it became the leader of
// event delivery (a SIGKILL of that replica may repeat a webhook delivery).
func ledEvents(b *broker) bool {
	for line := range strings.Lines(b.log()) {
		if strings.Contains(line, "this replica is now the leader") && strings.Contains(line, `"work":"events"`) {
			return true
		}
	}
	return false
}

// TestReplicasPostgresMosquitto is issue 8's multi-replica check: three
// `ggfleet serve` replicas share one PostgreSQL database and one Mosquitto
// (external MQTT, shared subscriptions). 500 simulated agents, enrolled
// through the three replicas in turn, are connected to Mosquitto. A
// 2,000-core task and a deployment to the 500 agents run at once, and
// replica 2 is SIGKILLed while both are midway. Then: both tasks end
// Success; the registry holds exactly one thing per core and exactly the
// certificates made (one per created core, one more per enrolled agent);
// every deployment item ended Success once, each agent applied the
// deployment once and no report was lost; there is exactly one Core
// Created, DeploymentTask Created and Core Template Updated event per core;
// the webhook got every stored event, each once; reads (tasks, cores,
// certs.zip) agree across replicas; and a replica with another secrets key
// refuses to start.
func TestReplicasPostgresMosquitto(t *testing.T) {
	if testing.Short() {
		t.Skip("long: three replicas, Mosquitto, 500 simulated agents and a 2,000-core task")
	}
	const n, agents = 2000, 500
	mosquittotest.Binary(t)
	setup := time.Now()
	dbURL, pg := testPostgresDB(t)

	dir := t.TempDir()
	keyFile := writeSecretsKey(t, dir, "secrets.key")
	secret := []byte("replica-test-webhook-secret-0123456789")
	secretFile := filepath.Join(dir, "webhook.secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	hook, hooks := signedWebhook(t, secret)

	mq := mosquittotest.Dir(t)
	srvCAFile := filepath.Join(mq, "server-ca.pem")
	if err := os.WriteFile(srvCAFile, mosquittotest.ServerTLS(t, mq), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := mosquittotest.FreeAddr(t)
	common := []string{"--log-level", "info", "--database", dbURL, "--secrets-key-file", keyFile,
		"--webhook", hook.URL, "--webhook-secret-file", secretFile,
		"--mqtt-url", "mqtts://" + addr, "--mqtt-server-ca-file", srvCAFile}
	r1 := startBroker(t, append(common, "--mqtt-client-id", "ggfleet.broker.r1",
		"--mqtt-crl-file", filepath.Join(mq, "crl.pem"), "--mqtt-ca-file", filepath.Join(mq, "ca.pem"))...)
	r2 := startReplica(t, r1, append(common, "--mqtt-client-id", "ggfleet.broker.r2")...)
	r3 := startReplica(t, r1, append(common, "--mqtt-client-id", "ggfleet.broker.r3")...)
	keepReplicaLogs(t, r1, r2, r3)

	// A replica with another secrets key must refuse to start.
	otherKey := writeSecretsKey(t, dir, "other.key")
	if out, err := runGGFleet(t, 30*time.Second, "serve", "--data-dir", t.TempDir(), "--listen", freeAddr(t), "--mqtt-listen", freeAddr(t),
		"--database", dbURL, "--secrets-key-file", otherKey); err == nil || !bytes.Contains(out, []byte("not the secrets key")) {
		t.Fatalf("a replica with another secrets key started or failed for another reason: %v\n%s", err, tail(string(out), 2000))
	}

	waitFor(t, time.Minute, "ca.pem and crl.pem for Mosquitto", func() bool {
		_, e1 := os.Stat(filepath.Join(mq, "crl.pem"))
		_, e2 := os.Stat(filepath.Join(mq, "ca.pem"))
		return e1 == nil && e2 == nil
	})
	mosquittotest.Start(t, mq, addr)

	// The fleet: applying takes 1 to 30.5 s, so the agents' reports are
	// spread over a while and the kill falls among them.
	f, agentNames := replicaFleet(t, []*broker{r1, r2, r3}, "agt", agents, func(i int) loadgen.Config {
		return loadgen.Config{HealthInterval: 30 * time.Second, ApplyDelay: time.Second + time.Duration(i%60)*500*time.Millisecond}
	})
	waitFor(t, 5*time.Minute, "every agent connected to Mosquitto", func() bool {
		if errs := f.connectErrors(); len(errs) > 0 {
			t.Fatalf("agents could not connect: %v", errs)
		}
		return f.stats().Connects >= agents
	})
	// Each agent's core has its thing, the certificate of its core task and
	// the one its enrollment registered.
	thingsQ, certsQ := `SELECT COUNT(*) FROM registry_things`, `SELECT COUNT(*) FROM registry_certificates`
	if th, ce := pgInt(t, pg, thingsQ), pgInt(t, pg, certsQ); th != agents || ce != 2*agents {
		t.Fatalf("after the fleet's setup the registry holds %d things and %d certificates, want %d and %d", th, ce, agents, 2*agents)
	}
	r1.must(201, "POST", "/templates", map[string]any{"name": "RepT", "components": []map[string]any{{"key": "aws.greengrass.Cli", "version": "2.4.0"}}})
	t.Logf("setup (replicas, Mosquitto, %d agents created, enrolled and connected): %s", agents, time.Since(setup).Round(time.Millisecond))

	// The deployment through replica 3 first: its items are dispatched
	// (documents published, items waiting for the agents), and once a
	// fiftieth of them are done (the agents' reports coming in) the core
	// task goes through replica 1; replica 2 dies when a twentieth of the
	// cores are done (the core task takes only a second or two on a fast
	// machine: the kill must come early, checked often, to fall in its
	// middle, while the slowest agents still apply for half a minute).
	cores := make([]map[string]any, n)
	for i := range cores {
		cores[i] = core(fmt.Sprintf("rep-%04d", i))
	}
	start := time.Now()
	deployID := r3.deployTo("RepT", agentNames)
	waitFor(t, 5*time.Minute, "every deployment item dispatched", func() bool {
		return pgInt(t, pg, `SELECT COUNT(*) FROM task_items WHERE task_id = $1 AND status <> 'Waiting'`, deployID) == agents
	})
	t.Logf("deployment %s dispatched to %d cores in %s", deployID, agents, time.Since(start).Round(time.Millisecond))
	waitFor(t, 5*time.Minute, "a fiftieth of the deployment done", func() bool {
		return finalItems(t, pg, deployID) >= agents/50
	})
	coreID := r1.createCores(cores...)
	var coresDone, deployed int
	waitEvery(t, 5*time.Minute, 20*time.Millisecond, "a twentieth of the cores", func() bool {
		coresDone, deployed = finalItems(t, pg, coreID), finalItems(t, pg, deployID)
		return coresDone >= n/20
	})
	owners := func(id string) int {
		return pgInt(t, pg, `SELECT COUNT(DISTINCT attempted_by[1]) FROM river_job WHERE args->>'taskId' = $1 AND attempted_by IS NOT NULL`, id)
	}
	coreOwners, deployOwners := owners(coreID), owners(deployID)
	r2.kill()
	t.Logf("killed replica 2 after %s: %d/%d cores and %d/%d deployment items done; %d replicas had taken core batches, %d deployment batches",
		time.Since(start).Round(time.Millisecond), coresDone, n, deployed, agents, coreOwners, deployOwners)
	if coresDone >= n || deployed >= agents {
		t.Fatalf("the kill was not midway: %d/%d cores, %d/%d deployment items already done", coresDone, n, deployed, agents)
	}
	if coreOwners < 2 {
		t.Errorf("only %d replica took core batches: the work was not split", coreOwners)
	}

	// Every task ends, Success.
	deployTask := r3.waitTask("/deploymentTasks/"+deployID, 10*time.Minute)
	t.Logf("deployment task %s ended %v after %s", deployID, deployTask["taskStatus"], time.Since(start).Round(time.Millisecond))
	coreTask := r1.waitTask("/coreTasks/"+coreID, 10*time.Minute)
	t.Logf("core task %s ended %v after %s", coreID, coreTask["taskStatus"], time.Since(start).Round(time.Millisecond))
	if coreTask["taskStatus"] != "Success" {
		t.Errorf("core task = %v (%v)", coreTask["taskStatus"], coreTask["statusMessage"])
	}
	if deployTask["taskStatus"] != "Success" {
		t.Errorf("deployment task = %v (%v)", deployTask["taskStatus"], deployTask["statusMessage"])
	}
	if t.Failed() {
		t.FailNow()
	}

	// Exactly one thing per core and exactly the certificates made.
	if th, ce := pgInt(t, pg, thingsQ), pgInt(t, pg, certsQ); th != agents+n || ce != 2*agents+n {
		t.Errorf("registry holds %d things and %d certificates, want %d things (%d agents + %d cores) and %d certificates (2 per agent + 1 per core)",
			th, ce, agents+n, agents, n, 2*agents+n)
	}

	// One event of each kind per core: a batch re-run after the kill
	// publishes its items' events again and the store keeps the first
	// (events.Keyed); a report handled twice finishes its item once.
	eventCounts := func(detailType, taskField, id, where string) (all, cores int) {
		t.Helper()
		q := `SELECT COUNT(*), COUNT(DISTINCT detail::json->>'coreName') FROM events WHERE detail_type = $1 AND detail::json->>'` + taskField + `' = $2` + where
		if err := pg.QueryRow(q, detailType, id).Scan(&all, &cores); err != nil {
			t.Fatal(err)
		}
		return all, cores
	}
	for _, c := range []struct {
		detailType, field, id, where string
		want                         int
	}{
		{events.CoreCreated, "taskId", coreID, ` AND detail::json->>'status' = 'success'`, n},
		{events.DeploymentTaskCreated, "taskId", deployID, ` AND detail::json->>'status' = 'success'`, agents},
		{events.CoreTemplateUpdated, "deploymentTaskId", deployID, ` AND detail::json->>'status' = 'success'`, agents},
	} {
		all, distinct := eventCounts(c.detailType, c.field, c.id, "")
		ok, _ := eventCounts(c.detailType, c.field, c.id, c.where)
		if all != c.want || distinct != c.want || ok != c.want {
			t.Errorf("%s of task %s: %d events (%d successful) for %d distinct cores, want exactly one successful event for each of %d cores",
				c.detailType, c.id, all, ok, distinct, c.want)
		}
	}

	// Each deployment item was reported once: every item ended Success,
	// each agent applied the deployment exactly once, and every report the
	// agents sent was acknowledged.
	if got := pgInt(t, pg, `SELECT COUNT(*) FROM task_items WHERE task_id = $1 AND status = 'Success'`, deployID); got != agents {
		t.Errorf("%d deployment items ended Success, want %d", got, agents)
	}
	f.stop()
	for i, a := range f.agents {
		applied := a.Applied()
		if len(applied) != 1 {
			t.Errorf("%s applied %d deployments, want 1: %v", agentNames[i], len(applied), applied)
		}
		for id, c := range applied {
			if c != 1 {
				t.Errorf("%s applied deployment %s %d times", agentNames[i], id, c)
			}
		}
	}
	st := f.stats()
	t.Logf("fleet: %+v (Docs above %d are desired documents sent again: on connect or re-published)", st, agents)
	if st.Applies != agents {
		t.Errorf("the agents applied %d deployments, want %d", st.Applies, agents)
	}
	if err := loadgen.Check(st); err != nil {
		t.Error(err)
	}

	// Reads agree on the surviving replicas, whichever wrote the data;
	// artifacts written by any replica are served by all.
	for _, path := range []string{"/coreTasks/" + coreID, "/deploymentTasks/" + deployID} {
		if a, b := r1.must(200, "GET", path, nil).Body, r3.must(200, "GET", path, nil).Body; !jsonEqual(t, a, b) {
			t.Errorf("GET %s differs between replicas 1 and 3", path)
		}
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
	for i := 0; i < agents; i += 23 {
		for _, r := range []*broker{r1, r3} {
			if rt := r.reportedTemplate(agentNames[i]); rt["name"] != "RepT" || fmt.Sprint(rt["version"]) != "1" {
				t.Fatalf("%s reports template %v on %s, want RepT version 1", agentNames[i], rt, r.url)
			}
		}
	}

	// The webhook receives every stored event, each once. Delivery is at
	// least once: only a kill of the replica that was delivering (the
	// leader of event delivery) may repeat the deliveries in flight.
	// Every event was stored once: a Core Created Event per agent core and
	// per core, a DeploymentTask Created and a Core Template Updated Event
	// per agent core, nothing else.
	stored := pgInt(t, pg, `SELECT COUNT(*) FROM events`)
	if want := agents + n + 2*agents; stored != want {
		t.Errorf("%d events stored, want exactly %d", stored, want)
	}
	waitFor(t, 3*time.Minute, "the webhook to receive every event", func() bool {
		d, _ := hooks.counts()
		return d >= stored
	})
	d, total := hooks.counts()
	killedLeader := ledEvents(r2)
	t.Logf("webhook: %d stored events, %d distinct delivered, %d deliveries (%d repeated); the killed replica led delivery: %v",
		stored, d, total, total-d, killedLeader)
	if d != stored {
		t.Errorf("webhook got %d distinct events, %d are stored", d, stored)
	}
	if total != d && !killedLeader {
		t.Errorf("webhook got %d deliveries of %d events although the replica that delivers them was not killed", total, d)
	}
	t.Logf("whole test: %s", time.Since(setup).Round(time.Millisecond))
}
