package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/ggfleet/ggfleet/broker/devices/devicestore"
)

// DeviceStore keeps client-device records (devicestore.Store).
type DeviceStore struct{ d *DB }

var _ devicestore.Store = (*DeviceStore)(nil)

// Devices returns the client-device store backed by this database.
func (d *DB) Devices() *DeviceStore { return &DeviceStore{d: d} }

const deviceColumns = `name, core_name, certs_bucket, certs_key, certs_created_at, created_at, updated_at`

// CoreExists reports whether a core record of that name exists.
func (s *DeviceStore) CoreExists(ctx context.Context, core string) (bool, error) {
	var one int
	err := s.d.w(ctx).QueryRowContext(ctx, s.d.q(`SELECT 1 FROM cores WHERE name = ?`), core).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, mapErr(err, fmt.Sprintf("look up core %s", core))
	}
	return true, nil
}

// PutDevices creates or re-links the records of names under core.
func (s *DeviceStore) PutDevices(ctx context.Context, core string, names []string, now time.Time) error {
	return s.d.InTx(ctx, func(tx *sql.Tx) error {
		q := s.d.q(`INSERT INTO client_devices (name, core_name, created_at, updated_at) VALUES (?, ?, ?, 0)
			ON CONFLICT (name) DO UPDATE SET core_name = excluded.core_name, updated_at = ?`)
		for _, n := range names {
			if _, err := tx.ExecContext(ctx, q, n, core, millis(now), millis(now)); err != nil {
				return mapErr(err, fmt.Sprintf("record client device %s", n))
			}
		}
		return nil
	})
}

// GetDevice returns a device or errkind.NotFound.
func (s *DeviceStore) GetDevice(ctx context.Context, name string) (devicestore.Record, error) {
	row := s.d.w(ctx).QueryRowContext(ctx, s.d.q(`SELECT `+deviceColumns+` FROM client_devices WHERE name = ?`), name)
	r, err := scanDevice(row)
	if err != nil {
		return r, mapErr(err, fmt.Sprintf("client device %s", name))
	}
	return r, nil
}

// ListDevices returns devices in name order after the cursor, optionally of one core.
func (s *DeviceStore) ListDevices(ctx context.Context, core string, count int, after string) ([]devicestore.Record, bool, error) {
	query := `SELECT ` + deviceColumns + ` FROM client_devices WHERE name > ?`
	args := []any{after}
	if core != "" {
		query += ` AND core_name = ?`
		args = append(args, core)
	}
	query += ` ORDER BY name LIMIT ?`
	args = append(args, count+1)
	rows, err := s.d.w(ctx).QueryContext(ctx, s.d.q(query), args...)
	if err != nil {
		return nil, false, mapErr(err, "list client devices")
	}
	defer rows.Close()
	out := []devicestore.Record{}
	for rows.Next() {
		r, err := scanDevice(rows)
		if err != nil {
			return nil, false, mapErr(err, "list client devices")
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, false, mapErr(err, "list client devices")
	}
	more := len(out) > count
	if more {
		out = out[:count]
	}
	return out, more, nil
}

// insertDeviceCerts records a device's certs.zip, and the device when it
// has no record; a Create batch's transaction may defer it (deferred.go).
var insertDeviceCerts = newInsert("client_devices",
	[]string{"name", "core_name", "certs_bucket", "certs_key", "certs_created_at", "created_at"}, 1, true,
	`ON CONFLICT (name) DO UPDATE SET certs_bucket = excluded.certs_bucket, certs_key = excluded.certs_key,
		certs_created_at = excluded.certs_created_at`)

// RecordCerts records where a device's certs.zip is; a device without a
// record (removed meanwhile) gets one linked to core. An upsert, so that a
// Create batch can send its devices' rows together.
func (s *DeviceStore) RecordCerts(ctx context.Context, core, name, bucket, key string, certsAt, now time.Time) error {
	err := s.d.insert(ctx, &insertDeviceCerts, name, core, bucket, key, millis(certsAt), millis(now))
	return mapErr(err, fmt.Sprintf("record certs of client device %s", name))
}

// DeleteDevice removes a device record; errkind.NotFound if missing.
func (s *DeviceStore) DeleteDevice(ctx context.Context, name string) error {
	res, err := s.d.w(ctx).ExecContext(ctx, s.d.q(`DELETE FROM client_devices WHERE name = ?`), name)
	if err != nil {
		return mapErr(err, fmt.Sprintf("delete client device %s", name))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return mapErr(sql.ErrNoRows, fmt.Sprintf("client device %s", name))
	}
	return nil
}

func scanDevice(row interface{ Scan(dest ...any) error }) (devicestore.Record, error) {
	var r devicestore.Record
	var certs, created, updated int64
	err := row.Scan(&r.Name, &r.CoreName, &r.CertsBucket, &r.CertsKey, &certs, &created, &updated)
	r.CertsCreatedAt, r.CreatedAt, r.UpdatedAt = fromMillis(certs), fromMillis(created), fromMillis(updated)
	return r, err
}
