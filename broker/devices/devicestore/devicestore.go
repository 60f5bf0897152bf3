// Package devicestore is the storage contract of client-device records: the
// types the devices service and the database edge share. It is a leaf
// package so the database edge compiles without the task machinery.
package devicestore

import (
	"context"
	"time"
)

// Record is a stored client device, linked to the core it was provisioned
// or associated under. Certs* locate its certs.zip (empty until stored).
type Record struct {
	Name           string
	CoreName       string
	CertsBucket    string
	CertsKey       string
	CertsCreatedAt time.Time
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// Store persists client-device records.
type Store interface {
	// CoreExists reports whether a core record of that name exists.
	CoreExists(ctx context.Context, core string) (bool, error)
	// PutDevices writes a record per name linked to core: new records are
	// created, existing ones re-linked (their artifacts and createdAt kept).
	PutDevices(ctx context.Context, core string, names []string, now time.Time) error
	// GetDevice returns a device or errkind.NotFound.
	GetDevice(ctx context.Context, name string) (Record, error)
	// ListDevices returns up to count devices in name order after the
	// cursor ("" core: all cores), and whether more exist.
	ListDevices(ctx context.Context, core string, count int, after string) ([]Record, bool, error)
	// RecordCerts records where a device's certs.zip is (made at certsAt);
	// a device without a record (removed meanwhile) gets one linked to core.
	RecordCerts(ctx context.Context, core, name, bucket, key string, certsAt, now time.Time) error
	// DeleteDevice removes a device record; errkind.NotFound if missing.
	DeleteDevice(ctx context.Context, name string) error
}
