package sqlstore

import (
	"context"
	"fmt"

	"github.com/ggfleet/ggfleet/broker/ca"
)

// The DB keeps revoked certificates for the CRL file.
var _ ca.RevocationStore = (*DB)(nil)

// AddRevoked records a revoked certificate; the same one again is a no-op
// (ca.RevocationStore).
func (d *DB) AddRevoked(ctx context.Context, r ca.Revoked) error {
	_, err := d.w(ctx).ExecContext(ctx, d.q(`INSERT INTO revoked_certificates (cert_id, ca_id, certificate_pem, revoked_at)
		VALUES (?, ?, ?, ?) ON CONFLICT (cert_id) DO NOTHING`), r.CertID, r.CAID, r.CertificatePem, millis(r.RevokedAt))
	return mapErr(err, "revoked certificate "+r.CertID)
}

// ListRevoked returns every revoked certificate, oldest first (ca.RevocationStore).
func (d *DB) ListRevoked(ctx context.Context) ([]ca.Revoked, error) {
	rows, err := d.w(ctx).QueryContext(ctx, `SELECT cert_id, ca_id, certificate_pem, revoked_at FROM revoked_certificates ORDER BY revoked_at, cert_id`)
	if err != nil {
		return nil, mapErr(err, "list revoked certificates")
	}
	defer rows.Close()
	var out []ca.Revoked
	for rows.Next() {
		var r ca.Revoked
		var at int64
		if err := rows.Scan(&r.CertID, &r.CAID, &r.CertificatePem, &at); err != nil {
			return nil, fmt.Errorf("read revoked certificates: %w", err)
		}
		r.RevokedAt = fromMillis(at)
		out = append(out, r)
	}
	return out, mapErr(rows.Err(), "list revoked certificates")
}
