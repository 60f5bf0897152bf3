// Package sqlstore is the persistence edge: database/sql on SQLite (embedded
// default, modernc.org/sqlite in WAL mode) and PostgreSQL (pgx/v5 stdlib, for
// N stateless replicas on one database), with embedded migrations. It
// implements the Store interface of each domain package.
//
// Conventions every file here follows:
//   - SQL is written with ? placeholders; DB.q rebinds them for PostgreSQL.
//   - One set of migration files serves both engines. A statement that cannot
//     be written portably is given twice, on lines starting "-- sqlite: " and
//     "-- postgres: ": each engine keeps its own lines (prefix removed) and
//     treats the other's as comments (see dialectBody).
//   - On PostgreSQL, Migrate and WithLock run under session advisory locks,
//     so replicas starting together migrate and initialise once.
//   - Timestamps are BIGINT unix milliseconds (0 = never set); booleans are
//     INTEGER 0/1; documents are TEXT holding JSON.
//   - Statements go through d.w(ctx) (the writer pool d.sql), reads of the
//     API's GET paths through d.r(ctx) (the read pool d.read), per-item task
//     lookups through d.lookup(ctx): each is the transaction Atomically
//     carries in ctx when there is one (tx.go), so every store method takes
//     part in a unit of work spanning stores.
//   - On SQLite d.sql, the writer pool, has one connection (river's driver
//     needs a single writer): never run a query on d.sql while holding a
//     transaction, or it deadlocks. Use the *Tx you were given, or the ctx
//     Atomically gave you.
//   - d.read is for single-statement reads that must not queue behind task
//     transactions on the writer (the API's GET paths). On SQLite it is a
//     separate pool of query_only connections on the same WAL database, so a
//     read sees every transaction committed before it started (read your own
//     writes) and never waits for one in progress. On PostgreSQL it is a
//     small pool of its own on the same database, so the API's reads never
//     wait for a connection behind task work that holds every connection of
//     d.sql; READ COMMITTED gives them what any d.sql statement would see.
//     Each statement sees its own snapshot. Never use d.read inside a
//     transaction, for a read whose result decides a write (read-modify-write:
//     use the *Tx), or where several statements must see one snapshot.
//   - d.lookup(ctx) is for the lookups by key a task makes for every item
//     (thing, policy, provisioning template, CA) outside any transaction:
//     d.read on SQLite, so they do not queue for the writer connection
//     behind other items' writes; d.sql on PostgreSQL, where the task pool
//     has connections enough and the read pool stays the API's.
//   - On SQLite a goroutine of the DB copies the WAL back into the database
//     file (checkpoint.go), so commits on the writer never wait for it.
//   - Missing rows are errkind.NotFound, unique violations errkind.Conflict.
package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib" // also registers the database/sql driver "pgx"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Dialect is the SQL engine behind a DB.
type Dialect int

// The supported engines.
const (
	SQLite Dialect = iota
	Postgres
)

// DB is the broker's database handle.
type DB struct {
	sql     *sql.DB
	read    *sql.DB // reads that must not wait for the writer; see the package comment
	dialect Dialect
	log     *slog.Logger
	enqueue Enqueuer      // set by SetEnqueuer (tasks.go)
	ckpt    *checkpointer // SQLite's background checkpoints (checkpoint.go); nil on PostgreSQL
}

// SQLiteReadConns is the size of the SQLite read pool: the API's
// concurrent GETs and the task workers' lookups (DB.lookup) on a small
// machine; WAL lets them all read while the one writer connection holds a
// transaction.
const SQLiteReadConns = 8

// OpenSQLite opens (creating if needed) the SQLite database at path, in WAL
// mode, with the single-connection pool river's SQLite driver requires, and a
// separate read-only pool on the same file for reads that must not queue
// behind the writer (see the package comment).
func OpenSQLite(ctx context.Context, path string, log *slog.Logger) (*DB, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create database dir: %w", err)
	}
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_pragma=temp_store(MEMORY)&_txlock=immediate" +
		"&_pragma=wal_autocheckpoint(" + strconv.Itoa(walBackstopPages) + ")"
	db, err := sql.Open(stmtCacheDriver, dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	// The database file holds CA keys (encrypted) and token hashes: keep it private.
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if _, err := os.Stat(p); err == nil {
			_ = os.Chmod(p, 0o600)
		}
	}
	// Opened after the writer has put the file in WAL mode (persistent in
	// the file). query_only makes any write through this pool fail rather
	// than take the write lock behind the writer's back.
	read, err := sql.Open(stmtCacheDriver, "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=query_only(1)&_pragma=temp_store(MEMORY)")
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite %s for reading: %w", path, err)
	}
	read.SetMaxOpenConns(SQLiteReadConns)
	read.SetMaxIdleConns(SQLiteReadConns)
	if err := read.PingContext(ctx); err != nil {
		read.Close()
		db.Close()
		return nil, fmt.Errorf("open sqlite %s for reading: %w", path, err)
	}
	ckpt, err := startCheckpointer(ctx, path, log)
	if err != nil {
		read.Close()
		db.Close()
		return nil, err
	}
	return &DB{sql: db, read: read, dialect: SQLite, log: log, ckpt: ckpt}, nil
}

