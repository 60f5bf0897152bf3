// Package mosquittotest runs a real Mosquitto for tests and benchmarks,
// configured with exactly the text docs/mosquitto.md documents
// (docs/mosquitto/ggfleet.conf and docs/mosquitto/acl), only its paths and
// port filled in. The test helpers fail the test when mosquitto is missing
// in CI (CI set) and skip it elsewhere; Launch and WriteServerTLS serve
// commands (bench/mqttbench).
package mosquittotest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Find returns the path of the mosquitto program.
func Find() (string, error) {
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	return "", errors.New("mosquitto is not installed: apt-get install -y mosquitto")
}

// Binary returns the mosquitto program, or skips (fails in CI) when it is
// not installed.
func Binary(t testing.TB) string {
	t.Helper()
	if p, err := Find(); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("mosquitto is not installed: apt-get install -y mosquitto")
	}
	t.Skip("mosquitto is not installed (apt-get install -y mosquitto)")
	return ""
}

// DocsDir is the repository's docs/mosquitto folder (found from this
// source file, so it needs the source tree).
func DocsDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "docs", "mosquitto")
}

// Dir makes a folder Mosquitto (which drops root for the user mosquitto)
// can read and write, removed when the test ends.
func Dir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ggfleet-mosquitto-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// ServerTLS writes server.pem and server.key (for 127.0.0.1, from a fresh CA)
// into dir, 0644 so user mosquitto can read them, and returns the CA's PEM:
// what ggfleet's --mqtt-server-ca-file names.
func ServerTLS(t testing.TB, dir string) (caPEM []byte) {
	t.Helper()
	caPEM, err := WriteServerTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	return caPEM
}

// WriteServerTLS is ServerTLS for commands.
func WriteServerTLS(dir string) (caPEM []byte, err error) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mosquitto test server CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := write(filepath.Join(dir, "server.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})); err != nil {
		return nil, err
	}
	if err := write(filepath.Join(dir, "server.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})); err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
}

// write writes a file readable by the user mosquitto (0644).
func write(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return err
	}
	return os.Chmod(path, 0o644)
}

// Server is a running Mosquitto.
type Server struct {
	Addr string // 127.0.0.1:port
	Dir  string

	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	log  bytes.Buffer
}

// Start runs mosquitto with the documented configuration on addr
// (127.0.0.1:port; "" picks a free port), its files in dir: ca.pem,
// crl.pem, server.pem and server.key must be there already. It waits until
// the port accepts connections and stops mosquitto when the test ends.
func Start(t testing.TB, dir, addr string) *Server {
	t.Helper()
	Binary(t)
	if addr == "" {
		addr = FreeAddr(t)
	}
	s, err := Launch(dir, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", s.Log())
		}
	})
	return s
}

// Launch is Start for commands: the caller stops the server with Stop.
func Launch(dir, addr string) (*Server, error) {
	bin, err := Find()
	if err != nil {
		return nil, err
	}
	docs := DocsDir()
	conf, err := os.ReadFile(filepath.Join(docs, "ggfleet.conf"))
	if err != nil {
		return nil, err
	}
	acl, err := os.ReadFile(filepath.Join(docs, "acl"))
	if err != nil {
		return nil, err
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("mosquitto address %q: %w", addr, err)
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o777); err != nil {
		return nil, err
	}
	_ = os.Chmod(data, 0o777)
	text := string(conf)
	for _, r := range [][2]string{
		{"/etc/mosquitto/ggfleet/", dir + "/"},
		{"/var/lib/mosquitto/", data + "/"},
		{"listener 8883\n", "listener " + port + " 127.0.0.1\n"},
	} {
		if !strings.Contains(text, r[0]) {
			return nil, fmt.Errorf("docs/mosquitto/ggfleet.conf no longer contains %q", r[0])
		}
		text = strings.ReplaceAll(text, r[0], r[1])
	}
	if err := write(filepath.Join(dir, "mosquitto.conf"), []byte(text)); err != nil {
		return nil, err
	}
	if err := write(filepath.Join(dir, "acl"), acl); err != nil {
		return nil, err
	}

	s := &Server{Addr: addr, Dir: dir, done: make(chan struct{})}
	s.cmd = exec.Command(bin, "-c", filepath.Join(dir, "mosquitto.conf"))
	s.cmd.Stdout, s.cmd.Stderr = (*logWriter)(s), (*logWriter)(s)
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start mosquitto: %w", err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-s.done:
			return nil, fmt.Errorf("mosquitto exited at start:\n%s", s.Log())
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return s, nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("mosquitto not listening on %s after 30s:\n%s", addr, s.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends mosquitto (SIGTERM, then SIGKILL after 10s) and waits for it.
func (s *Server) Stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// Reload sends SIGHUP: Mosquitto re-reads its certificates and CRL.
func (s *Server) Reload() error {
	return s.cmd.Process.Signal(syscall.SIGHUP)
}

// Log is what mosquitto printed so far.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

type logWriter Server

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.log.Write(p)
}

// FreeAddr is a 127.0.0.1 address whose port was free just now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := PickAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// PickAddr is FreeAddr for commands.
func PickAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// URL is the mqtts:// URL of the server, for ggfleet --mqtt-url.
func (s *Server) URL() string { return fmt.Sprintf("mqtts://%s", s.Addr) }
