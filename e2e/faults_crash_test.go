package e2e

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

// coreTaskProgress returns how many of a core task's items have ended and
// whether the task itself has.
func (b *broker) coreTaskProgress(id string) (done int, finished bool) {
	b.t.Helper()
	var task struct {
		TaskStatus string `json:"taskStatus"`
		Cores      []struct {
			TaskStatus string `json:"taskStatus"`
		} `json:"cores"`
	}
	b.must(200, "GET", "/coreTasks/"+id, nil).JSON(b.t, &task)
	for _, c := range task.Cores {
		if c.TaskStatus == "Success" || c.TaskStatus == "Failure" {
			done++
		}
	}
	return done, task.TaskStatus == "Success" || task.TaskStatus == "Failure"
}

// queryInt runs a counting query on a stopped broker's database.
func queryInt(t *testing.T, dataDir, query string, args ...any) int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dataDir, "ggfleet.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// TestFaultsBrokerKillCoreTask kills `ggfleet serve` with SIGKILL at random
// points of a large core task, once or twice per seed. After the restarts
// the task must end Success, with exactly one thing, one certificate, one
// principal and one Core Created Event per core, and every certs.zip
// holding the certificate the registry has for its core.
func TestFaultsBrokerKillCoreTask(t *testing.T) {
	seeds, n := scale(3, 10), scale(300, 1000)
	faultCase(t, "%d seeds of a %d-core task", seeds, n)
	for seed := 1; seed <= seeds; seed++ {
		t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 10))
			b := startBroker(t)
			logBrokerOnFailure(t, b)
			cores := make([]map[string]any, n)
			for i := range cores {
				cores[i] = core(fmt.Sprintf("k%d-%04d", seed, i))
			}
			id := b.createCores(cores...)
			kills := 1 + rng.IntN(2)
			for k := 0; k < kills; k++ {
				target := int(rng.Float64() * 0.9 * float64(n))
				var done int
				var finished bool
				waitFor(t, 10*time.Minute, fmt.Sprintf("%d cores done before kill %d", target, k+1), func() bool {
					done, finished = b.coreTaskProgress(id)
					return done >= target || finished
				})
				time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
				if finished {
					t.Logf("seed %d: the task finished before kill %d (aimed at %d/%d)", seed, k+1, target, n)
					break
				}
				b.kill()
				t.Logf("seed %d: kill %d with about %d/%d cores done", seed, k+1, done, n)
				b.restart()
			}
			task := b.waitTask("/coreTasks/"+id, 15*time.Minute)
			if task["taskStatus"] != "Success" {
				t.Fatalf("task after the kills = %v (statusMessage %v)", task["taskStatus"], task["statusMessage"])
			}
			for i := 0; i < n; i++ {
				name := fmt.Sprintf("k%d-%04d", seed, i)
				var th thingView
				b.must(200, "GET", "/registry/things/"+name, nil).JSON(t, &th)
				files := b.certsZip(name)
				if len(th.Principals) != 1 || th.Principals[0] != certID(t, files["certs/cert.pem"]) {
					t.Fatalf("%s: principals %v, certs.zip certificate %s", name, th.Principals, certID(t, files["certs/cert.pem"]))
				}
			}
			b.stop()
			for what, q := range map[string]string{
				"things":              `SELECT COUNT(*) FROM registry_things`,
				"certificates":        `SELECT COUNT(*) FROM registry_certificates`,
				"principals":          `SELECT COUNT(*) FROM registry_thing_principals`,
				"cores":               `SELECT COUNT(*) FROM cores`,
				"Core Created Events": `SELECT COUNT(*) FROM events WHERE detail_type = 'Core Created Event'`,
				"cores with an event": `SELECT COUNT(DISTINCT json_extract(detail, '$.coreName')) FROM events WHERE detail_type = 'Core Created Event'`,
			} {
				if got := queryInt(t, b.dataDir, q); got != n {
					t.Errorf("%s: %d, want exactly %d", what, got, n)
				}
			}
		})
	}
}
