package certs

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"
)

func TestKeysAndCSR(t *testing.T) {
	tests := []struct {
		alg     string
		wantAlg string
	}{{"", ECP256}, {ECP256, ECP256}, {RSA2048, RSA2048}}
	for _, tt := range tests {
		t.Run(tt.wantAlg+"/"+tt.alg, func(t *testing.T) {
			key, err := GenerateKey(tt.alg)
			if err != nil {
				t.Fatal(err)
			}
			if got := Algorithm(key.Public()); got != tt.wantAlg {
				t.Fatalf("Algorithm = %q, want %q", got, tt.wantAlg)
			}
			pemKey, err := EncodeKey(key)
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParseKey(pemKey)
			if err != nil {
				t.Fatal(err)
			}
			if Algorithm(back.Public()) != tt.wantAlg {
				t.Fatal("round trip changed the key algorithm")
			}
			csrPEM, err := NewCSR(key, "core-1")
			if err != nil {
				t.Fatal(err)
			}
			csr, err := ParseCSR(csrPEM)
			if err != nil {
				t.Fatal(err)
			}
			if csr.Subject.CommonName != "core-1" {
				t.Fatalf("CN = %q", csr.Subject.CommonName)
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	if _, err := GenerateKey("DSA"); err == nil {
		t.Error("GenerateKey(DSA) succeeded")
	}
	if _, err := ParseCSR("not a csr"); err == nil {
		t.Error("ParseCSR accepted garbage")
	}
	if _, err := ParseKey("-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n"); err == nil {
		t.Error("ParseKey accepted a FOO block")
	}
	if _, err := ParseCertificate(""); err == nil || !strings.Contains(err.Error(), "CERTIFICATE") {
		t.Errorf("ParseCertificate(\"\") = %v", err)
	}
}

func FuzzParseCSR(f *testing.F) {
	key, _ := GenerateKey("")
	good, _ := NewCSR(key, "core-1")
	f.Add(good)
	f.Add("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		csr, err := ParseCSR(s)
		if err == nil && csr == nil {
			t.Fatal("nil CSR without error")
		}
	})
}

func TestIDOfPEM(t *testing.T) {
	key, err := GenerateKey(ECP256)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "core-1"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := EncodeCertificate(der)
	keyPEM, err := EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseCertificate(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, pem, want string
	}{
		{"certificate", certPEM, ID(parsed)},
		{"after a key block", keyPEM + certPEM, ID(parsed)},
		{"no certificate", keyPEM, ""},
		{"not PEM", "hello", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := IDOfPEM(tt.pem)
			if got != tt.want || (err != nil) != (tt.want == "") {
				t.Errorf("IDOfPEM = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
