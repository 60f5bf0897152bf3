package jobs

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"
)

// Liveness timings on PostgreSQL.
const (
	// LivenessCheckInterval is how often a queue checks that the session
	// holding its liveness lock is alive (Watch).
	LivenessCheckInterval = 2 * time.Second
	// RescueInterval is how often the leader looks for the running jobs of
	// dead replicas (RunRescuer).
	RescueInterval = 3 * time.Second
	// rescueGrace is how long a job must have been running before the
	// rescuer considers it: a live replica takes its liveness lock before
	// fetching any job, so this only absorbs clock skew.
	rescueGrace = 2 * time.Second
	// stuckMargin is how long past its JobTimeout a job may still be
	// running before the rescuer takes it back from a live replica. The
	// worker's context ended at JobTimeout, so such a job's result was
	// lost: river's completer gives up after three writes that time out on
	// a busy database, and river's own rescue would wait an hour, leaving
	// the task InProgress. The margin covers the completer's retries.
	stuckMargin = 2 * time.Minute
	// pingTimeout bounds one liveness check. A check that times out closes
	// its connection (pgx), which releases the lock and makes the replica
	// stop, so it is generous: a busy database is not a dead session. A
	// session that really ended fails the check at once.
	pingTimeout = 30 * time.Second
)

// ErrLivenessLost is logged by Watch when the session holding this
// replica's liveness lock died (PostgreSQL restarted, the connection cut).
var ErrLivenessLost = errors.New("jobs: lost the database session that tells other replicas this one is alive")

// livenessKeySQL computes the advisory lock key of a client id in SQL, so
// every replica agrees on it.
const livenessKeySQL = `hashtextextended('ggfleet-replica:' || $1, 0)`

