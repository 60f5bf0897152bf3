package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeWithNoFlags runs `ggfleet serve` exactly as the README says, in
// an empty directory: data in ./ggfleet-data, API on 127.0.0.1:8080, and a
// banner naming the URL, the token file, the default CA and the next step.
func TestServeWithNoFlags(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:8080", "127.0.0.1:8883"} {
		if l, err := net.Listen("tcp", addr); err != nil {
			t.Fatalf("the default address %s is taken on this machine, so `ggfleet serve` with no flags cannot be tested: %v", addr, err)
		} else {
			l.Close()
		}
	}
	dir := t.TempDir()
	cmd := exec.Command(filepath.Join(binDir, "ggfleet"), "serve")
	cmd.Dir = dir
	var out strings.Builder
	cmd.Stdout = &out
	logf, err := os.Create(filepath.Join(dir, "serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitFor(t, 60*time.Second, "http://127.0.0.1:8080/readyz", func() bool {
		resp, err := http.Get("http://127.0.0.1:8080/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	token, err := os.ReadFile(filepath.Join(dir, "ggfleet-data", "admin.token"))
	if err != nil {
		t.Fatalf("admin token not in ./ggfleet-data: %v", err)
	}
	req, _ := http.NewRequest("GET", "http://127.0.0.1:8080/certificateAuthorities", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /certificateAuthorities with the admin token: %v %v", resp, err)
	}
	resp.Body.Close()
	waitFor(t, 10*time.Second, "the banner", func() bool { return strings.Contains(out.String(), "Next:") })
	banner := out.String()
	for _, want := range []string{"http://127.0.0.1:8080", "ggfleet-data/admin.token", "Default CA:", "POST http://127.0.0.1:8080/coreTasks"} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
	// A second broker on the same data dir refuses to start, saying why.
	second := exec.Command(filepath.Join(binDir, "ggfleet"), "serve", "--listen", freeAddr(t), "--mqtt-listen", freeAddr(t))
	second.Dir = dir
	msg, err := second.CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "in use by another ggfleet serve") {
		t.Fatalf("second broker on the same data dir: err %v, output %s", err, msg)
	}
	// SIGTERM shuts down cleanly.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("broker did not stop within 30s of SIGTERM")
	}
}

// TestServeTLSCert serves HTTPS with an operator's own certificate.
func TestServeTLSCert(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "broker.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)

	listen := freeAddr(t)
	cmd := exec.Command(filepath.Join(binDir, "ggfleet"), "serve", "--data-dir", filepath.Join(dir, "data"),
		"--listen", listen, "--mqtt-listen", freeAddr(t), "--tls-cert", certFile, "--tls-key", keyFile)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	waitFor(t, 60*time.Second, "https /healthz", func() bool {
		resp, err := client.Get("https://" + listen + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	// A bad pair is refused with a clear message.
	bad := exec.Command(filepath.Join(binDir, "ggfleet"), "serve", "--data-dir", filepath.Join(dir, "data2"),
		"--listen", freeAddr(t), "--mqtt-listen", freeAddr(t), "--tls-cert", certFile)
	msg, err := bad.CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "--tls-cert and --tls-key go together") {
		t.Fatalf("--tls-cert alone: %v %s", err, msg)
	}
}
