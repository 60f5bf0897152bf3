package server

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/ca"
	"github.com/ggfleet/ggfleet/broker/mqttbus/external"
	awsprov "github.com/ggfleet/ggfleet/broker/provider/aws"
	"github.com/ggfleet/ggfleet/broker/provider/aws/awstest"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
)

// The aws-mode MQTT flags: --mqtt-client-id names the replica at IoT
// Core, --mqtt-url does not apply, and enrollment advertises the data
// endpoint on 8883 unless its address names a port.
func TestAWSMQTTFlags(t *testing.T) {
	for _, tc := range []struct {
		name     string
		set      func(*Config)
		wantErr  string
		endpoint string
	}{
		{"replica name", func(c *Config) { c.MQTTClientID = "r1" }, "", "abc-ats.iot.eu-west-1.amazonaws.com:8883"},
		{"external broker", func(c *Config) { c.MQTTURL, c.MQTTServerCAFile = "mqtts://mq:8883", "ca.pem" }, "--mqtt-url does not apply with --provider aws", ""},
		{"wildcard replica name", func(c *Config) { c.MQTTClientID = "r/1" }, "must not contain", ""},
		{"endpoint with a port", func(c *Config) { c.awsDataEndpoint = "127.0.0.1:41883" }, "", "127.0.0.1:41883"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			c.Provider, c.ArtifactsBucket, c.awsDataEndpoint = "aws", "bucket", "abc-ats.iot.eu-west-1.amazonaws.com"
			tc.set(&c)
			err := c.Validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Validate = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.mqttEndpoint(); got != tc.endpoint {
				t.Fatalf("mqttEndpoint = %q, want %q", got, tc.endpoint)
			}
		})
	}
}

// The IoT Core root: Amazon Root CA 1 unless --aws-iot-ca-file names one;
// a file without a certificate is an error naming the flag.
func TestIoTRoots(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "root.pem")
	if err := os.WriteFile(good, []byte(awsprov.AmazonRootCA1PEM), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file, wantErr string
	}{
		{"", ""},
		{good, ""},
		{empty, "no PEM certificate"},
		{filepath.Join(dir, "missing.pem"), "--aws-iot-ca-file"},
	} {
		_, err := iotRoots(Config{AWSIoTCAFile: tc.file})
		if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("iotRoots(%q) = %v, want error %q", tc.file, err, tc.wantErr)
		}
	}
	if pem, err := iotRootPEM(Config{}); err != nil || pem != awsprov.AmazonRootCA1PEM {
		t.Errorf("default root = %v, want Amazon Root CA 1", err)
	}
}

// /readyz fails while the database or the IoT Core connection is down.
func TestReadiness(t *testing.T) {
	down := errors.New("database down")
	if err := readiness(func(context.Context) error { return down }, nil)(context.Background()); !errors.Is(err, down) {
		t.Fatalf("database down: %v", err)
	}
	if err := readiness(func(context.Context) error { return nil }, nil)(context.Background()); err != nil {
		t.Fatalf("no IoT Core connection to wait for: %v", err)
	}
	notYet, err := external.New(external.Config{URL: "mqtts://127.0.0.1:8883", ClientID: "ggfleet-broker-r1",
		Certificate: tls.Certificate{Certificate: [][]byte{{0}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := readiness(func(context.Context) error { return nil }, notYet)(context.Background()); err == nil || !strings.Contains(err.Error(), "AWS IoT Core") {
		t.Fatalf("before the IoT Core connection is up: %v", err)
	}
}

// The broker's IoT Core certificate is reused from memory, and replaced
// (for the next handshake) once it is close to its expiry.
func TestIoTIdentityRenews(t *testing.T) {
	ctx := context.Background()
	prov, fake := awstest.NewProvider(t, nil)
	db := sqlstoretest.Open(t)
	key := make([]byte, ca.SecretsKeySize)
	authority := ca.New(ca.Config{Store: db, SecretsKey: key})
	if _, _, err := authority.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := registerCAs(ctx, prov, db, authority, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	id := &iotIdentity{prov: prov, cfg: awsprov.IdentityConfig{Store: db, Issuer: authority, SecretsKey: key}, now: func() time.Time { return now }}
	first, err := id.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	again, err := id.get(ctx)
	if err != nil || !again.Leaf.Equal(first.Leaf) {
		t.Fatalf("second get = %v, want the same certificate", err)
	}
	if n := fake.Calls("DescribeCertificate"); n != 0 {
		t.Fatalf("the cached certificate cost %d DescribeCertificate calls", n)
	}
	now = first.Leaf.NotAfter.Add(-24 * time.Hour)
	renewed, err := id.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if renewed.Leaf.Equal(first.Leaf) {
		t.Fatal("a certificate expiring tomorrow was kept")
	}
}
