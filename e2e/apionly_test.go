package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestAPIOnlyReplica: a replica started with --workers 0 serves the API and
// takes a core task but works none of its batches, so a bulk task never
// holds the CPUs that answer the API; alone it leaves the task queued
// (nothing lost), and a replica with workers, started later, runs every
// batch. On SQLite --workers 0 is refused: no other process could work.
func TestAPIOnlyReplica(t *testing.T) {
	dbURL, pg := testPostgresDB(t)
	keyFile := writeSecretsKey(t, t.TempDir(), "secrets.key")
	common := []string{"--log-level", "info", "--database", dbURL, "--secrets-key-file", keyFile}
	api := startBroker(t, append(common, "--workers", "0")...)

	cores := make([]map[string]any, 40) // two batches
	for i := range cores {
		cores[i] = core(fmt.Sprintf("apionly-%02d", i))
	}
	id := api.createCores(cores...)
	jobs := func() map[string]int {
		t.Helper()
		got := map[string]int{}
		rows, err := pg.Query(`SELECT state, coalesce(array_to_string(attempted_by, ','), '') FROM river_job WHERE args->>'taskId' = $1`, id)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var state, by string
			if err := rows.Scan(&state, &by); err != nil {
				t.Fatal(err)
			}
			got[state+" by "+by]++
		}
		return got
	}
	time.Sleep(time.Second) // twenty of a worker's polls
	if got := jobs(); got["available by "] != 2 || len(got) != 1 {
		t.Fatalf("batches with only the API-only replica running: %v, want 2 available, never attempted", got)
	}
	var task map[string]any
	api.must(200, "GET", "/coreTasks/"+id, nil).JSON(t, &task)
	if task["taskStatus"] != "Waiting" {
		t.Fatalf("task %v with only the API-only replica running, want Waiting", task["taskStatus"])
	}

	worker := startReplica(t, api, common...)
	if task := api.waitTask("/coreTasks/"+id, 2*time.Minute); task["taskStatus"] != "Success" {
		t.Fatalf("task %v after a worker replica started, want Success", task["taskStatus"])
	}
	mark := fmt.Sprintf("-%d-", worker.cmd.Process.Pid) // river client ids are host-pid-random
	waitFor(t, 30*time.Second, "both batches recorded completed by the worker replica", func() bool {
		got := jobs()
		for k, n := range got { // one key: both batches, each attempted once, by the worker
			if !strings.HasPrefix(k, "completed by ") || !strings.Contains(k, mark) || strings.Contains(k, ",") || n != 2 {
				return false
			}
		}
		return len(got) == 1
	})
	api.must(200, "GET", "/cores/apionly-07", nil)

	out, err := runGGFleet(t, time.Minute, "serve", "--data-dir", t.TempDir(), "--listen", freeAddr(t), "--mqtt-listen", freeAddr(t), "--workers", "0")
	if err == nil || !strings.Contains(string(out), "--workers 0") || !strings.Contains(string(out), "postgres") {
		t.Errorf("serve --workers 0 on SQLite: err %v, output %q; want a refusal", err, out)
	}
}