// takeLiveness locks this queue's liveness key on a dedicated connection,
// held until Stop.
func (q *Queue) takeLiveness(ctx context.Context) error {
	conn, err := q.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("jobs: liveness lock: %w", err)
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(`+livenessKeySQL+`)`, q.id); err != nil {
		conn.Close()
		return fmt.Errorf("jobs: liveness lock: %w", err)
	}
	q.mu.Lock()
	q.liveness = conn
	q.mu.Unlock()
	return nil
}

// releaseLiveness drops the liveness lock by closing its session.
func (q *Queue) releaseLiveness() {
	q.mu.Lock()
	conn := q.liveness
	q.liveness = nil
	q.mu.Unlock()
	if conn == nil {
		return
	}
	// Discarding the connection ends the session, which releases the lock.
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	conn.Close()
}

// Watch checks the liveness session every LivenessCheckInterval until ctx
// ends (then it returns nil). When the session died it takes the lock again
// on a new session as soon as the database answers, and the replica keeps
// serving: a PostgreSQL restart does not need a supervisor to restart every
// replica. Until the lock is back the leader may rescue this replica's
// running batches; a batch then runs twice at most, which is safe because
// its steps are idempotent (keyed by thing name) and a batch completes once.
// Run it for the queue's lifetime on PostgreSQL; on SQLite, and for an
// insert-only queue, it just waits.
func (q *Queue) Watch(ctx context.Context) error {
	if q.insertOnly { // runs no batches: holds no lock to watch
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(LivenessCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		q.mu.Lock()
		conn := q.liveness
		q.mu.Unlock()
		if conn == nil {
			if !q.postgres {
				continue
			}
			// Lost earlier: take it again once the database answers.
			lctx, cancel := context.WithTimeout(ctx, pingTimeout)
			err := q.takeLiveness(lctx)
			cancel()
			if err == nil {
				q.log.Info("liveness lock taken again; this replica is known alive", "replica", q.id)
			} else if ctx.Err() == nil {
				q.log.Debug("liveness lock: database not reachable yet", "err", err)
			}
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, pingTimeout)
		err := conn.PingContext(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			q.log.Error("liveness session died; taking the lock again when the database answers",
				"replica", q.id, "err", fmt.Errorf("%w: %v", ErrLivenessLost, err))
			q.releaseLiveness()
		}
	}
}

// RunRescuer rescues dead replicas' jobs every RescueInterval until ctx
// ends. Run it on the leader only (sqlstore.DB.RunAsLeader); on SQLite it
// just waits for ctx (Start already recovered the predecessor's jobs).
func (q *Queue) RunRescuer(ctx context.Context) error {
	if !q.postgres {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(RescueInterval)
	defer t.Stop()
	for {
		if n, err := q.RescueOrphans(ctx); err != nil && ctx.Err() == nil {
			q.log.Warn("rescue jobs of dead replicas", "err", err)
		} else if n > 0 {
			q.log.Info("rescued task batches of a dead replica", "jobs", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// RescueOrphans makes the running jobs of replicas that no longer hold
// their liveness lock available again, and the jobs that have been running
// for longer than JobTimeout plus stuckMargin (their result was lost), and
// returns how many it rescued. The interrupted attempt still counts toward
// MaxAttempts.
func (q *Queue) RescueOrphans(ctx context.Context) (int, error) {
	if !q.postgres {
		return 0, errors.New("jobs: RescueOrphans is for PostgreSQL; SQLite recovers at Start")
	}
	rows, err := q.db.QueryContext(ctx, `SELECT DISTINCT attempted_by[array_upper(attempted_by, 1)] FROM river_job
		WHERE state = 'running' AND attempted_by IS NOT NULL AND attempted_at < now() - make_interval(secs => $1)`, rescueGrace.Seconds())
	if err != nil {
		return 0, fmt.Errorf("jobs: list running jobs' owners: %w", err)
	}
	var owners []string
	for rows.Next() {
		var owner sql.NullString
		if err := rows.Scan(&owner); err != nil {
			rows.Close()
			return 0, fmt.Errorf("jobs: list running jobs' owners: %w", err)
		}
		if owner.Valid && owner.String != q.id {
			owners = append(owners, owner.String)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("jobs: list running jobs' owners: %w", err)
	}
	total := 0
	for _, owner := range owners {
		dead, err := q.ownerDead(ctx, owner)
		if err != nil {
			return total, err
		}
		if !dead {
			continue
		}
		res, err := q.db.ExecContext(ctx, `UPDATE river_job SET state = 'available', scheduled_at = now()
			WHERE state = 'running' AND attempted_by[array_upper(attempted_by, 1)] = $1`, owner)
		if err != nil {
			return total, fmt.Errorf("jobs: rescue jobs of dead replica %s: %w", owner, err)
		}
		n, _ := res.RowsAffected()
		q.log.Info("replica is gone; its running batches go to the others", "replica", owner, "jobs", n)
		total += int(n)
	}
	res, err := q.db.ExecContext(ctx, `UPDATE river_job SET state = 'available', scheduled_at = now()
		WHERE state = 'running' AND attempted_at < now() - make_interval(secs => $1)`, q.stuckAfter.Seconds())
	if err != nil {
		return total, fmt.Errorf("jobs: rescue stuck jobs: %w", err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		q.log.Warn("batches were running long past their timeout (their outcome was lost); running them again", "jobs", n, "runningFor", q.stuckAfter)
		total += int(n)
	}
	return total, nil
}

// ownerDead reports whether the replica owner's liveness lock is free. A
// replica takes it before its first job and holds it until it stops (taking
// it again after its session died, see Watch), so a free lock means it is
// gone or cut off from the database.
func (q *Queue) ownerDead(ctx context.Context, owner string) (bool, error) {
	conn, err := q.db.Conn(ctx)
	if err != nil {
		return false, fmt.Errorf("jobs: check replica %s: %w", owner, err)
	}
	defer conn.Close()
	var free bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock(`+livenessKeySQL+`)`, owner).Scan(&free); err != nil {
		return false, fmt.Errorf("jobs: check replica %s: %w", owner, err)
	}
	if free {
		var ok bool
		if err := conn.QueryRowContext(ctx, `SELECT pg_advisory_unlock(`+livenessKeySQL+`)`, owner).Scan(&ok); err != nil || !ok {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}
	return free, nil
}
