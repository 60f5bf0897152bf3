// Package statedir owns the layout of ggagent's --state-dir: which files it
// holds, their modes, and how they are written. Every write is atomic (a
// temporary file in the same directory, fsync, rename, fsync of the
// directory), so a crash or power cut leaves either the old or the new
// file, never half of one. The directory itself is 0700 and must belong to
// the user running the agent, because it holds the device's private key.
//
// Any agent package may import it; it imports only the standard library.
package statedir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DefaultPath is the state directory used when --state-dir is not given.
const DefaultPath = "/var/lib/ggagent"

// The files of the state directory.
const (
	// IdentityFile records a finished enrollment; it is written last.
	IdentityFile = "identity.json"
	// KeyFile is the device's private key (PEM, 0600); it never leaves the device.
	KeyFile = "device.key"
	// CertFile is the device certificate the broker issued for KeyFile.
	CertFile = "device.crt"
	// CAFile is the CA that issued CertFile.
	CAFile = "ca.pem"
	// ServerCAFile verifies the broker's TLS certificates (HTTPS and MQTT).
	ServerCAFile = "server-ca.pem"
	// InstallerConfigFile is the Greengrass installer config the broker generated.
	InstallerConfigFile = "installerConfig.yml"
	// StatusFile is what the running daemon last reported about itself.
	StatusFile = "status.json"
)

// Modes of the files and of the directory.
const (
	DirMode    os.FileMode = 0o700
	SecretMode os.FileMode = 0o600 // private keys
	PublicMode os.FileMode = 0o644 // certificates, configs, records
)

// FormatVersion is the "version" that WriteJSON puts in files it writes and
// the highest one ReadJSON accepts.
const FormatVersion = 1

// ErrCorrupt is wrapped by ReadJSON when a file cannot be understood.
var ErrCorrupt = errors.New("state file is corrupted")

// Dir is an opened state directory.
type Dir struct {
	path string
	// write puts data into the temporary file; tests replace it to inject
	// failures in the middle of a write.
	write func(f *os.File, data []byte) error
}

// Open opens the state directory at dir, creating it (0700) if needed. It
// refuses a directory that other users could write to or that belongs to
// another user, since the device key would not be safe there.
func Open(dir string) (*Dir, error) {
	return open(dir, true)
}

// OpenExisting opens the state directory at dir like Open, but does not
// create it: a missing directory is an error wrapping fs.ErrNotExist.
func OpenExisting(dir string) (*Dir, error) {
	return open(dir, false)
}

func open(dir string, create bool) (*Dir, error) {
	if dir == "" {
		return nil, errors.New("state directory: no path given (use --state-dir)")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("state directory %s: %w", dir, err)
	}
	if create {
		if err := os.MkdirAll(abs, DirMode); err != nil {
			return nil, fmt.Errorf("create state directory %s: %w (run as a user that may create it, or choose another --state-dir)", abs, err)
		}
	}
	fi, err := os.Stat(abs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("state directory %s does not exist: %w", abs, err)
		}
		return nil, fmt.Errorf("state directory %s: %w", abs, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("state directory %s is not a directory", abs)
	}
	if err := checkOwner(abs, fi); err != nil {
		return nil, err
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return nil, fmt.Errorf("state directory %s is writable by other users (mode %04o): it holds the device's private key; run chmod 700 %s", abs, perm, abs)
	} else if perm != DirMode && create {
		// Readable by others but not writable: tighten it, it is ours.
		if err := os.Chmod(abs, DirMode); err != nil {
			return nil, fmt.Errorf("state directory %s: set mode 0700: %w", abs, err)
		}
	}
	return &Dir{path: abs, write: writeAll}, nil
}

// Path is the directory's absolute path.
func (d *Dir) Path() string { return d.path }

// File is the absolute path of a file in the directory.
func (d *Dir) File(name string) string { return filepath.Join(d.path, name) }

// Exists reports whether the named file exists.
func (d *Dir) Exists(name string) (bool, error) {
	_, err := os.Lstat(d.File(name))
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, fmt.Errorf("state file %s: %w", d.File(name), err)
}

