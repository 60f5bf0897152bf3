package e2e

import (
	"fmt"
	"testing"
	"time"
)

// TestKillMidTaskResumes kills the broker with SIGKILL in the middle of a
// 500-core task; after a restart the task must end Success with exactly one
// thing and one certificate per core, each matching its certs.zip.
func TestKillMidTaskResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("long: kills a broker in the middle of a 500-core task")
	}
	const n = 500
	// One batch worker, and the task polled every 10 ms below: a 500-core
	// task takes a fraction of a second on a fast machine.
	b := startBroker(t, "--workers", "1")
	cores := make([]map[string]any, n)
	for i := range cores {
		cores[i] = core(fmt.Sprintf("rc-%03d", i))
	}
	id := b.createCores(cores...)

	// Kill as soon as part of the work is done, but not all of it.
	var done int
	waitEvery(t, 2*time.Minute, 10*time.Millisecond, "the first cores to finish", func() bool {
		var task struct {
			TaskStatus string `json:"taskStatus"`
			Cores      []struct {
				TaskStatus string `json:"taskStatus"`
			} `json:"cores"`
		}
		b.must(200, "GET", "/coreTasks/"+id, nil).JSON(t, &task)
		done = 0
		for _, c := range task.Cores {
			if c.TaskStatus == "Success" || c.TaskStatus == "Failure" {
				done++
			}
		}
		return done > 0
	})
	b.kill()
	if done >= n {
		t.Fatalf("the task finished before the kill (%d/%d done): nothing was interrupted", done, n)
	}
	t.Logf("killed with %d/%d cores done", done, n)

	b.restart()
	task := b.waitTask("/coreTasks/"+id, 5*time.Minute)
	if task["taskStatus"] != "Success" {
		failed := 0
		for _, c := range task["cores"].([]any) {
			if item := c.(map[string]any); item["taskStatus"] != "Success" {
				if failed < 5 {
					t.Logf("item %v: %v %v", item["name"], item["taskStatus"], item["statusMessage"])
				}
				failed++
			}
		}
		t.Fatalf("task after restart = %v with %d failed items (statusMessage %v)", task["taskStatus"], failed, task["statusMessage"])
	}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("rc-%03d", i)
		var th thingView
		b.must(200, "GET", "/registry/things/"+name, nil).JSON(t, &th)
		files := b.certsZip(name)
		if len(th.Principals) != 1 || th.Principals[0] != certID(t, files["certs/cert.pem"]) {
			t.Fatalf("%s: principals %v, certs.zip certificate %s", name, th.Principals, certID(t, files["certs/cert.pem"]))
		}
	}
	b.stop()
	things, certificates := countRegistry(t, b.dataDir)
	if things != n || certificates != n {
		t.Fatalf("registry holds %d things and %d certificates, want exactly %d of each", things, certificates, n)
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