// Pool limits of OpenPostgres: each replica keeps at most
// PostgresMaxOpenConns connections for task work, the job queue and writes,
// and PostgresReadConns more for the API's reads, so N replicas fit
// PostgreSQL's default max_connections (100) with room for the leader and
// liveness sessions and for operators. Idle connections are kept up to the
// same limits: closing and reopening them under load showed up as connect
// timeouts.
const (
	PostgresMaxOpenConns = 16
	PostgresReadConns    = 4
)

// OpenPostgres connects to the PostgreSQL database at url
// (postgres://user[:password]@host[:port]/db?sslmode=…; any other query
// parameter, such as search_path, is sent to the server as a setting).
func OpenPostgres(ctx context.Context, url string, log *slog.Logger) (*DB, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db, err := openPostgresPool(ctx, url, PostgresMaxOpenConns, false)
	if err != nil {
		return nil, err
	}
	// The API's reads get a pool of their own: under a large task every
	// connection of db is busy, and a GET queued behind task statements for
	// a connection (P3 in BENCHMARKS.md). Its sessions are read-only, so a
	// write sent there by mistake fails instead of escaping its transaction.
	read, err := openPostgresPool(ctx, url, PostgresReadConns, true)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &DB{sql: db, read: read, dialect: Postgres, log: log}, nil
}

// openPostgresPool opens one pool of at most size connections (read-only
// sessions when readOnly) and checks that the database answers.
func openPostgresPool(ctx context.Context, url string, size int, readOnly bool) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("open postgres %s: %w", RedactURL(url), err)
	}
	if readOnly {
		cfg.RuntimeParams["default_transaction_read_only"] = "on"
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(size)
	db.SetMaxIdleConns(size)
	db.SetConnMaxLifetime(30 * time.Minute)
	db.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, mapErr(fmt.Errorf("connect to postgres %s: %w", RedactURL(url), err), "open database")
	}
	return db, nil
}

// RedactURL drops the password from a database URL, for logs and errors.
func RedactURL(raw string) string {
	at := strings.LastIndex(raw, "@")
	scheme := strings.Index(raw, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return raw
	}
	cred := raw[scheme+3 : at]
	if i := strings.Index(cred, ":"); i >= 0 {
		cred = cred[:i] + ":xxxxx"
	}
	return raw[:scheme+3] + cred + raw[at:]
}

// SQL returns the underlying pool (for the job queue's driver).
func (d *DB) SQL() *sql.DB { return d.sql }

// Dialect returns the engine.
func (d *DB) Dialect() Dialect { return d.dialect }

// Close stops the checkpointer (SQLite) and closes the pools.
func (d *DB) Close() error {
	var err error
	if d.ckpt != nil {
		err = d.ckpt.stop()
	}
	if serr := d.sql.Close(); err == nil {
		err = serr
	}
	if d.read != d.sql {
		if rerr := d.read.Close(); err == nil {
			err = rerr
		}
	}
	return err
}

// Ping checks the database answers (for /readyz).
func (d *DB) Ping(ctx context.Context) error { return d.sql.PingContext(ctx) }

// q rebinds ? placeholders to $n for PostgreSQL.
func (d *DB) q(query string) string {
	if d.dialect != Postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

// Querier is what both *sql.DB and *sql.Tx provide.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// InTx runs fn in a transaction, committing when it returns nil. Inside
// Atomically it runs in the caller's transaction, under a savepoint that
// is rolled back when fn fails (see tx.go).
func (d *DB) InTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if ct := ctxTx(ctx, d); ct != nil {
		return ct.savepoint(ctx, func() error { return fn(ct.tx) })
	}
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return mapErr(err, "begin transaction")
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return mapErr(err, "commit")
	}
	return nil
}

