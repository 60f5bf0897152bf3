package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"reflect"

	"modernc.org/sqlite"
)

// SQLite connections keep their prepared statements. modernc.org/sqlite
// parses every statement it is given through db.Exec or db.Query again,
// and parsing was a fifth of the broker's CPU when provisioning cores in
// bulk (BenchmarkCoreTask): the same few dozen statement texts, run
// thousands of times on one writer connection. The "sqlite-stmtcache"
// driver wraps modernc's: each connection keeps a statement per query text
// and runs it again with the new arguments (sqlite3_reset and rebinding,
// as a database/sql *Stmt does). PostgreSQL needs none of this: pgx caches
// prepared statements per connection itself.

// stmtCacheDriver is the name OpenSQLite opens its pools with.
const stmtCacheDriver = "sqlite-stmtcache"

// stmtCacheSize bounds the statements a connection keeps; when it is full
// the cache starts over (the statements in use stay until their rows close).
const stmtCacheSize = 256

func init() {
	sql.Register(stmtCacheDriver, cachingDriver{&sqlite.Driver{}})
}

// cachingDriver opens modernc connections wrapped in cachingConn.
type cachingDriver struct{ driver.Driver }

func (d cachingDriver) Open(name string) (driver.Conn, error) {
	c, err := d.Driver.Open(name)
	if err != nil {
		return nil, err
	}
	return newCachingConn(c)
}

// sqliteConn is what modernc's connection provides and database/sql uses.
type sqliteConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

func newCachingConn(c driver.Conn) (driver.Conn, error) {
	sc, ok := c.(sqliteConn)
	if !ok {
		c.Close()
		return nil, errors.New("sqlite driver connection lacks a context-aware interface")
	}
	return &cachingConn{sqliteConn: sc, stmts: map[string]*cachedStmt{}}, nil
}

// cachingConn is one connection with its statements by query text.
// database/sql uses a connection from one goroutine at a time.
type cachingConn struct {
	sqliteConn
	stmts map[string]*cachedStmt
}

// cachedStmt is a kept statement; busy while its rows are open, when the
// same text on this connection gets a statement of its own.
type cachedStmt struct {
	stmt    driver.Stmt
	busy    bool
	evicted bool // closed once its rows close
}

type stmtContext interface {
	driver.Stmt
	driver.StmtExecContext
	driver.StmtQueryContext
}

// ExecContext runs query with its kept statement.
func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	cs, err := c.stmt(ctx, query)
	if err != nil || cs == nil {
		if err != nil {
			return nil, err
		}
		return c.sqliteConn.ExecContext(ctx, query, args)
	}
	return cs.stmt.(stmtContext).ExecContext(ctx, args)
}

// QueryContext runs query with its kept statement; the statement is busy
// until the rows close.
func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	cs, err := c.stmt(ctx, query)
	if err != nil || cs == nil {
		if err != nil {
			return nil, err
		}
		return c.sqliteConn.QueryContext(ctx, query, args)
	}
	rows, err := cs.stmt.(stmtContext).QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	cs.busy = true
	return &cachedRows{Rows: rows, cs: cs}, nil
}

// stmt returns query's kept statement, preparing it the first time; nil
// (run it uncached) when the kept one is busy.
func (c *cachingConn) stmt(ctx context.Context, query string) (*cachedStmt, error) {
	if cs := c.stmts[query]; cs != nil {
		if cs.busy {
			return nil, nil
		}
		return cs, nil
	}
	s, err := c.sqliteConn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if _, ok := s.(stmtContext); !ok {
		s.Close()
		return nil, nil
	}
	if len(c.stmts) >= stmtCacheSize {
		c.evictAll()
	}
	cs := &cachedStmt{stmt: s}
	c.stmts[query] = cs
	return cs, nil
}

// evictAll forgets every kept statement, closing those not in use.
func (c *cachingConn) evictAll() {
	for q, cs := range c.stmts {
		if cs.busy {
			cs.evicted = true
		} else {
			cs.stmt.Close()
		}
		delete(c.stmts, q)
	}
}

// Close closes the kept statements, then the connection.
func (c *cachingConn) Close() error {
	c.evictAll()
	return c.sqliteConn.Close()
}

// cachedRows frees its statement for the next use when closed.
type cachedRows struct {
	driver.Rows
	cs *cachedStmt
}

func (r *cachedRows) Close() error {
	err := r.Rows.Close()
	r.cs.busy = false
	if r.cs.evicted {
		if cerr := r.cs.stmt.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// The column type methods of modernc's rows, which database/sql asks for
// (ColumnTypes) through optional interfaces the wrapper would hide.

func (r *cachedRows) ColumnTypeScanType(i int) reflect.Type {
	if t, ok := r.Rows.(driver.RowsColumnTypeScanType); ok {
		return t.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}

func (r *cachedRows) ColumnTypeDatabaseTypeName(i int) string {
	if t, ok := r.Rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return t.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (r *cachedRows) ColumnTypeNullable(i int) (nullable, ok bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeNullable); ok {
		return t.ColumnTypeNullable(i)
	}
	return false, false
}

func (r *cachedRows) ColumnTypeLength(i int) (length int64, ok bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeLength); ok {
		return t.ColumnTypeLength(i)
	}
	return 0, false
}

func (r *cachedRows) ColumnTypePrecisionScale(i int) (precision, scale int64, ok bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypePrecisionScale); ok {
		return t.ColumnTypePrecisionScale(i)
	}
	return 0, 0, false
}
