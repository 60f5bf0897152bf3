package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"hash/fnv"
	"time"
)

// LockKey is the PostgreSQL advisory lock key of a named lock: the FNV-1a
// hash of "ggfleet:" + name, so every replica computes the same key.
func LockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("ggfleet:" + name))
	return int64(h.Sum64())
}

// WithLock runs fn while holding the named database-wide lock, waiting for
// it if another replica holds it. It serialises first-start work (migrations,
// the default CA, the admin token) across replicas sharing one PostgreSQL
// database. On SQLite it just runs fn: the data-dir lock already makes the
// process the database's only user.
func (d *DB) WithLock(ctx context.Context, name string, fn func(ctx context.Context) error) error {
	if d.dialect != Postgres {
		return fn(ctx)
	}
	conn, err := d.sql.Conn(ctx)
	if err != nil {
		return mapErr(err, "lock "+name)
	}
	defer conn.Close()
	key := LockKey(name)
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		return mapErr(err, "lock "+name)
	}
	defer releaseLock(conn, key)
	return fn(ctx)
}

// releaseLock unlocks key on conn; if that fails the connection is
// discarded instead of returned to the pool, since closing the session is
// what releases a session lock for sure.
func releaseLock(conn *sql.Conn, key int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var ok bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_advisory_unlock($1)`, key).Scan(&ok); err != nil || !ok {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	}
}

// Leader timings: how often a replica that is not the leader tries to become
// it, how often the leader checks that its lock session is alive, how long
// one check may take, and how long a new leader waits before it starts
// working. A leader whose session ended (PostgreSQL restarted or terminated
// it, the connection broke) fails its next check at once, so it notices
// within one check interval and stops its work; the new leader waits three,
// so their work does not overlap unless the old process is frozen (leader
// work is idempotent, so even then nothing is done twice to completion).
//
// A check that times out closes its connection (pgx cancels a query by
// closing it), which releases the lock, so the timeout is generous: on a
// busy database a slow check is not a lost session, and treating it as one
// made replicas exit under load. A session that PostgreSQL cannot reach
// keeps its lock until PostgreSQL notices, so nobody else leads meanwhile.
const (
	LeaderRetryInterval = 2 * time.Second
	LeaderCheckInterval = 2 * time.Second
	LeaderCheckTimeout  = 30 * time.Second
	LeaderTakeoverDelay = 3 * LeaderCheckInterval
)

// ErrLostLeadership is what lead reports when the session holding the
// leadership died while fn ran (PostgreSQL restarted, the connection cut):
// fn's context was cancelled and another replica may already lead.
// RunAsLeader logs it and stands for election again, so a replica survives a
// database restart without its supervisor.
var ErrLostLeadership = errors.New("lost the leadership: its database session ended")

// RunAsLeader runs fn on exactly one replica at a time: the one holding the
// named leadership. It waits until this replica holds it, runs fn with a
// context cancelled if the leadership is lost, and returns fn's result once
// fn ends while still leading, or nil when ctx ends. When the leadership is
// lost, fn is stopped and this replica stands for election again, so fn must
// be restartable (periodic work that keeps its state in the database). The
// leadership is a PostgreSQL session advisory lock on a dedicated
// connection, so a replica that dies (even by SIGKILL) releases it as soon as
// PostgreSQL notices its connection closed. On SQLite the process is always
// the leader (the data-dir lock makes it the only one).
func (d *DB) RunAsLeader(ctx context.Context, name string, fn func(ctx context.Context) error) error {
	if d.dialect != Postgres {
		return fn(ctx)
	}
	key := LockKey(name)
	for {
		conn, got, err := d.tryLock(ctx, key)
		if err != nil && ctx.Err() == nil {
			d.log.Warn("leader election: cannot reach the database; trying again", "work", name, "err", err)
		}
		if got {
			err := d.lead(ctx, name, conn, key, fn)
			if !errors.Is(err, ErrLostLeadership) || ctx.Err() != nil {
				return err
			}
			d.log.Warn("standing for election again after losing the leadership", "work", name)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(LeaderRetryInterval):
		}
	}
}

// tryLock takes key on a dedicated connection without waiting; the
// connection is returned only when the lock was taken.
func (d *DB) tryLock(ctx context.Context, key int64) (*sql.Conn, bool, error) {
	conn, err := d.sql.Conn(ctx)
	if err != nil {
		return nil, false, err
	}
	var got bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&got); err != nil {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		conn.Close()
		return nil, false, err
	}
	if !got {
		conn.Close()
		return nil, false, nil
	}
	return conn, true, nil
}

// lead runs fn while watching the lock's session.
func (d *DB) lead(ctx context.Context, name string, conn *sql.Conn, key int64, fn func(ctx context.Context) error) error {
	defer conn.Close()
	d.log.Info("this replica is now the leader", "work", name)
	select {
	case <-ctx.Done():
		releaseLock(conn, key)
		return nil
	case <-time.After(LeaderTakeoverDelay):
	}
	lctx, cancel := context.WithCancel(ctx)
	lost := make(chan error, 1)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		t := time.NewTicker(LeaderCheckInterval)
		defer t.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
			}
			pctx, pcancel := context.WithTimeout(lctx, LeaderCheckTimeout)
			var held bool
			err := conn.QueryRowContext(pctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()
				AND granted AND ((classid::bigint << 32) | objid::bigint) = $1)`, key).Scan(&held)
			pcancel()
			if lctx.Err() != nil {
				return
			}
			if err == nil && !held {
				err = fmt.Errorf("the advisory lock is no longer held")
			}
			if err != nil {
				lost <- err
				cancel()
				return
			}
		}
	}()
	err := fn(lctx)
	cancel()
	<-watched
	select {
	case lerr := <-lost:
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		d.log.Error("lost the leadership", "work", name, "err", lerr)
		return fmt.Errorf("%s: %w (%v)", name, ErrLostLeadership, lerr)
	default:
	}
	releaseLock(conn, key)
	return err
}
