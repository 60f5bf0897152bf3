// Package credstore keeps the secrets a core uses to log in to its client
// devices (SSH private keys, passwords, console passwords). They live only
// on the core, one file per name under <state-dir>/credentials/ (directory
// 0700, files 0600); a target profile on the broker names one as
// "core:NAME" and never carries the secret itself. `ggagent credentials`
// manages the files and the patch runner reads them.
//
// It imports only the standard library and shared/patchmsg (for the name
// rule both sides share), so the ggagent command line can use it cheaply.
package credstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

// Dir is the credentials folder inside the agent's state directory.
const Dir = "credentials"

// MaxSize bounds one credential: keys and passwords are small, and a huge
// file is almost certainly the wrong file.
const MaxSize = 64 << 10

// ErrNotFound is wrapped when a named credential does not exist.
var ErrNotFound = errors.New("credential not found")

// Store is the credentials folder of one state directory.
type Store struct {
	dir string
}

// New returns the store under stateDir. Nothing is created until Set.
func New(stateDir string) *Store {
	return &Store{dir: filepath.Join(stateDir, Dir)}
}

// Path is the folder holding the credential files.
func (s *Store) Path() string { return s.dir }

func checkName(name string) error {
	if !patchmsg.ValidCredentialName(name) {
		return fmt.Errorf("credential name %q must be 1-64 letters, digits, '.', '_' or '-' (and not . or ..)", name)
	}
	return nil
}

// Set stores value under name, replacing any old value atomically (temp
// file 0600, fsync, rename, fsync of the folder).
func (s *Store) Set(name string, value []byte) error {
	if err := checkName(name); err != nil {
		return err
	}
	if len(value) == 0 {
		return fmt.Errorf("credential %q is empty", name)
	}
	if len(value) > MaxSize {
		return fmt.Errorf("credential %q is %d bytes; at most %d are allowed", name, len(value), MaxSize)
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("create credentials folder: %w", err)
	}
	// MkdirAll keeps an existing folder's mode: tighten it.
	if err := os.Chmod(s.dir, 0o700); err != nil {
		return fmt.Errorf("credentials folder %s: %w", s.dir, err)
	}
	tmp, err := os.CreateTemp(s.dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("store credential %q: %w", name, err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("store credential %q: %w", name, err)
	}
	if _, err := tmp.Write(value); err != nil {
		return fmt.Errorf("store credential %q: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("store credential %q: sync: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("store credential %q: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(s.dir, name)); err != nil {
		return fmt.Errorf("store credential %q: %w", name, err)
	}
	ok = true
	if d, err := os.Open(s.dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// Get returns the value stored under name. A missing credential gives an
// error wrapping ErrNotFound that says how to add it.
func (s *Store) Get(name string) ([]byte, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(s.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q is not stored on this core (add it with `ggagent credentials set %s --from-file FILE`)", ErrNotFound, name, name)
	}
	if err != nil {
		return nil, fmt.Errorf("read credential %q: %w", name, err)
	}
	return b, nil
}

// Resolve returns the value a "core:NAME" reference names.
func (s *Store) Resolve(ref string) ([]byte, error) {
	name, err := patchmsg.CredentialName(ref)
	if err != nil {
		return nil, err
	}
	return s.Get(name)
}

// Exists reports whether a "core:NAME" reference names a stored credential.
func (s *Store) Exists(ref string) bool {
	name, err := patchmsg.CredentialName(ref)
	if err != nil {
		return false
	}
	fi, err := os.Stat(filepath.Join(s.dir, name))
	return err == nil && fi.Mode().IsRegular()
}

// List returns the stored names, sorted. Values are never listed.
func (s *Store) List() ([]string, error) {
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list credentials: %w", err)
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") && patchmsg.ValidCredentialName(e.Name()) {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}

// Delete removes name; deleting a missing credential gives ErrNotFound.
func (s *Store) Delete(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	err := os.Remove(filepath.Join(s.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if err != nil {
		return fmt.Errorf("delete credential %q: %w", name, err)
	}
	return nil
}
