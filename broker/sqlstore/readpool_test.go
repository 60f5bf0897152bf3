package sqlstore

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/cores/corestore"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/health"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// TestReadsDoNotWaitForTheWriter holds a write transaction open and checks
// that the reads of the API's GET paths answer meanwhile (on SQLite they
// queued behind the one writer connection before the read pool), see only
// committed data, and see the write once it commits.
func TestReadsDoNotWaitForTheWriter(t *testing.T) {
	ctx := context.Background()
	db := newReadFixture(t)
	cs := db.Cores()

	// The writer: a transaction that changes core a and stays open until released.
	locked, release, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- db.InTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, db.q(`UPDATE cores SET desired_name = 'T', desired_version = 1 WHERE name = ?`), "a"); err != nil {
				return err
			}
			close(locked)
			<-release
			return nil
		})
	}()
	select {
	case <-locked:
	case err := <-done:
		t.Fatalf("write transaction: %v", err)
	}
	released := false
	defer func() {
		if !released {
			close(release)
			<-done
		}
	}()

	reads := apiReads(t, db)
	for _, r := range reads {
		t.Run(r.name, func(t *testing.T) {
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			if err := r.read(rctx); err != nil {
				t.Fatalf("%s while a write transaction is open: %v", r.name, err)
			}
		})
	}

	released = true
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("write transaction: %v", err)
	}
	// Read your own writes: the committed change is visible at once.
	r, err := cs.GetCore(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if r.DesiredName != "T" || r.DesiredVersion != 1 {
		t.Fatalf("GetCore after the commit = %+v, want desired T 1", r)
	}
}

// TestReadPoolRefusesWrites checks that the read pool cannot write: on
// SQLite it would take the write lock behind the writer connection's back,
// on PostgreSQL commit outside the caller's transaction.
func TestReadPoolRefusesWrites(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	_, err := db.read.ExecContext(ctx, `INSERT INTO broker_settings (name, value, created_at) VALUES ('x', 'y', 1)`)
	if err == nil || !(strings.Contains(err.Error(), "readonly") || strings.Contains(err.Error(), "read-only")) {
		t.Fatalf("a write through the read pool: %v, want a read-only error", err)
	}
}

