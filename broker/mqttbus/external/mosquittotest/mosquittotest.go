// Package mosquittotest runs a real Mosquitto for tests, configured with
// exactly the text docs/mosquitto.md documents (docs/mosquitto/ggfleet.conf
// and docs/mosquitto/acl), only its paths and port filled in. It fails the
// test when mosquitto is missing in CI (CI set) and skips it elsewhere.
package mosquittotest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
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

// Binary returns the mosquitto program, or skips (fails in CI) when it is
// not installed.
func Binary(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("mosquitto is not installed: apt-get install -y mosquitto")
	}
	t.Skip("mosquitto is not installed (apt-get install -y mosquitto)")
	return ""
}

// DocsDir is the repository's docs/mosquitto folder.
func DocsDir(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the source tree")
	}
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
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mosquitto test server CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "server.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	write(t, filepath.Join(dir, "server.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
}

func write(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Server is a running Mosquitto.
type Server struct {
	Addr string // 127.0.0.1:port
	Dir  string

	t    testing.TB
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
	bin := Binary(t)
	docs := DocsDir(t)
	conf, err := os.ReadFile(filepath.Join(docs, "ggfleet.conf"))
	if err != nil {
		t.Fatal(err)
	}
	acl, err := os.ReadFile(filepath.Join(docs, "acl"))
	if err != nil {
		t.Fatal(err)
	}
	if addr == "" {
		addr = FreeAddr(t)
	}
	_, port, _ := net.SplitHostPort(addr)
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o777); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(data, 0o777)
	text := string(conf)
	for _, r := range [][2]string{
		{"/etc/mosquitto/ggfleet/", dir + "/"},
		{"/var/lib/mosquitto/", data + "/"},
		{"listener 8883\n", "listener " + port + " 127.0.0.1\n"},
	} {
		if !strings.Contains(text, r[0]) {
			t.Fatalf("docs/mosquitto/ggfleet.conf no longer contains %q", r[0])
		}
		text = strings.ReplaceAll(text, r[0], r[1])
	}
	write(t, filepath.Join(dir, "mosquitto.conf"), []byte(text))
	write(t, filepath.Join(dir, "acl"), acl)

	s := &Server{Addr: addr, Dir: dir, t: t, done: make(chan struct{})}
	s.cmd = exec.Command(bin, "-c", filepath.Join(dir, "mosquitto.conf"))
	s.cmd.Stdout, s.cmd.Stderr = (*logWriter)(s), (*logWriter)(s)
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", s.Log())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-s.done:
			t.Fatalf("mosquitto exited at start:\n%s", s.Log())
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto not listening on %s after 30s:\n%s", addr, s.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Reload sends SIGHUP: Mosquitto re-reads its certificates and CRL.
func (s *Server) Reload() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		s.t.Fatalf("SIGHUP mosquitto: %v", err)
	}
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
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// URL is the mqtts:// URL of the server, for ggfleet --mqtt-url.
func (s *Server) URL() string { return fmt.Sprintf("mqtts://%s", s.Addr) }
