package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
)

// Deferred inserts: a batch's rows written a table at a time.
//
// A Create batch provisions its cores one after the other inside one
// transaction (Atomically), and each core inserts a row into half a dozen
// tables: its thing group, thing, certificate, principal and policy links,
// certs.zip and installer config and their records. Sent one by one that
// is a dozen statements a core: on PostgreSQL a dozen round trips and as
// many statements for the server to parse, plan and log, on the 2 CPUs the
// broker shares with it.
//
// In a transaction started with a context from WithDeferredInserts, the
// inserts that take part (insertSQL values, run with DB.insert) are held in
// memory instead, and sent as one multi-row INSERT per table just before
// the transaction's next other statement, its next savepoint, or its
// commit, in the order the tables were first written (so a row is always
// sent after the rows its foreign keys point to). Any statement through
// the transaction sees every write before it, as without deferral; the one
// exception is made for the single-row lookups that say which key they
// read (DB.readKey), which skip the flush when no held row has that key.
//
// What changes is when a failing insert fails: a duplicate key or a
// missing foreign key is reported by the flush, for the whole
// transaction, instead of by the call that made the row. The batch's
// caller treats a failed transaction as it did before (tasks.ErrItemByItem:
// its items are worked again one by one, without deferral, and each gets
// its own answer). Inserts are only held outside savepoints: inside one
// they run at once, so that rolling back to the savepoint undoes them.

// deferKey marks a context whose transactions defer their inserts.
type deferKey struct{}

// WithDeferredInserts returns a context whose Atomically transactions hold
// their inserts and send them a table at a time (see above). It has no
// effect on statements outside such a transaction.
func WithDeferredInserts(ctx context.Context) context.Context {
	return context.WithValue(ctx, deferKey{}, true)
}

// insertSQL is an INSERT that can be deferred: the table, its columns, and
// what follows the VALUES list. When keys > 0, the first keys columns are
// the row's conflict key, and the tail either ignores a conflict
// (DO NOTHING) or replaces the row (replace, DO UPDATE); a held row with the
// key of a new one is then kept (ignore) or replaced (replace) in memory,
// since PostgreSQL refuses a multi-row upsert that touches a row twice.
type insertSQL struct {
	table   string
	columns []string
	tail    string
	keys    int
	replace bool

	one string // the single-row statement, made by newInsert
}

// newInsert returns an insertSQL; see its fields. The key columns (at
// most two) must hold comparable values, such as strings.
func newInsert(table string, columns []string, keys int, replace bool, tail string) insertSQL {
	if keys > 2 || keys > len(columns) {
		panic(fmt.Sprintf("sqlstore: insert into %s: %d key columns (at most 2)", table, keys))
	}
	in := insertSQL{table: table, columns: columns, tail: tail, keys: keys, replace: replace}
	in.one = in.statement(1)
	return in
}

// statement returns the INSERT of rows rows, with ? placeholders.
func (in insertSQL) statement(rows int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO " + in.table + " (" + strings.Join(in.columns, ", ") + ") VALUES ")
	row := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(in.columns)), ", ") + ")"
	for i := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(row)
	}
	if in.tail != "" {
		b.WriteString(" " + in.tail)
	}
	return b.String()
}

// heldRows are the rows of one insertSQL held by a transaction, and where
// the row of each conflict key is (when the insert has one).
type heldRows struct {
	in    *insertSQL
	rows  [][]any
	byKey map[[2]any]int
}

// maxDeferredArgs bounds one multi-row statement's parameters, below
// SQLite's 32,766 and PostgreSQL's 65,535.
const maxDeferredArgs = 30000

// insert runs in with args (one row), or holds the row when ctx carries a
// transaction that defers inserts and no savepoint is open.
func (d *DB) insert(ctx context.Context, in *insertSQL, args ...any) error {
	if len(args) != len(in.columns) {
		return fmt.Errorf("insert into %s: %d values for %d columns", in.table, len(args), len(in.columns))
	}
	if !d.defers(ctx) {
		_, err := d.w(ctx).ExecContext(ctx, d.q(in.one), args...)
		return err
	}
	ctxTx(ctx, d).hold(in, args)
	return nil
}

// defers reports whether an insert with ctx would be held: ctx carries a
// transaction that defers inserts, and no savepoint is open.
func (d *DB) defers(ctx context.Context) bool {
	ct := ctxTx(ctx, d)
	return ct != nil && ct.deferring && ct.depth == 0
}

// hold adds a row to the transaction's held rows.
func (ct *ctxTxn) hold(in *insertSQL, args []any) {
	i := slices.IndexFunc(ct.held, func(h *heldRows) bool { return h.in == in })
	if i < 0 {
		ct.held = append(ct.held, &heldRows{in: in})
		i = len(ct.held) - 1
	}
	h := ct.held[i]
	if in.keys > 0 {
		var key [2]any // the conflict keys have one or two columns
		copy(key[:], args[:in.keys])
		if j, ok := h.byKey[key]; ok {
			if in.replace {
				h.rows[j] = args
			}
			return
		}
		if h.byKey == nil {
			h.byKey = map[[2]any]int{}
		}
		h.byKey[key] = len(h.rows)
	}
	h.rows = append(h.rows, args)
}

// holds reports whether a held row of table has key as its first column.
func (ct *ctxTxn) holds(table string, key any) bool {
	for _, h := range ct.held {
		if h.in.table != table {
			continue
		}
		for _, row := range h.rows {
			if row[0] == key {
				return true
			}
		}
	}
	return false
}

// flush sends the held rows, a table at a time in the order the tables
// were first written. A failure is remembered: the transaction cannot
// commit after it.
func (ct *ctxTxn) flush(ctx context.Context) error {
	if ct.flushErr != nil {
		return ct.flushErr
	}
	held := ct.held
	ct.held = nil
	for _, h := range held {
		per := max(1, maxDeferredArgs/len(h.in.columns))
		for rows := range slices.Chunk(h.rows, per) {
			args := make([]any, 0, len(rows)*len(h.in.columns))
			for _, r := range rows {
				args = append(args, r...)
			}
			if _, err := ct.tx.ExecContext(ctx, ct.db.q(h.in.statement(len(rows))), args...); err != nil {
				ct.flushErr = mapErr(err, fmt.Sprintf("insert %d rows into %s", len(rows), h.in.table))
				return ct.flushErr
			}
		}
	}
	return nil
}

// ExecContext, QueryContext and QueryRowContext make a ctxTxn the Querier
// of its context's statements: each sends the held rows first.
func (ct *ctxTxn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if err := ct.flush(ctx); err != nil {
		return nil, err
	}
	return ct.tx.ExecContext(ctx, query, args...)
}

// QueryContext: see ExecContext.
func (ct *ctxTxn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if err := ct.flush(ctx); err != nil {
		return nil, err
	}
	return ct.tx.QueryContext(ctx, query, args...)
}

// QueryRowContext: see ExecContext. A failed flush cannot be returned
// here; the row is read anyway (on PostgreSQL it fails, the transaction
// being aborted) and the transaction refuses to commit.
func (ct *ctxTxn) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	_ = ct.flush(ctx)
	return ct.tx.QueryRowContext(ctx, query, args...)
}

// readKey is q, the Querier a single-row read of table by key (its first
// column) would use, except in a transaction holding no row of table with
// that key: there the read goes to the transaction without sending the
// held rows, which cannot change its answer.
func (d *DB) readKey(ctx context.Context, q Querier, table string, key any) Querier {
	if ct := ctxTx(ctx, d); ct != nil && ct.flushErr == nil && !ct.holds(table, key) {
		return ct.tx
	}
	return q
}
