package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// ArtifactStore keeps artifacts in the artifacts table (local.ArtifactStore),
// for replicas on PostgreSQL that must keep no files of their own.
type ArtifactStore struct{ d *DB }

// Artifacts returns the database-backed artifact store.
func (d *DB) Artifacts() *ArtifactStore { return &ArtifactStore{d: d} }

// insertArtifact may be deferred by a Create batch's transaction (deferred.go).
var insertArtifact = newInsert("artifacts", []string{"key", "data", "updated_at"}, 1, true,
	"ON CONFLICT (key) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at")

// PutArtifact stores data under key, replacing what was there.
func (s *ArtifactStore) PutArtifact(ctx context.Context, key string, data []byte) error {
	if data == nil {
		data = []byte{}
	}
	err := s.d.insert(ctx, &insertArtifact, key, data, time.Now().UnixMilli())
	return mapErr(err, fmt.Sprintf("store artifact %s", key))
}

// GetArtifact returns the bytes stored under key, or errkind.NotFound. It
// reads through the read pool: downloads must not queue behind task work.
func (s *ArtifactStore) GetArtifact(ctx context.Context, key string) ([]byte, error) {
	var data []byte
	err := s.d.r(ctx).QueryRowContext(ctx, s.d.q(`SELECT data FROM artifacts WHERE key = ?`), key).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errkind.New(errkind.NotFound, "artifact %s does not exist", key)
	}
	if err != nil {
		return nil, mapErr(err, fmt.Sprintf("artifact %s", key))
	}
	return data, nil
}

// Close does nothing: the pool belongs to the DB.
func (s *ArtifactStore) Close() error { return nil }

// The registry store also keeps the local provider's artifacts
// (local.DatabaseArtifacts): on PostgreSQL so replicas share them without
// any configuration of their own, and on SQLite because a file per artifact
// cost a directory, a file, an fsync and a rename per artifact, two per
// core: about a third of the broker's CPU when provisioning cores in bulk
// (BenchmarkCoreTask), against a row in a transaction it writes anyway.

// KeepsArtifacts reports that the provider should keep its artifacts here.
func (s *RegistryStore) KeepsArtifacts() bool { return true }

// PutArtifact stores an artifact in the database (see KeepsArtifacts).
func (s *RegistryStore) PutArtifact(ctx context.Context, key string, data []byte) error {
	return s.d.Artifacts().PutArtifact(ctx, key, data)
}

// GetArtifact reads an artifact from the database, or errkind.NotFound.
func (s *RegistryStore) GetArtifact(ctx context.Context, key string) ([]byte, error) {
	return s.d.Artifacts().GetArtifact(ctx, key)
}

// Close does nothing: the pool belongs to the DB.
func (s *RegistryStore) Close() error { return nil }