// Remove deletes the named file; a missing file is not an error.
func (d *Dir) Remove(name string) error {
	if err := os.Remove(d.File(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove state file: %w", err)
	}
	return nil
}

// ReadFile returns the contents of the named file. A missing file gives an
// error wrapping fs.ErrNotExist.
func (d *Dir) ReadFile(name string) ([]byte, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(d.File(name))
	if err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	return b, nil
}

// WriteFile replaces the named file with data atomically, with mode perm:
// readers see the old file or the new one, never a mix, even after a crash.
func (d *Dir) WriteFile(name string, data []byte, perm os.FileMode) error {
	if err := checkName(name); err != nil {
		return err
	}
	dst := d.File(name)
	tmp, err := os.CreateTemp(d.path, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("write state file %s: %w", dst, err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// CreateTemp makes the file 0600; set the final mode before any byte is
	// written so a secret is never readable by others, even briefly.
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("write state file %s: set mode: %w", dst, err)
	}
	if err := d.write(tmp, data); err != nil {
		return fmt.Errorf("write state file %s: %w", dst, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write state file %s: sync: %w", dst, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write state file %s: close: %w", dst, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("write state file %s: rename: %w", dst, err)
	}
	ok = true
	if err := syncDir(d.path); err != nil {
		return fmt.Errorf("write state file %s: sync directory: %w", dst, err)
	}
	return nil
}

// WriteJSON writes v, which must encode as a JSON object, atomically and
// indented. If the object has no "version" member, "version": 1
// (FormatVersion) is put first, so every file the agent writes says which
// format it is in. Files are written PublicMode; use WriteFile for secrets.
func (d *Dir) WriteJSON(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("write state file %s: encode: %w", d.File(name), err)
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(b, &members); err != nil || members == nil {
		return fmt.Errorf("write state file %s: the value must encode as a JSON object", d.File(name))
	}
	if raw, ok := members["version"]; ok {
		var ver int
		if err := json.Unmarshal(raw, &ver); err != nil || ver < 1 {
			return fmt.Errorf("write state file %s: \"version\" must be a positive integer, got %s", d.File(name), raw)
		}
	} else {
		prefix := fmt.Sprintf(`{"version":%d`, FormatVersion)
		if len(members) > 0 {
			prefix += ","
		}
		b = append([]byte(prefix), b[1:]...)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return fmt.Errorf("write state file %s: indent: %w", d.File(name), err)
	}
	out.WriteByte('\n')
	return d.WriteFile(name, out.Bytes(), PublicMode)
}

// ReadJSON decodes the named file into v. A missing file gives an error
// wrapping fs.ErrNotExist; a file that is not a JSON object with a
// positive "version" gives an error wrapping ErrCorrupt that names the file
// and says how to recover; a version newer than FormatVersion means a newer
// ggagent wrote it.
func (d *Dir) ReadJSON(name string, v any) error {
	b, err := d.ReadFile(name)
	if err != nil {
		return err
	}
	path := d.File(name)
	var head struct {
		Version *json.Number `json:"version"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return d.corrupt(name, err.Error())
	}
	if head.Version == nil {
		return d.corrupt(name, `it has no "version"`)
	}
	ver, err := head.Version.Int64()
	if err != nil || ver < 1 {
		return d.corrupt(name, fmt.Sprintf(`"version" is %s`, head.Version.String()))
	}
	if ver > FormatVersion {
		return fmt.Errorf("state file %s has format version %d but this ggagent understands only up to %d: upgrade ggagent", path, ver, FormatVersion)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return d.corrupt(name, err.Error())
	}
	return nil
}

func (d *Dir) corrupt(name, why string) error {
	path := d.File(name)
	advice := "remove the file"
	if name == IdentityFile {
		advice = "re-run ggagent enroll (with a new token) or remove the file"
	}
	return fmt.Errorf("%w: %s: %s; to recover, %s (rm %s)", ErrCorrupt, path, why, advice, path)
}

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) {
		return fmt.Errorf("state file name %q is not a plain file name", name)
	}
	return nil
}

func writeAll(f *os.File, data []byte) error {
	_, err := f.Write(data)
	return err
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	return nil
}
