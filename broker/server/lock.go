package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/ggfleet/ggfleet/broker/ca"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
)

// lockDataDir takes an exclusive lock on the data dir so that two embedded
// brokers never share one SQLite database. Because of this lock, a starting
// broker knows any task job marked running was left by a crashed
// predecessor and can resume it at once.
func lockDataDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, "ggfleet.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("data dir %s is in use by another ggfleet serve (lock %s): stop it or use another --data-dir", dir, f.Name())
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// openDatabase opens and migrates the broker's database. SQLite (the
// default) belongs to one process: the data dir is locked first. On
// PostgreSQL any number of replicas share the database and none keeps
// state in its data dir, so there is no data-dir lock; migrations run under
// an advisory lock instead (sqlstore.DB.Migrate). The returned func closes
// the database and releases the lock.
func openDatabase(ctx context.Context, cfg Config, log *slog.Logger) (*sqlstore.DB, func(), error) {
	if cfg.postgres() {
		db, err := sqlstore.OpenPostgres(ctx, cfg.DatabaseURL, log)
		if err != nil {
			return nil, nil, err
		}
		if err := db.Migrate(ctx); err != nil {
			db.Close()
			return nil, nil, fmt.Errorf("migrate database: %w", err)
		}
		return db, func() { db.Close() }, nil
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, nil, err
	}
	db, err := sqlstore.OpenSQLite(ctx, cfg.dbPath(), log)
	if err != nil {
		unlock()
		return nil, nil, err
	}
	if err := db.Migrate(ctx); err != nil {
		db.Close()
		unlock()
		return nil, nil, fmt.Errorf("migrate database: %w", err)
	}
	return db, func() { db.Close(); unlock() }, nil
}

// secretsKeyCheck is the broker_settings entry that identifies the secrets
// key shared by replicas.
const secretsKeyCheck = "secrets_key_check"

// loadSecretsKey reads (creating on first start) the key that encrypts CA
// keys at rest. On PostgreSQL every replica must be given the same key
// (--secrets-key-file): the first one to start records an HMAC of it in
// the database, and a replica with another key refuses to start instead of
// failing later on every CA operation. The key itself is never stored in
// the database, so a database dump alone does not reveal the CA keys.
func loadSecretsKey(ctx context.Context, cfg Config, db *sqlstore.DB) ([]byte, error) {
	key, err := ca.LoadOrCreateSecretsKey(cfg.secretsKeyPath())
	if err != nil {
		return nil, err
	}
	if !cfg.postgres() {
		return key, nil
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("ggfleet secrets key check v1"))
	mine := hex.EncodeToString(m.Sum(nil))
	err = db.WithLock(ctx, "init-secrets-key", func(ctx context.Context) error {
		stored, err := db.InitSetting(ctx, secretsKeyCheck, mine)
		if err != nil {
			return fmt.Errorf("record the secrets key check: %w", err)
		}
		if !hmac.Equal([]byte(stored), []byte(mine)) {
			return fmt.Errorf("--secrets-key-file %s is not the secrets key the other replicas of this database use: give every replica the same key file", cfg.secretsKeyPath())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return key, nil
}
