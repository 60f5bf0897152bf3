package local

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// Bucket is the bucket the local provider reports for its artifacts.
const Bucket = "local"

// maxKeyLen bounds artifact keys (S3 allows 1024 bytes).
const maxKeyLen = 1024

// CheckArtifactKey validates an artifact key: a relative slash-separated path
// of printable ASCII that cannot leave the artifacts directory.
func CheckArtifactKey(key string) error {
	bad := func(why string) error {
		return errkind.New(errkind.Invalid, "artifact key %q is not valid: %s", key, why)
	}
	switch {
	case key == "":
		return errkind.New(errkind.Invalid, "artifact key is empty: give a path such as greengrass2/artifacts/<core>/<core>/certs.zip")
	case len(key) > maxKeyLen:
		return errkind.New(errkind.Invalid, "artifact key is %d bytes long: the limit is %d", len(key), maxKeyLen)
	case strings.HasPrefix(key, "/"):
		return bad("it must not start with '/'")
	case strings.Contains(key, "\\"):
		return bad("it must not contain '\\'")
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < 0x20 || c > 0x7e {
			return bad("use printable ASCII characters only")
		}
	}
	for _, seg := range strings.Split(key, "/") {
		switch seg {
		case "":
			return bad("it must not contain empty path segments ('//' or a trailing '/')")
		case ".", "..":
			return bad("it must not contain '.' or '..' segments")
		}
		if len(seg) > 255 {
			return bad("each path segment must be at most 255 bytes")
		}
	}
	return nil
}

// contentType is an artifact's media type, from its extension.
func contentType(key string) string {
	switch strings.ToLower(path.Ext(key)) {
	case ".zip":
		return "application/zip"
	case ".yml", ".yaml":
		return "application/yaml"
	case ".json":
		return "application/json"
	}
	return "application/octet-stream"
}

// ArtifactStore keeps artifact bytes by key (already validated with
// CheckArtifactKey). Put replaces an existing artifact; Get returns
// errkind.NotFound for a missing one.
type ArtifactStore interface {
	PutArtifact(ctx context.Context, key string, data []byte) error
	GetArtifact(ctx context.Context, key string) ([]byte, error)
	Close() error
}

// DatabaseArtifacts is a Store that can also keep the artifacts: New uses
// it for them when KeepsArtifacts is true (the broker's database is shared
// by replicas, so artifacts must not be files of one of them).
type DatabaseArtifacts interface {
	ArtifactStore
	KeepsArtifacts() bool
}

// fallbackArtifacts keeps artifacts in the database and still reads the
// files an earlier version wrote to the artifacts directory: a key the
// database does not have is looked up there.
type fallbackArtifacts struct {
	ArtifactStore
	legacy *DirArtifacts
}

// GetArtifact reads key from the database, else from the legacy files.
func (f *fallbackArtifacts) GetArtifact(ctx context.Context, key string) ([]byte, error) {
	data, err := f.ArtifactStore.GetArtifact(ctx, key)
	if errkind.Is(err, errkind.NotFound) {
		return f.legacy.GetArtifact(ctx, key)
	}
	return data, err
}

// Close releases both stores.
func (f *fallbackArtifacts) Close() error {
	return errors.Join(f.ArtifactStore.Close(), f.legacy.Close())
}

// DirArtifacts keeps artifacts as files under a directory, opened with
// os.Root so no key can escape it: the local provider's store when its
// Store keeps none (ggfleet's own keeps them in the database, and reads
// this directory only for artifacts earlier versions wrote there).
type DirArtifacts struct {
	root *os.Root
}

// NewDirArtifacts opens (creating, 0700) the artifacts directory.
func NewDirArtifacts(dir string) (*DirArtifacts, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create artifacts dir %s: %w", dir, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open artifacts dir %s: %w", dir, err)
	}
	return &DirArtifacts{root: root}, nil
}

// Close releases the directory handle.
func (d *DirArtifacts) Close() error { return d.root.Close() }

// PutArtifact writes data under key atomically (temporary file, then rename),
// private to the broker's user because certs.zip holds a private key. The
// content type is derived from the key's extension when read back, so the
// contentType argument is not stored.
func (p *Provider) PutArtifact(ctx context.Context, key, contentType string, data []byte) (string, error) {
	if err := CheckArtifactKey(key); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := p.artifacts.PutArtifact(ctx, key, data); err != nil {
		return "", err
	}
	return Bucket, nil
}

// PutArtifact writes data to the file key atomically: a temporary file in
// the key's directory, fsynced, then renamed over the key, so a reader (or a
// broker restarted after a crash) sees the old file or the whole new one.
//
// The key's directory is resolved once (os.Root checks every component) and
// the temporary file and the rename are single-component operations in it;
// the directories are created only when that directory does not exist yet.
// Each artifact is written once or twice per core, so this path is hot when
// thousands of cores are provisioned.
func (d *DirArtifacts) PutArtifact(ctx context.Context, key string, data []byte) error {
	dir, base := path.Split(key)
	r := d.root
	if dir != "" {
		sub, err := d.openDir(strings.TrimSuffix(dir, "/"))
		if err != nil {
			return fmt.Errorf("store artifact %s: %w", key, err)
		}
		defer sub.Close()
		r = sub
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := ".tmp-" + hex.EncodeToString(rnd[:])
	f, err := r.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("store artifact %s: %w", key, err)
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = r.Rename(tmp, base)
	}
	if werr != nil {
		_ = r.Remove(tmp)
		return fmt.Errorf("store artifact %s: %w", key, werr)
	}
	return nil
}

// openDir opens the directory dir of the artifacts directory as a root of
// its own, creating it (and its parents, 0700) when it does not exist.
func (d *DirArtifacts) openDir(dir string) (*os.Root, error) {
	sub, err := d.root.OpenRoot(dir)
	if err == nil {
		return sub, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open directory: %w", err)
	}
	if err := d.root.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create directory: %w", err)
	}
	sub, err = d.root.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open directory: %w", err)
	}
	return sub, nil
}

// GetArtifact returns an artifact's bytes and content type, or
// errkind.NotFound.
func (p *Provider) GetArtifact(ctx context.Context, key string) ([]byte, string, error) {
	if err := CheckArtifactKey(key); err != nil {
		return nil, "", err
	}
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	data, err := p.artifacts.GetArtifact(ctx, key)
	if err != nil {
		return nil, "", err
	}
	return data, contentType(key), nil
}

// GetArtifact reads the file key, or returns errkind.NotFound.
func (d *DirArtifacts) GetArtifact(ctx context.Context, key string) ([]byte, error) {
	notFound := func(err error) error {
		return errkind.Wrap(errkind.NotFound, err, "artifact %s does not exist", key)
	}
	fi, err := d.root.Stat(key)
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return nil, notFound(err)
	case err != nil:
		return nil, fmt.Errorf("read artifact %s: %w", key, err)
	case !fi.Mode().IsRegular():
		return nil, notFound(fmt.Errorf("%s is not a regular file", key))
	}
	data, err := d.root.ReadFile(key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, notFound(err)
	}
	if err != nil {
		return nil, fmt.Errorf("read artifact %s: %w", key, err)
	}
	return data, nil
}
