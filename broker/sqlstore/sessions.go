package sqlstore

import (
	"context"
	"time"

	"github.com/ggfleet/ggfleet/broker/auth"
)

// The DB is the dashboard session store.
var _ auth.SessionStore = (*DB)(nil)

// InsertSession stores a new dashboard session (auth.SessionStore).
func (d *DB) InsertSession(ctx context.Context, rec auth.SessionRecord) error {
	_, err := d.w(ctx).ExecContext(ctx, d.q(`INSERT INTO ui_sessions (hash, token_hash, created_at, expires_at) VALUES (?, ?, ?, ?)`),
		rec.Hash, rec.TokenHash, millis(rec.CreatedAt), millis(rec.ExpiresAt))
	return mapErr(err, "insert dashboard session")
}

// SessionByHash returns the dashboard session with this hash (auth.SessionStore).
func (d *DB) SessionByHash(ctx context.Context, hash string) (auth.SessionRecord, error) {
	var (
		rec              auth.SessionRecord
		created, expires int64
	)
	err := d.w(ctx).QueryRowContext(ctx, d.q(`SELECT hash, token_hash, created_at, expires_at FROM ui_sessions WHERE hash = ?`), hash).
		Scan(&rec.Hash, &rec.TokenHash, &created, &expires)
	if err != nil {
		return auth.SessionRecord{}, mapErr(err, "dashboard session")
	}
	rec.CreatedAt, rec.ExpiresAt = fromMillis(created), fromMillis(expires)
	return rec, nil
}

// DeleteSession removes a dashboard session (auth.SessionStore).
func (d *DB) DeleteSession(ctx context.Context, hash string) error {
	_, err := d.w(ctx).ExecContext(ctx, d.q(`DELETE FROM ui_sessions WHERE hash = ?`), hash)
	return mapErr(err, "delete dashboard session")
}

// DeleteExpiredSessions removes the sessions expired at or before t (auth.SessionStore).
func (d *DB) DeleteExpiredSessions(ctx context.Context, t time.Time) (int, error) {
	res, err := d.w(ctx).ExecContext(ctx, d.q(`DELETE FROM ui_sessions WHERE expires_at <= ?`), millis(t))
	if err != nil {
		return 0, mapErr(err, "delete expired dashboard sessions")
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, mapErr(err, "count deleted dashboard sessions")
	}
	return int(n), nil
}
