package sqlstore

import (
	"context"
	"time"

	"github.com/ggfleet/ggfleet/broker/enroll"
)

// The DB is the enrollment token store.
var _ enroll.Store = (*DB)(nil)

// InsertEnrollmentToken stores a new enrollment token record (enroll.Store).
func (d *DB) InsertEnrollmentToken(ctx context.Context, rec enroll.TokenRecord) error {
	_, err := d.w(ctx).ExecContext(ctx, d.q(`INSERT INTO enrollment_tokens (hash, core_name, expires_at, claimed_at, used_at, created_at) VALUES (?, ?, ?, ?, ?, ?)`),
		rec.Hash, rec.CoreName, millis(rec.ExpiresAt), millis(rec.ClaimedAt), millis(rec.UsedAt), millis(rec.CreatedAt))
	return mapErr(err, "insert enrollment token for core "+rec.CoreName)
}

// EnrollmentToken returns the record with this hash (enroll.Store).
func (d *DB) EnrollmentToken(ctx context.Context, hash string) (enroll.TokenRecord, error) {
	var (
		rec                               enroll.TokenRecord
		expires, claimed, used, createdAt int64
	)
	err := d.w(ctx).QueryRowContext(ctx, d.q(`SELECT hash, core_name, expires_at, claimed_at, used_at, created_at FROM enrollment_tokens WHERE hash = ?`), hash).
		Scan(&rec.Hash, &rec.CoreName, &expires, &claimed, &used, &createdAt)
	if err != nil {
		return enroll.TokenRecord{}, mapErr(err, "enrollment token")
	}
	rec.ExpiresAt, rec.ClaimedAt, rec.UsedAt, rec.CreatedAt = fromMillis(expires), fromMillis(claimed), fromMillis(used), fromMillis(createdAt)
	return rec, nil
}

// ClaimEnrollmentToken claims an unused, unexpired token whose earlier claim
// (if any) is at or before staleBefore. One UPDATE, so of two racing
// enrollments exactly one wins (enroll.Store).
func (d *DB) ClaimEnrollmentToken(ctx context.Context, hash string, at, staleBefore time.Time) (bool, error) {
	res, err := d.w(ctx).ExecContext(ctx, d.q(`UPDATE enrollment_tokens SET claimed_at = ? WHERE hash = ? AND used_at = 0 AND expires_at > ? AND claimed_at <= ?`),
		millis(at), hash, millis(at), staleBefore.UnixMilli())
	if err != nil {
		return false, mapErr(err, "claim enrollment token")
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, mapErr(err, "claim enrollment token")
	}
	return n == 1, nil
}

// SpendEnrollmentToken marks the token as used if the claim made at
// claimedAt still holds (enroll.Store).
func (d *DB) SpendEnrollmentToken(ctx context.Context, hash string, claimedAt, at time.Time) (bool, error) {
	res, err := d.w(ctx).ExecContext(ctx, d.q(`UPDATE enrollment_tokens SET used_at = ? WHERE hash = ? AND claimed_at = ? AND used_at = 0`),
		millis(at), hash, millis(claimedAt))
	if err != nil {
		return false, mapErr(err, "spend enrollment token")
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, mapErr(err, "spend enrollment token")
	}
	return n == 1, nil
}

// ReleaseEnrollmentToken drops the claim made at claimedAt of an unused
// token, so it can be used again (enroll.Store).
func (d *DB) ReleaseEnrollmentToken(ctx context.Context, hash string, claimedAt time.Time) error {
	_, err := d.w(ctx).ExecContext(ctx, d.q(`UPDATE enrollment_tokens SET claimed_at = 0 WHERE hash = ? AND claimed_at = ? AND used_at = 0`),
		hash, millis(claimedAt))
	return mapErr(err, "release enrollment token")
}