// millis converts a time to stored milliseconds (0 for the zero time).
func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fromMillis converts stored milliseconds back (0 → zero time).
func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// mapErr turns driver errors into errkind errors where callers branch on them.
func mapErr(err error, what string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return errkind.Wrap(errkind.NotFound, err, "%s: not found", what)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "23505": // unique_violation
			return errkind.Wrap(errkind.Conflict, err, "%s: already exists", what)
		case strings.HasPrefix(pgErr.Code, "08"), // connection exceptions
			strings.HasPrefix(pgErr.Code, "53"),  // insufficient resources (disk full, too many connections)
			strings.HasPrefix(pgErr.Code, "57P"), // operator intervention (shutdown, cannot connect now)
			pgErr.Code == "25006":                // read-only transaction (a standby)
			return errkind.Wrap(errkind.Unavailable, err, "%s: the database is unavailable (%s); check PostgreSQL and retry", what, pgErr.Code)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) || errors.Is(err, driver.ErrBadConn) || isConnectError(err) {
		return errkind.Wrap(errkind.Unavailable, err, "%s: cannot reach the database; check PostgreSQL and retry", what)
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "UNIQUE constraint failed"), strings.Contains(msg, "duplicate key value"),
		strings.Contains(msg, "SQLSTATE 23505"):
		return errkind.Wrap(errkind.Conflict, err, "%s: already exists", what)
	case strings.Contains(msg, "database or disk is full"), strings.Contains(msg, "SQLITE_FULL"),
		strings.Contains(msg, "readonly database"), strings.Contains(msg, "SQLITE_READONLY"),
		strings.Contains(msg, "disk I/O error"):
		return errkind.Wrap(errkind.Unavailable, err, "%s: the database cannot be written (disk full or read-only); free space or fix permissions and retry", what)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// isConnectError reports whether err is a failure to connect to PostgreSQL.
func isConnectError(err error) bool {
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne)
}

// Migrate applies the embedded migrations that have not been applied yet,
// each in its own transaction, in file-name order. On PostgreSQL it holds
// an advisory lock meanwhile, so replicas starting together are safe.
func (d *DB) Migrate(ctx context.Context) error {
	return d.WithLock(ctx, "migrate", d.migrate)
}

func (d *DB) migrate(ctx context.Context) error {
	if _, err := d.w(ctx).ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		version := strings.TrimSuffix(filepath.Base(name), ".sql")
		var n int
		if err := d.w(ctx).QueryRowContext(ctx, d.q(`SELECT COUNT(*) FROM schema_migrations WHERE version = ?`), version).Scan(&n); err != nil {
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		if n > 0 {
			continue
		}
		body, err := migrationFiles.ReadFile(name)
		if err != nil {
			return err
		}
		err = d.InTx(ctx, func(tx *sql.Tx) error {
			for _, stmt := range splitStatements(dialectBody(string(body), d.dialect)) {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("migration %s: %w", version, err)
				}
			}
			_, err := tx.ExecContext(ctx, d.q(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`), version, time.Now().UnixMilli())
			return err
		})
		if err != nil {
			return err
		}
		d.log.Info("applied migration", "version", version)
	}
	return nil
}

// Line prefixes of statements written for one engine only.
const (
	sqlitePrefix   = "-- sqlite:"
	postgresPrefix = "-- postgres:"
)

// dialectBody keeps the lines of a migration meant for dialect: a line
// starting "-- sqlite:" or "-- postgres:" loses that prefix on its engine
// and stays a comment (dropped by splitStatements) on the other.
func dialectBody(body string, dialect Dialect) string {
	mine := sqlitePrefix
	if dialect == Postgres {
		mine = postgresPrefix
	}
	lines := strings.Split(body, "\n")
	for i, l := range lines {
		if t := strings.TrimSpace(l); strings.HasPrefix(t, mine) {
			lines[i] = strings.TrimPrefix(t, mine)
		}
	}
	return strings.Join(lines, "\n")
}

// splitStatements drops -- comment lines, then splits a migration file on
// semicolons. Migrations must not contain semicolons inside statements.
func splitStatements(body string) []string {
	var kept []string
	for _, l := range strings.Split(body, "\n") {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "--") {
			kept = append(kept, l)
		}
	}
	var out []string
	for _, s := range strings.Split(strings.Join(kept, "\n"), ";") {
		if strings.TrimSpace(s) != "" {
			out = append(out, strings.TrimSpace(s))
		}
	}
	return out
}
