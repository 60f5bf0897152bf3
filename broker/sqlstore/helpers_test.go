package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/provider"
)

// The store suite runs twice: once on SQLite, then once more on PostgreSQL
// (GGFLEET_TEST_POSTGRES, default below), each test in a schema of its own
// so tests stay isolated and may run in parallel. Without a reachable
// PostgreSQL the second pass is skipped outside CI and fails in CI.
var (
	testDialect = SQLite
	testPGURL   string
	testPGAdmin *sql.DB // creates and drops the per-test schemas
	testSchemas sync.Map
)

// DefaultTestPostgres is the PostgreSQL the tests use when
// GGFLEET_TEST_POSTGRES is unset.
const DefaultTestPostgres = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

func TestMain(m *testing.M) {
	if code := m.Run(); code != 0 {
		os.Exit(code)
	}
	testPGURL = os.Getenv("GGFLEET_TEST_POSTGRES")
	if testPGURL == "" {
		testPGURL = DefaultTestPostgres
	}
	admin, err := sql.Open("pgx", testPGURL)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = admin.PingContext(ctx)
		cancel()
	}
	if err != nil {
		msg := fmt.Sprintf("sqlstore: PostgreSQL at %s is not reachable (%v): install and start PostgreSQL, or set GGFLEET_TEST_POSTGRES", RedactURL(testPGURL), err)
		if os.Getenv("CI") != "" {
			fmt.Fprintln(os.Stderr, "FAIL "+msg)
			os.Exit(1)
		}
		fmt.Println("SKIP the PostgreSQL pass: " + msg)
		os.Exit(0)
	}
	admin.SetMaxOpenConns(4)
	testPGAdmin = admin
	testDialect = Postgres
	fmt.Println("=== sqlstore: the same tests on PostgreSQL")
	code := m.Run()
	admin.Close()
	os.Exit(code)
}

// newTestDB opens a migrated, empty database of the pass's engine, closed
// (and on PostgreSQL dropped) when the test ends.
func newTestDB(t *testing.T) *DB {
	t.Helper()
	return openTestDB(t, filepath.Join(t.TempDir(), "ggfleet.db"))
}

// openTestDB opens and migrates the database named by path, closed when the
// test ends; tests that reopen the same path get the same database (on
// PostgreSQL, a schema named after path).
func openTestDB(t *testing.T, path string) *DB {
	t.Helper()
	ctx := context.Background()
	var (
		db  *DB
		err error
	)
	if testDialect == Postgres {
		db, err = OpenPostgres(ctx, testSchemaURL(t, path), nil)
	} else {
		db, err = OpenSQLite(ctx, path, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	if testDialect == Postgres {
		db.sql.SetMaxOpenConns(4) // many tests run at once
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return db
}

// testSchemaURL creates the schema for path (once) and returns the test
// database URL with search_path set to it. The schema is dropped when the
// test that created it ends.
func testSchemaURL(t *testing.T, path string) string {
	t.Helper()
	h := fnv.New64a()
	h.Write([]byte(path))
	schema := fmt.Sprintf("ggtest_%d_%x", os.Getpid(), h.Sum64())
	if _, loaded := testSchemas.LoadOrStore(schema, true); !loaded {
		if _, err := testPGAdmin.Exec(`CREATE SCHEMA ` + schema); err != nil {
			t.Fatalf("create test schema: %v", err)
		}
		t.Cleanup(func() {
			if _, err := testPGAdmin.Exec(`DROP SCHEMA ` + schema + ` CASCADE`); err != nil {
				t.Errorf("drop test schema %s: %v", schema, err)
			}
		})
	}
	u, err := url.Parse(testPGURL)
	if err != nil {
		t.Fatalf("GGFLEET_TEST_POSTGRES: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// testThing is a thing named name with no attributes, made at a fixed time.
func testThing(name string) provider.Thing {
	return provider.Thing{Name: name, Attributes: map[string]string{}, CreatedAt: time.UnixMilli(1_700_000_000_123).UTC()}
}
