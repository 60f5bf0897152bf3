package awsfake

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// A standalone fake tells a broker or agent run against it where its data
// endpoint is and which root signed it; a certificate the registry does
// not have cannot connect.
func TestStandaloneDataEndpoint(t *testing.T) {
	f, err := Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	resp, err := http.Get(f.URL() + "/_fake/dataEndpoint")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Address   string `json:"address"`
		RootCAPem string `json:"rootCaPem"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Address != f.DataEndpoint() || !strings.HasPrefix(got.Address, "127.0.0.1:") || got.RootCAPem != f.RootCAPEM() {
		t.Fatalf("GET /_fake/dataEndpoint = %+v, want address %s and the root", got, f.DataEndpoint())
	}

	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(got.RootCAPem)) {
		t.Fatal("rootCaPem holds no certificate")
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "core-1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	opts := paho.NewClientOptions().AddBroker("tls://" + got.Address).SetClientID("core-1-ggagent").SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).
		SetTLSConfig(&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, RootCAs: roots,
			ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(30 * time.Second) {
		t.Fatal("no CONNACK within 30s")
	}
	if tok.Error() == nil {
		c.Disconnect(100)
		t.Fatal("an unregistered certificate connected")
	}
	if d := f.MQTTDenials(); len(d) != 1 || !strings.Contains(d[0], "is not registered and ACTIVE") {
		t.Fatalf("denials = %v", d)
	}
}
