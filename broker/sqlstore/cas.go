package sqlstore

import (
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"

	"github.com/ggfleet/ggfleet/broker/ca"
	"github.com/ggfleet/ggfleet/broker/errkind"
)

// The DB is the certificate authority store.
var _ ca.Store = (*DB)(nil)

const caColumns = `id, subject, not_after, is_default, key_algorithm, certificate_pem, encrypted_key, created_at`

// InsertCA stores a new, non-default CA; errkind.Conflict if its id exists (ca.Store).
func (d *DB) InsertCA(ctx context.Context, rec ca.Record) error {
	rec.Default = false
	return insertCA(ctx, d, d.w(ctx), rec)
}

func insertCA(ctx context.Context, d *DB, q Querier, rec ca.Record) error {
	isDefault := 0
	if rec.Default {
		isDefault = 1
	}
	_, err := q.ExecContext(ctx, d.q(`INSERT INTO certificate_authorities (`+caColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
		rec.ID, rec.Subject, millis(rec.NotAfter), isDefault, rec.KeyAlgorithm, rec.CertificatePem,
		base64.StdEncoding.EncodeToString(rec.EncryptedKey), millis(rec.CreatedAt))
	return mapErr(err, "certificate authority "+rec.ID)
}

// CreateDefaultCA stores rec as the default CA unless one exists, and
// returns the default CA stored afterwards and whether it is rec (ca.Store).
// Two replicas racing both try the insert; the unique index on is_default
// lets one win, and the other reads the winner's.
func (d *DB) CreateDefaultCA(ctx context.Context, rec ca.Record) (ca.Record, bool, error) {
	rec.Default = true
	var (
		existing ca.Record
		found    bool
	)
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		r, err := scanCA(tx.QueryRowContext(ctx, d.q(`SELECT `+caColumns+` FROM certificate_authorities WHERE is_default = 1`)))
		switch {
		case err == nil:
			existing, found = r, true
			return nil
		case !errkind.Is(err, errkind.NotFound):
			return err
		}
		return insertCA(ctx, d, tx, rec)
	})
	if errkind.Is(err, errkind.Conflict) {
		// Another replica inserted its default CA first.
		winner, rerr := d.DefaultCA(ctx)
		if rerr != nil {
			return ca.Record{}, false, fmt.Errorf("%w (then reading the default certificate authority: %v)", err, rerr)
		}
		return winner, false, nil
	}
	if err != nil {
		return ca.Record{}, false, err
	}
	if found {
		return existing, false, nil
	}
	return rec, true, nil
}

// GetCA returns the CA with the id, or errkind.NotFound (ca.Store).
func (d *DB) GetCA(ctx context.Context, id string) (ca.Record, error) {
	return scanCA(d.lookup(ctx).QueryRowContext(ctx, d.q(`SELECT `+caColumns+` FROM certificate_authorities WHERE id = ?`), id))
}

// DefaultCA returns the default CA, or errkind.NotFound (ca.Store).
func (d *DB) DefaultCA(ctx context.Context) (ca.Record, error) {
	return scanCA(d.lookup(ctx).QueryRowContext(ctx, d.q(`SELECT `+caColumns+` FROM certificate_authorities WHERE is_default = 1`)))
}

// ListCAs returns every CA, the default first, then by subject and id (ca.Store).
func (d *DB) ListCAs(ctx context.Context) ([]ca.Record, error) {
	rows, err := d.w(ctx).QueryContext(ctx, d.q(`SELECT `+caColumns+` FROM certificate_authorities ORDER BY is_default DESC, subject, id`))
	if err != nil {
		return nil, mapErr(err, "list certificate authorities")
	}
	defer rows.Close()
	var out []ca.Record
	for rows.Next() {
		r, err := scanCA(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr(err, "list certificate authorities")
	}
	return out, nil
}

type caScanner interface{ Scan(dest ...any) error }

func scanCA(row caScanner) (ca.Record, error) {
	var (
		rec               ca.Record
		notAfter, created int64
		isDefault         int
		key               string
	)
	err := row.Scan(&rec.ID, &rec.Subject, &notAfter, &isDefault, &rec.KeyAlgorithm, &rec.CertificatePem, &key, &created)
	if err != nil {
		return ca.Record{}, mapErr(err, "certificate authority")
	}
	rec.EncryptedKey, err = base64.StdEncoding.DecodeString(key)
	if err != nil {
		return ca.Record{}, fmt.Errorf("certificate authority %s: stored key is not base64: %w", rec.ID, err)
	}
	rec.NotAfter, rec.CreatedAt, rec.Default = fromMillis(notAfter), fromMillis(created), isDefault != 0
	return rec, nil
}
