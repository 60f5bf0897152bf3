package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
)

// Units of work spanning several stores.
//
// A task that provisions a core writes through several stores (the local
// provider's registry and artifacts, the core records, the task items),
// each call its own transaction: a dozen commits per core, and on SQLite a
// dozen turns at the one writer connection. Atomically runs a function
// with a transaction carried in its context: every store method called
// with that context runs its statements in the transaction (w and r pick
// it), so the function's writes commit together or not at all, and a batch
// of cores costs one commit. InTx inside it becomes a savepoint.
//
// Inside Atomically, never start work on another goroutine with the
// context (a *sql.Tx runs one statement at a time), and never wait for
// something that needs the writer on SQLite (a group commit led by another
// goroutine): the transaction holds the one writer connection until fn
// returns.

// txKey is the context key of the transaction Atomically carries.
type txKey struct{}

// ctxTxn is the transaction carried in a context, its savepoint depth and
// its deferred inserts (deferred.go). It is the Querier of the context's
// statements (w, r, lookup), which sends the held rows before each.
type ctxTxn struct {
	db    *DB
	tx    *sql.Tx
	depth int

	deferring bool        // hold inserts (WithDeferredInserts)
	held      []*heldRows // by the order their tables were first written
	flushErr  error       // a failed flush: the transaction cannot commit
}

// ctxTx returns the transaction Atomically put in ctx for this database,
// or nil.
func ctxTx(ctx context.Context, d *DB) *ctxTxn {
	ct, _ := ctx.Value(txKey{}).(*ctxTxn)
	if ct == nil || ct.db != d {
		return nil
	}
	return ct
}

// Atomically runs fn with a context whose store calls on this database run
// in one transaction, committed when fn returns nil and rolled back
// otherwise. Called inside another Atomically, fn runs under a savepoint
// of the outer transaction instead: its writes are undone if it fails,
// and the outer transaction goes on.
func (d *DB) Atomically(ctx context.Context, fn func(ctx context.Context) error) error {
	if ct := ctxTx(ctx, d); ct != nil {
		return ct.savepoint(ctx, func() error { return fn(ctx) })
	}
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return mapErr(err, "begin transaction")
	}
	ct := &ctxTxn{db: d, tx: tx, deferring: ctx.Value(deferKey{}) != nil}
	if err := fn(context.WithValue(ctx, txKey{}, ct)); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := ct.flush(ctx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return mapErr(err, "commit")
	}
	return nil
}

// savepoint runs fn under a savepoint: released when fn returns nil,
// rolled back to (undoing fn's writes, and on PostgreSQL clearing a failed
// statement's abort of the transaction) when it fails.
func (ct *ctxTxn) savepoint(ctx context.Context, fn func() error) error {
	// Held rows belong to the transaction, not to the savepoint: send
	// them before it, so that rolling back to it does not undo them.
	if err := ct.flush(ctx); err != nil {
		return err
	}
	ct.depth++
	defer func() { ct.depth-- }()
	name := fmt.Sprintf("ggfleet_sp%d", ct.depth)
	if _, err := ct.tx.ExecContext(ctx, "SAVEPOINT "+name); err != nil {
		return mapErr(err, "savepoint")
	}
	if err := fn(); err != nil {
		if _, rerr := ct.tx.ExecContext(context.WithoutCancel(ctx), "ROLLBACK TO SAVEPOINT "+name); rerr != nil {
			return fmt.Errorf("%w (and rolling back to the savepoint: %v)", err, rerr)
		}
		_, _ = ct.tx.ExecContext(context.WithoutCancel(ctx), "RELEASE SAVEPOINT "+name)
		return err
	}
	if _, err := ct.tx.ExecContext(ctx, "RELEASE SAVEPOINT "+name); err != nil {
		return mapErr(err, "release savepoint")
	}
	return nil
}

// w is where a statement of ctx goes: the transaction Atomically carries,
// or the writer pool.
func (d *DB) w(ctx context.Context) Querier {
	if ct := ctxTx(ctx, d); ct != nil {
		return ct
	}
	return d.sql
}

// r is where a read of the API's GET paths goes: the transaction
// Atomically carries (so it sees that transaction's writes), or the read
// pool (see the package comment).
func (d *DB) r(ctx context.Context) Querier {
	if ct := ctxTx(ctx, d); ct != nil {
		return ct
	}
	return d.read
}

// lookup is where single-row lookups by key go that must see every
// committed write but need no transaction: the transaction Atomically
// carries, if any; else on SQLite the read pool, so they do not queue for
// the one writer connection; on PostgreSQL the task pool (the read pool is
// kept for the API).
func (d *DB) lookup(ctx context.Context) Querier {
	if ct := ctxTx(ctx, d); ct != nil {
		return ct
	}
	if d.dialect == SQLite {
		return d.read
	}
	return d.sql
}
