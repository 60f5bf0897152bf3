package identity

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/agent/identity/identitytest"
	"github.com/ggfleet/ggfleet/agent/statedir"
	"github.com/ggfleet/ggfleet/shared/apiclient"
	"github.com/ggfleet/ggfleet/shared/certs"
)

type fakeBroker struct{ *identitytest.Broker }

func newFakeBroker(t *testing.T, useTLS bool) fakeBroker {
	return fakeBroker{identitytest.NewBroker(t, useTLS)}
}

func openDir(t *testing.T) *statedir.Dir {
	t.Helper()
	d, err := statedir.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (fb fakeBroker) opts(d *statedir.Dir, core string) EnrollOptions {
	return EnrollOptions{BrokerURL: fb.URL(), Core: core, Token: fb.Token(core), Dir: d}
}

func hasIdentity(t *testing.T, d *statedir.Dir) bool {
	t.Helper()
	ok, err := d.Exists(statedir.IdentityFile)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestEnrollHappyPath(t *testing.T) {
	fb := newFakeBroker(t, false)
	d := openDir(t)
	fixed := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	opts := fb.opts(d, "core-1")
	opts.Now = func() time.Time { return fixed }
	id, err := Enroll(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if id.AlreadyEnrolled || id.ThingName != "core-1" || id.Mode != ModeLocal || id.MQTTEndpoint != "127.0.0.1:8883" ||
		id.BrokerURL != fb.URL() || id.CASHA256 != fb.CA.SHA256() || !id.EnrolledAt.Equal(fixed) {
		t.Fatalf("identity %+v", id)
	}
	for name, mode := range map[string]os.FileMode{
		statedir.KeyFile: 0o600, statedir.CertFile: 0o644, statedir.CAFile: 0o644,
		statedir.ServerCAFile: 0o644, statedir.InstallerConfigFile: 0o644, statedir.IdentityFile: 0o644,
	} {
		fi, err := os.Stat(d.File(name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s mode %04o, want %04o", name, fi.Mode().Perm(), mode)
		}
	}
	b, _ := d.ReadFile(statedir.IdentityFile)
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "thingName", "brokerUrl", "mqttEndpoint", "mode", "caSha256", "enrolledAt"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("identity.json lacks %q: %s", k, b)
		}
	}
	if len(raw) != 7 {
		t.Errorf("identity.json has extra members: %s", b)
	}
	keyPEM, _ := d.ReadFile(statedir.KeyFile)
	key, err := certs.ParseKey(string(keyPEM))
	if err != nil || certs.Algorithm(key.Public()) != certs.ECP256 {
		t.Fatalf("device key: %v %v", certs.Algorithm(key.Public()), err)
	}

	loaded, err := Load(d)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.ThingName != "core-1" || loaded.ClientID() != "core-1" || loaded.CertificateNotAfter().IsZero() ||
		!loaded.CertificateNotAfter().Equal(id.CertificateNotAfter()) {
		t.Fatalf("loaded %+v, not after %v", loaded, loaded.CertificateNotAfter())
	}
}

func TestEnrollRerunIsANoOp(t *testing.T) {
	fb := newFakeBroker(t, false)
	d := openDir(t)
	opts := fb.opts(d, "core-1")
	if _, err := Enroll(t.Context(), opts); err != nil {
		t.Fatal(err)
	}
	before, _ := d.ReadFile(statedir.IdentityFile)
	// The same (now spent) token and a trailing slash: still nothing to do.
	opts.BrokerURL += "/"
	id, err := Enroll(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if !id.AlreadyEnrolled || id.ThingName != "core-1" {
		t.Fatalf("second Enroll = %+v", id)
	}
	if n := fb.Calls(); n != 1 {
		t.Fatalf("the broker was called %d times, want 1", n)
	}
	after, _ := d.ReadFile(statedir.IdentityFile)
	if string(before) != string(after) {
		t.Fatal("identity.json changed on a re-run")
	}
}

func TestEnrollOtherCoreOrBroker(t *testing.T) {
	fb := newFakeBroker(t, false)
	d := openDir(t)
	if _, err := Enroll(t.Context(), fb.opts(d, "core-1")); err != nil {
		t.Fatal(err)
	}
	_, err := Enroll(t.Context(), fb.opts(d, "core-2"))
	if err == nil || !strings.Contains(err.Error(), `core "core-1"`) || !strings.Contains(err.Error(), "another --state-dir") {
		t.Fatalf("other core: err = %v", err)
	}
	opts := fb.opts(d, "core-1")
	opts.BrokerURL = "http://other.example:8080"
	_, err = Enroll(t.Context(), opts)
	if err == nil || !strings.Contains(err.Error(), "from the broker "+fb.URL()) {
		t.Fatalf("other broker: err = %v", err)
	}
	if n := fb.Calls(); n != 1 {
		t.Fatalf("the broker was called %d times, want 1", n)
	}
}

func TestEnrollRefused(t *testing.T) {
	fb := newFakeBroker(t, false)
	tests := []struct {
		name string
		opts func(d *statedir.Dir) EnrollOptions
	}{
		{"used token", func(d *statedir.Dir) EnrollOptions {
			o := fb.opts(d, "core-1")
			used := fb.opts(openDir(t), "core-1")
			used.Token = o.Token
			if _, err := Enroll(t.Context(), used); err != nil {
				t.Fatal(err)
			}
			return o
		}},
		{"unknown token", func(d *statedir.Dir) EnrollOptions {
			o := fb.opts(d, "core-1")
			o.Token = "gge_nope"
			return o
		}},
		{"token of another core", func(d *statedir.Dir) EnrollOptions {
			o := fb.opts(d, "core-1")
			o.Token = fb.Token("core-9")
			return o
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := openDir(t)
			_, err := Enroll(t.Context(), tc.opts(d))
			apiErr, ok := errors.AsType[*apiclient.APIError](err)
			if !ok || apiErr.Status != 401 || !strings.Contains(err.Error(), "enrollment token is not valid: make a new one") {
				t.Fatalf("err = %v, want the broker's 401 message", err)
			}
			if hasIdentity(t, d) {
				t.Fatal("a refused enrollment wrote identity.json")
			}
			if _, err := Load(d); !errors.Is(err, ErrNotEnrolled) {
				t.Fatalf("Load after refusal: %v", err)
			}
		})
	}
}

func TestEnrollPinnedTLS(t *testing.T) {
	fb := newFakeBroker(t, true)
	other := identitytest.NewCA(t, "other")

	d := openDir(t)
	opts := fb.opts(d, "core-1")
	opts.CASHA256 = other.SHA256()
	_, err := Enroll(t.Context(), opts)
	if err == nil || !strings.Contains(err.Error(), "not signed by the pinned CA "+other.SHA256()) {
		t.Fatalf("wrong pin: err = %v", err)
	}
	if hasIdentity(t, d) || fb.Calls() != 0 {
		t.Fatalf("wrong pin: identity written or broker called (%d)", fb.Calls())
	}

	opts.CASHA256 = fb.CA.SHA256()
	id, err := Enroll(t.Context(), opts)
	if err != nil {
		t.Fatalf("right pin: %v", err)
	}
	if id.CASHA256 != fb.CA.SHA256() {
		t.Fatalf("caSha256 %s, want %s", id.CASHA256, fb.CA.SHA256())
	}
}

func TestEnrollRSA(t *testing.T) {
	fb := newFakeBroker(t, false)
	d := openDir(t)
	opts := fb.opts(d, "core-rsa")
	opts.KeyAlgorithm = certs.RSA2048
	id, err := Enroll(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := id.Certificate().PublicKey.(*rsa.PublicKey); !ok {
		t.Fatalf("certificate key is %T, want RSA", id.Certificate().PublicKey)
	}
	if _, err := id.TLSConfig(); err != nil {
		t.Fatal(err)
	}
}

func TestEnrollReusesKeyOfInterruptedEnrollment(t *testing.T) {
	fb := newFakeBroker(t, false)
	d := openDir(t)
	key, _ := certs.GenerateKey(certs.ECP256)
	text, _ := certs.EncodeKey(key)
	// An earlier run saved its key and certificate but crashed before identity.json.
	if err := d.WriteFile(statedir.KeyFile, []byte(text), statedir.SecretMode); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteFile(statedir.CertFile, []byte("stale"), statedir.PublicMode); err != nil {
		t.Fatal(err)
	}
	id, err := Enroll(t.Context(), fb.opts(d, "core-1"))
	if err != nil {
		t.Fatal(err)
	}
	if !key.Public().(*ecdsa.PublicKey).Equal(id.Certificate().PublicKey) {
		t.Fatal("the key of the interrupted enrollment was not reused")
	}
}

func TestEnrollCorruptIdentityIsRedone(t *testing.T) {
	fb := newFakeBroker(t, false)
	d := openDir(t)
	if err := d.WriteFile(statedir.IdentityFile, []byte(`{"version":1,"thingN`), statedir.PublicMode); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(d); !errors.Is(err, statedir.ErrCorrupt) {
		t.Fatalf("Load = %v, want ErrCorrupt", err)
	}
	if _, err := Enroll(t.Context(), fb.opts(d, "core-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(d); err != nil {
		t.Fatal(err)
	}
}

func TestEnrollRejectsWrongCertificate(t *testing.T) {
	fb := newFakeBroker(t, false)
	fb.WrongKey = true
	d := openDir(t)
	_, err := Enroll(t.Context(), fb.opts(d, "core-1"))
	if err == nil || !strings.Contains(err.Error(), "not for this device's key") {
		t.Fatalf("err = %v", err)
	}
	if hasIdentity(t, d) {
		t.Fatal("identity.json written for a wrong certificate")
	}
	if ok, _ := d.Exists(statedir.CertFile); ok {
		t.Fatal("device.crt written for a wrong certificate")
	}
}

func TestEnrollValidates(t *testing.T) {
	d := openDir(t)
	tests := []struct {
		name string
		opts EnrollOptions
		want string
	}{
		{"no broker", EnrollOptions{Core: "c", Token: "t", Dir: d}, "--broker is required"},
		{"bad broker", EnrollOptions{BrokerURL: "broker:80", Core: "c", Token: "t", Dir: d}, "not a valid URL"},
		{"bad core", EnrollOptions{BrokerURL: "http://b", Core: "a:b", Token: "t", Dir: d}, "not a valid core name"},
		{"no token", EnrollOptions{BrokerURL: "http://b", Core: "c", Dir: d}, "--token is required"},
		{"bad pin", EnrollOptions{BrokerURL: "http://b", Core: "c", Token: "t", CASHA256: "zz", Dir: d}, "--ca-sha256"},
		{"bad algorithm", EnrollOptions{BrokerURL: "http://b", Core: "c", Token: "t", KeyAlgorithm: "DSA", Dir: d}, "--key-algorithm"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Enroll(t.Context(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestLoadNotEnrolled(t *testing.T) {
	d := openDir(t)
	_, err := Load(d)
	if !errors.Is(err, ErrNotEnrolled) || !strings.Contains(err.Error(), "not enrolled: run ggagent enroll") {
		t.Fatalf("err = %v", err)
	}
}

func TestClientID(t *testing.T) {
	tests := []struct {
		mode, want string
	}{
		{ModeLocal, "core-1"},
		{ModeAWS, "core-1-ggagent"},
	}
	for _, tc := range tests {
		if got := (Identity{ThingName: "core-1", Mode: tc.mode}).ClientID(); got != tc.want {
			t.Errorf("mode %s: ClientID = %q, want %q", tc.mode, got, tc.want)
		}
	}
}

// TestTLSConfigHandshake proves the TLS config does mutual TLS with a
// broker whose certificate comes from server-ca.pem.
func TestTLSConfigHandshake(t *testing.T) {
	fb := newFakeBroker(t, false)
	d := openDir(t)
	id, err := Enroll(t.Context(), fb.opts(d, "core-1"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := id.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServerName != "127.0.0.1" {
		t.Fatalf("ServerName %q", cfg.ServerName)
	}
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(fb.CA.Cert)
	c1, c2 := net.Pipe()
	server := tls.Server(c2, &tls.Config{
		Certificates: []tls.Certificate{fb.CA.ServerCertificate(t, "127.0.0.1")},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: clientCAs,
	})
	client := tls.Client(c1, cfg)
	errc := make(chan error, 1)
	go func() { errc <- server.HandshakeContext(t.Context()) }()
	if err := client.HandshakeContext(t.Context()); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if cn := server.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "core-1" {
		t.Fatalf("the broker saw CN %q", cn)
	}
	client.Close()
	server.Close()
}
