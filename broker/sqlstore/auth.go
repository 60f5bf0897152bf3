package sqlstore

import (
	"context"
	"database/sql"
	"time"

	"github.com/ggfleet/ggfleet/broker/auth"
)

// The DB is the API token store.
var _ auth.Store = (*DB)(nil)

// InsertAPIToken stores a new API token record (auth.Store).
func (d *DB) InsertAPIToken(ctx context.Context, rec auth.Record) error {
	return insertAPIToken(ctx, d, d.w(ctx), rec)
}

func insertAPIToken(ctx context.Context, d *DB, q Querier, rec auth.Record) error {
	revoked := 0
	if rec.Revoked {
		revoked = 1
	}
	_, err := q.ExecContext(ctx, d.q(`INSERT INTO api_tokens (id, name, hash, created_at, last_used_at, revoked) VALUES (?, ?, ?, ?, ?, ?)`),
		rec.ID, rec.Name, rec.Hash, millis(rec.CreatedAt), millis(rec.LastUsedAt), revoked)
	return mapErr(err, "insert API token "+rec.Name)
}

// ReplaceAPIToken revokes the active tokens named rec.Name and inserts rec,
// in one transaction (auth.Store).
func (d *DB) ReplaceAPIToken(ctx context.Context, rec auth.Record) error {
	return d.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, d.q(`UPDATE api_tokens SET revoked = 1 WHERE name = ? AND revoked = 0`), rec.Name); err != nil {
			return mapErr(err, "revoke API tokens "+rec.Name)
		}
		return insertAPIToken(ctx, d, tx, rec)
	})
}

// APITokenByHash returns the token record with this hash (auth.Store). It
// reads through the read pool: every API request authenticates, and must not
// wait for task transactions; a revocation is visible once it commits.
func (d *DB) APITokenByHash(ctx context.Context, hash string) (auth.Record, error) {
	var (
		rec              auth.Record
		created, lastUse int64
		revoked          int
	)
	err := d.r(ctx).QueryRowContext(ctx, d.q(`SELECT id, name, hash, created_at, last_used_at, revoked FROM api_tokens WHERE hash = ?`), hash).
		Scan(&rec.ID, &rec.Name, &rec.Hash, &created, &lastUse, &revoked)
	if err != nil {
		return auth.Record{}, mapErr(err, "API token")
	}
	rec.CreatedAt, rec.LastUsedAt, rec.Revoked = fromMillis(created), fromMillis(lastUse), revoked != 0
	return rec, nil
}

// APITokenNameExists reports whether any token, revoked or not, has the name (auth.Store).
func (d *DB) APITokenNameExists(ctx context.Context, name string) (bool, error) {
	var n int
	err := d.w(ctx).QueryRowContext(ctx, d.q(`SELECT COUNT(*) FROM api_tokens WHERE name = ?`), name).Scan(&n)
	if err != nil {
		return false, mapErr(err, "count API tokens "+name)
	}
	return n > 0, nil
}

// DeleteAPIToken removes a token record (auth.Store).
func (d *DB) DeleteAPIToken(ctx context.Context, id string) error {
	_, err := d.w(ctx).ExecContext(ctx, d.q(`DELETE FROM api_tokens WHERE id = ?`), id)
	return mapErr(err, "delete API token")
}

// TouchAPIToken records when a token was last used (auth.Store).
func (d *DB) TouchAPIToken(ctx context.Context, id string, at time.Time) error {
	_, err := d.w(ctx).ExecContext(ctx, d.q(`UPDATE api_tokens SET last_used_at = ? WHERE id = ?`), millis(at), id)
	return mapErr(err, "record API token use")
}