// TestReadsDoNotWaitForBusyWriterPool holds every connection of the writer
// pool, as a large task does, and checks that the API's reads still answer
// (on PostgreSQL they queued for a connection before the read pool).
func TestReadsDoNotWaitForBusyWriterPool(t *testing.T) {
	ctx := context.Background()
	db := newReadFixture(t)
	limit := db.sql.Stats().MaxOpenConnections
	if limit < 1 {
		t.Fatalf("the writer pool has no connection limit (%d)", limit)
	}
	for range limit {
		c, err := db.sql.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	for _, r := range apiReads(t, db) {
		t.Run(r.name, func(t *testing.T) {
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			if err := r.read(rctx); err != nil {
				t.Fatalf("%s while every writer connection is taken: %v", r.name, err)
			}
		})
	}
}

// newReadFixture returns a database holding what apiReads reads: core "a"
// with an artifact and a health report, template "T" and task "readpool1".
func newReadFixture(t *testing.T) *DB {
	t.Helper()
	ctx := context.Background()
	db, _ := newTaskTestDB(t)
	now := time.UnixMilli(1_700_000_000_123).UTC()
	cs := db.Cores()
	if err := cs.EnsureCores(ctx, []string{"a"}, now); err != nil {
		t.Fatal(err)
	}
	if err := cs.PutArtifact(ctx, corestore.ArtifactRecord{Core: "a", Kind: "certs", Bucket: "b", Key: "k", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateTemplate(ctx, cdf.Template{Name: "T", Components: []cdf.Component{{Key: "c", Version: "1.0.0"}}, CreatedAt: cdf.At(now)}); err != nil {
		t.Fatal(err)
	}
	task, items := newTestTask("readpool1", tasks.KindCore, 2, 2)
	if err := db.CreateTask(ctx, task, items); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.Health().PutReport(ctx, health.Report{Core: "a", Status: "HEALTHY", ReportedAt: now, ReceivedAt: now}); err != nil {
		t.Fatal(err)
	}
	return db
}

// apiRead is one read of the API's GET paths.
type apiRead struct {
	name string
	read func(ctx context.Context) error
}

// apiReads lists the reads that go through the read pool, on newReadFixture's database.
func apiReads(t *testing.T, db *DB) []apiRead {
	t.Helper()
	cs := db.Cores()
	return []apiRead{
		{"GetCore", func(ctx context.Context) error {
			r, err := cs.GetCore(ctx, "a")
			if err == nil && r.DesiredName != corestore.NoTemplate {
				t.Errorf("GetCore saw the uncommitted write: %+v", r)
			}
			return err
		}},
		{"ListCores", func(ctx context.Context) error {
			_, _, err := cs.ListCores(ctx, corestore.Filter{}, 10, "")
			return err
		}},
		{"ListArtifacts", func(ctx context.Context) error { _, err := cs.ListArtifacts(ctx, "a"); return err }},
		{"GetTask", func(ctx context.Context) error { _, err := db.GetTask(ctx, "readpool1"); return err }},
		{"ListTasks", func(ctx context.Context) error {
			_, _, err := db.ListTasks(ctx, tasks.KindCore, 10, "")
			return err
		}},
		{"ListItems", func(ctx context.Context) error { _, err := db.ListItems(ctx, "readpool1"); return err }},
		{"FleetStats", func(ctx context.Context) error { _, err := db.Fleet().FleetStats(ctx); return err }},
		{"GetHealth", func(ctx context.Context) error { _, err := db.Health().GetHealth(ctx, "a"); return err }},
		{"GetTemplate", func(ctx context.Context) error { _, err := db.GetTemplate(ctx, "T", 0); return err }},
		{"ListTemplates", func(ctx context.Context) error { _, _, err := db.ListTemplates(ctx, 10, ""); return err }},
		{"ListTemplateVersions", func(ctx context.Context) error {
			_, _, err := db.ListTemplateVersions(ctx, "T", 10, 0)
			return err
		}},
		{"CountTasks", func(ctx context.Context) error { _, err := db.CountTasks(ctx); return err }},
		{"APITokenByHash", func(ctx context.Context) error {
			_, err := db.APITokenByHash(ctx, "no-such-hash")
			if errkind.Is(err, errkind.NotFound) {
				return nil
			}
			return err
		}},
		{"GetCoreDevice", func(ctx context.Context) error {
			_, err := db.Registry().GetCoreDevice(ctx, "a")
			if errkind.Is(err, errkind.NotFound) {
				return nil
			}
			return err
		}},
	}
}

// TestSQLiteLookupsDoNotWaitForTheWriter holds SQLite's one writer
// connection and checks that the lookups a task makes per item (thing,
// policy, provisioning template, CA) still answer from the read pool, and
// see what the writer committed just before: queueing them for the writer
// connection behind other items' writes was a sixth of the bulk
// provisioning rate (BENCHMARKS.md, run 6).
func TestSQLiteLookupsDoNotWaitForTheWriter(t *testing.T) {
	if testDialect != SQLite {
		t.Skip("on PostgreSQL these lookups use the task pool; the read pool is kept for the API")
	}
	ctx := context.Background()
	db := newTestDB(t)
	reg := db.Registry()
	now := time.UnixMilli(1_700_000_000_123).UTC()
	if err := reg.CreateThing(ctx, provider.Thing{Name: "thing1", Attributes: map[string]string{}, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.PutPolicy(ctx, provider.Policy{Name: "pol1", Document: `{"Version":"2012-10-17","Statement":[]}`}, now); err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateProvisioningTemplate(ctx, "tmpl1", []byte(`{"Resources":{}}`), now); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.CreateDefaultCA(ctx, caRecord("ca1", true)); err != nil {
		t.Fatal(err)
	}

	writer, err := db.sql.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { writer.Close() })

	for _, c := range []struct {
		name   string
		lookup func(ctx context.Context) error
	}{
		{"GetThing", func(ctx context.Context) error { _, err := reg.GetThing(ctx, "thing1"); return err }},
		{"GetPolicy", func(ctx context.Context) error { _, err := reg.GetPolicy(ctx, "pol1"); return err }},
		{"GetProvisioningTemplate", func(ctx context.Context) error {
			_, err := db.GetProvisioningTemplate(ctx, "tmpl1")
			return err
		}},
		{"DefaultCA", func(ctx context.Context) error { _, err := db.DefaultCA(ctx); return err }},
		{"GetCA", func(ctx context.Context) error { _, err := db.GetCA(ctx, "ca1"); return err }},
	} {
		t.Run(c.name, func(t *testing.T) {
			lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			if err := c.lookup(lctx); err != nil {
				t.Fatalf("%s while the writer connection is taken: %v", c.name, err)
			}
		})
	}
}
