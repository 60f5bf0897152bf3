package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Setting returns the broker-wide setting name, and false when it is unset.
func (d *DB) Setting(ctx context.Context, name string) (string, bool, error) {
	var v string
	err := d.w(ctx).QueryRowContext(ctx, d.q(`SELECT value FROM broker_settings WHERE name = ?`), name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, mapErr(err, "setting "+name)
	}
	return v, true, nil
}

// InitSetting sets name to value unless it is set already, and returns the
// value that holds afterwards (the first writer's, when replicas race).
func (d *DB) InitSetting(ctx context.Context, name, value string) (string, error) {
	if _, err := d.w(ctx).ExecContext(ctx, d.q(`INSERT INTO broker_settings (name, value, created_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO NOTHING`), name, value, time.Now().UnixMilli()); err != nil {
		return "", mapErr(err, "set "+name)
	}
	v, ok, err := d.Setting(ctx, name)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("setting %s vanished after it was written", name)
	}
	return v, nil
}

// PutSetting sets name to value, replacing any value it had.
func (d *DB) PutSetting(ctx context.Context, name, value string) error {
	if _, err := d.w(ctx).ExecContext(ctx, d.q(`INSERT INTO broker_settings (name, value, created_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value`), name, value, time.Now().UnixMilli()); err != nil {
		return mapErr(err, "set "+name)
	}
	return nil
}
