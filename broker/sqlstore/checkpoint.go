package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"
)

// Checkpoints on SQLite.
//
// In WAL mode SQLite copies committed pages from the WAL back into the
// database file ("checkpoints"). By default the commit that takes the WAL
// past 1,000 pages does it, on the writer's connection, fsyncs included:
// the one writer then waits for the disk while every other write waits for
// the writer. OpenSQLite moves that work to a goroutine of its own: every
// checkpointInterval it runs a PASSIVE checkpoint on a connection of its
// own, which copies what no reader still needs without blocking the writer
// or the readers. The writer checkpoints by itself only when the WAL passes
// walBackstopPages (the checkpointer stopped or fell far behind), so the WAL
// stays bounded either way.

const (
	// checkpointInterval is how often the checkpointer runs.
	checkpointInterval = 250 * time.Millisecond
	// walBackstopPages is the writer's own automatic checkpoint threshold
	// (64 MiB of 4 KiB pages); SQLite's default is 1,000.
	walBackstopPages = 16384
)

// checkpointer runs PASSIVE checkpoints until stopped.
type checkpointer struct {
	conn   *sql.DB
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
}

// startCheckpointer opens the checkpointer's connection on the database at
// path (already in WAL mode) and starts its goroutine; stop ends both.
func startCheckpointer(ctx context.Context, path string, log *slog.Logger) (*checkpointer, error) {
	conn, err := sql.Open(stmtCacheDriver, "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s for checkpoints: %w", path, err)
	}
	conn.SetMaxOpenConns(1)
	if err := conn.PingContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("open sqlite %s for checkpoints: %w", path, err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	c := &checkpointer{conn: conn, log: log, cancel: cancel, done: make(chan struct{})}
	go c.run(runCtx)
	return c, nil
}

func (c *checkpointer) run(ctx context.Context) {
	defer close(c.done)
	tick := time.NewTicker(checkpointInterval)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		err := c.checkpoint(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil && !failing:
			// Logged once per run of failures: the writer's backstop
			// keeps the WAL bounded meanwhile.
			c.log.Warn("SQLite checkpoint failed; the writer checkpoints by itself past the backstop", "err", err)
			failing = true
		case err == nil && failing:
			c.log.Info("SQLite checkpoints resumed")
			failing = false
		}
	}
}

// checkpoint runs one PASSIVE checkpoint. Frames a reader still needs stay
// in the WAL for the next one.
func (c *checkpointer) checkpoint(ctx context.Context) error {
	var busy, frames, copied int
	if err := c.conn.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &copied); err != nil {
		return fmt.Errorf("wal checkpoint: %w", err)
	}
	return nil
}

// stop ends the goroutine and closes the connection.
func (c *checkpointer) stop() error {
	c.cancel()
	<-c.done
	return c.conn.Close()
}
