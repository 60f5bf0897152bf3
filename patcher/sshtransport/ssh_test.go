package sshtransport_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/internal/testservers"
	"github.com/ggfleet/ggfleet/patcher"
	"github.com/ggfleet/ggfleet/patcher/sshtransport"
	"github.com/ggfleet/ggfleet/patcher/transporttest"
	"golang.org/x/crypto/ssh"
)

func dial(t *testing.T, cfg sshtransport.Config) *sshtransport.Transport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tr, err := sshtransport.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", cfg.Addr, err)
	}
	return tr
}

func TestSuiteRootKey(t *testing.T) {
	srv := testservers.StartSSHD(t, testservers.SSHDOptions{})
	transporttest.Run(t, func(t *testing.T) patcher.Transport {
		return dial(t, sshtransport.Config{Addr: srv.Addr, User: "root",
			Auth: sshtransport.Auth{PrivateKeyPEM: srv.ClientKeyPEM}, HostKey: sshtransport.Strict(srv.HostKey)})
	}, transporttest.Options{Drop: srv.DropConnections})
}

func TestSuitePasswordUserWithSudo(t *testing.T) {
	srv := testservers.StartSSHD(t, testservers.SSHDOptions{})
	opts := transporttest.Options{Drop: srv.DropConnections}
	if _, err := os.Stat("/usr/bin/sudo"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("sudo not found but CI is set: .ci/run must `apt-get install -y sudo`")
		}
		opts.NoBecomeReason = "sudo is not installed on the test machine (apt-get install -y sudo)"
	}
	transporttest.Run(t, func(t *testing.T) patcher.Transport {
		return dial(t, sshtransport.Config{Addr: srv.Addr, User: testservers.PasswordUser,
			Auth: sshtransport.Auth{Password: testservers.Password}, HostKey: sshtransport.Strict(srv.HostKey),
			SudoPassword: testservers.Password})
	}, opts)
}

func TestNoSFTPFallsBackToCat(t *testing.T) {
	srv := testservers.StartSSHD(t, testservers.SSHDOptions{NoSFTP: true})
	tr := dial(t, sshtransport.Config{Addr: srv.Addr, User: "root",
		Auth: sshtransport.Auth{PrivateKeyPEM: srv.ClientKeyPEM}, HostKey: sshtransport.Strict(srv.HostKey)})
	defer tr.Close()
	path := filepath.Join(t.TempDir(), "f.txt")
	if err := tr.Upload(context.Background(), patcher.File{Path: path, Mode: 0o600, Data: strings.NewReader("hello\n"), Size: 6}); err != nil {
		t.Fatalf("upload without sftp: %v", err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "hello\n" {
		t.Fatalf("file: %q %v", got, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestKeyboardInteractive(t *testing.T) {
	srv := testservers.StartSSHD(t, testservers.SSHDOptions{KbdInteractive: true})
	tr := dial(t, sshtransport.Config{Addr: srv.Addr, User: testservers.PasswordUser,
		Auth: sshtransport.Auth{Password: testservers.Password}, HostKey: sshtransport.Strict(srv.HostKey)})
	defer tr.Close()
	var out bytes.Buffer
	if _, err := tr.Run(context.Background(), patcher.Command{Script: "id -un", Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out.String()) != testservers.PasswordUser {
		t.Errorf("logged in as %q", out.String())
	}
}

func TestAuthAndHostKeyRefusals(t *testing.T) {
	srv := testservers.StartSSHD(t, testservers.SSHDOptions{})
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _ := ssh.NewSignerFromKey(otherPriv)
	knownHosts := filepath.Join(t.TempDir(), "state", "known_hosts")

	try := func(cfg sshtransport.Config) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		tr, err := sshtransport.Dial(ctx, cfg)
		if err == nil {
			tr.Close()
		}
		return err
	}
	base := sshtransport.Config{Addr: srv.Addr, User: testservers.PasswordUser, Auth: sshtransport.Auth{Password: testservers.Password}}

	wrongPW := base
	wrongPW.HostKey = sshtransport.Strict(srv.HostKey)
	wrongPW.Auth.Password = "not-the-password"
	if err := try(wrongPW); !errors.Is(err, patcher.ErrAuth) {
		t.Errorf("wrong password: got %v, want ErrAuth", err)
	}

	pinnedOther := base
	pinnedOther.HostKey = sshtransport.Strict(otherPub.PublicKey())
	err := try(pinnedOther)
	if !errors.Is(err, patcher.ErrHostKeyMismatch) || !strings.Contains(err.Error(), ssh.FingerprintSHA256(srv.HostKey)) {
		t.Errorf("strict with another key: got %v, want ErrHostKeyMismatch naming %s", err, ssh.FingerprintSHA256(srv.HostKey))
	}

	tofu := base
	tofu.HostKey = sshtransport.TOFU(knownHosts)
	if err := try(tofu); err != nil {
		t.Fatalf("tofu first use: %v", err)
	}
	if fi, err := os.Stat(knownHosts); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("known_hosts not recorded 0600: %v %v", fi, err)
	}
	if err := try(tofu); err != nil {
		t.Fatalf("tofu second use with the same key: %v", err)
	}
	oldKey := srv.HostKey
	srv.ChangeHostKey()
	err = try(tofu)
	if !errors.Is(err, patcher.ErrHostKeyMismatch) ||
		!strings.Contains(err.Error(), ssh.FingerprintSHA256(oldKey)) || !strings.Contains(err.Error(), ssh.FingerprintSHA256(srv.HostKey)) {
		t.Errorf("tofu after key change: got %v, want ErrHostKeyMismatch with both fingerprints", err)
	}
	strictOld := base
	strictOld.HostKey = sshtransport.Strict(oldKey)
	if err := try(strictOld); !errors.Is(err, patcher.ErrHostKeyMismatch) {
		t.Errorf("strict after key change: got %v, want ErrHostKeyMismatch", err)
	}
}
