package ca

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// SecretsKeySize is the length of the secrets key: AES-256.
const SecretsKeySize = 32

// LoadOrCreateSecretsKey reads the base64 secrets key at path, creating it
// (32 random bytes, base64 and a newline, as `openssl rand -base64 32`
// writes them; file mode 0600 in a 0700 directory) when it does not exist.
// Replicas sharing one database must share this file, so an existing file is
// never replaced: one that does not decode to 32 bytes is an error.
func LoadOrCreateSecretsKey(path string) ([]byte, error) {
	key, err := readSecretsKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create secrets key directory: %w", err)
	}
	key = make([]byte, SecretsKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate secrets key: %w", err)
	}
	// Written to a temporary file and fsynced first, then linked into place
	// (link never replaces an existing file) and the directory fsynced: a
	// crash or a file-system error never leaves an empty or partial key,
	// which would lock the broker out of its encrypted CA keys.
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".secrets.key-*") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("create secrets key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return nil, fmt.Errorf("write secrets key file %s: %w", path, werr)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Another process created it between our read and our link.
			return readSecretsKey(path)
		}
		return nil, fmt.Errorf("create secrets key file %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("sync secrets key directory %s: %w", dir, err)
	}
	return key, nil
}

// syncDir fsyncs a directory, so a file just linked into it survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func readSecretsKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read secrets key file: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("secrets key file %s is not base64: create it with `openssl rand -base64 32 > %s`, or remove it to have one generated", path, path)
	}
	if len(key) != SecretsKeySize {
		return nil, fmt.Errorf("secrets key file %s holds %d bytes, want %d: create it with `openssl rand -base64 32 > %s`", path, len(key), SecretsKeySize, path)
	}
	return key, nil
}

// keyFormat is the first byte of an encrypted key blob; it names the scheme
// (AES-256-GCM, 12-byte random nonce, CA id as additional data).
const keyFormat = 1

// seal encrypts plaintext with the secrets key, binding it to the CA's id.
func seal(secretsKey []byte, caID string, plaintext []byte) ([]byte, error) {
	aead, err := newAEAD(secretsKey)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("generate nonce: %w", err)
	}
	out := append([]byte{keyFormat}, nonce...)
	return aead.Seal(out, nonce, plaintext, []byte(caID)), nil
}

// open decrypts a blob made by seal.
func open(secretsKey []byte, caID string, blob []byte) ([]byte, error) {
	aead, err := newAEAD(secretsKey)
	if err != nil {
		return nil, err
	}
	if len(blob) < 1+aead.NonceSize() || blob[0] != keyFormat {
		return nil, fmt.Errorf("the stored private key of certificate authority %s is not in a known format", caID)
	}
	nonce, ct := blob[1:1+aead.NonceSize()], blob[1+aead.NonceSize():]
	pt, err := aead.Open(nil, nonce, ct, []byte(caID))
	if err != nil {
		return nil, fmt.Errorf("decrypt the private key of certificate authority %s: the secrets key does not match the one it was stored with (every replica needs the same --secrets-key-file)", caID)
	}
	return pt, nil
}

func newAEAD(secretsKey []byte) (cipher.AEAD, error) {
	if len(secretsKey) != SecretsKeySize {
		return nil, fmt.Errorf("the secrets key has %d bytes, want %d", len(secretsKey), SecretsKeySize)
	}
	block, err := aes.NewCipher(secretsKey)
	if err != nil {
		return nil, fmt.Errorf("secrets key: %w", err)
	}
	return cipher.NewGCM(block)
}
