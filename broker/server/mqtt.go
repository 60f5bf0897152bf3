package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/broker/ca"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/mqttbus"
	"github.com/ggfleet/ggfleet/broker/mqttbus/external"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// BrokerClientCN is the certificate CN (and so, with Mosquitto's
// use_identity_as_username, the user name) of the broker at an external MQTT
// broker. The '.' cannot occur in a thing name, so no device certificate
// can ever carry it.
const BrokerClientCN = "ggfleet.broker"

// mqttBus is what the server uses of the MQTT side, embedded or external.
type mqttBus interface {
	Run(ctx context.Context) error
	Publish(ctx context.Context, thing, suffix string, payload []byte, retained bool) error
	Disconnect(thing string)
}

// chooseMQTTBus returns the embedded broker, or with --mqtt-url a client of
// the external broker that hands messages to the embedded one's handlers
// (the embedded broker is then never started). conns counts connected
// agents for the metrics; it is nil with an external broker.
func chooseMQTTBus(ctx context.Context, cfg Config, authority *ca.Authority, embedded *mqttbus.Bus, log *slog.Logger) (bus mqttBus, conns func() int, err error) {
	if cfg.MQTTURL == "" {
		return embedded, embedded.Connections, nil
	}
	roots, err := loadPool(cfg.MQTTServerCAFile)
	if err != nil {
		return nil, nil, err
	}
	cert := &clientCert{authority: authority, now: time.Now}
	if _, err := cert.get(ctx); err != nil {
		return nil, nil, err
	}
	id := cfg.MQTTClientID
	if id == "" {
		host, _ := os.Hostname()
		id = BrokerClientCN + "." + strings.NewReplacer("+", "-", "#", "-", "/", "-").Replace(host)
	}
	getCert := func() (tls.Certificate, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return cert.get(ctx)
	}
	ext, err := external.New(external.Config{URL: cfg.MQTTURL, ClientID: id, GetCertificate: getCert, RootCAs: roots,
		Handlers: embedded.Handlers(), Logger: log})
	if err != nil {
		return nil, nil, err
	}
	return ext, nil, nil
}

// loadPool reads a PEM file of CA certificates.
func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--mqtt-server-ca-file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--mqtt-server-ca-file %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// clientCert is the broker's own client certificate for the external MQTT
// broker, from the default CA: made at start, kept only in memory, and
// made again once half its validity has passed (used from the next
// reconnect on).
type clientCert struct {
	authority *ca.Authority
	now       func() time.Time

	mu      sync.Mutex
	cert    tls.Certificate
	renewAt time.Time
}

func (c *clientCert) get(ctx context.Context) (tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert.Leaf != nil && c.now().Before(c.renewAt) {
		return c.cert, nil
	}
	cert, err := brokerClientCertificate(ctx, c.authority)
	if err != nil {
		if c.cert.Leaf != nil && c.now().Before(c.cert.Leaf.NotAfter) {
			return c.cert, nil // still valid; try again next time
		}
		return tls.Certificate{}, err
	}
	c.cert = cert
	c.renewAt = cert.Leaf.NotBefore.Add(cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore) / 2)
	return cert, nil
}

// brokerClientCertificate issues a client certificate with the CN
// BrokerClientCN from the default CA.
func brokerClientCertificate(ctx context.Context, authority *ca.Authority) (tls.Certificate, error) {
	key, err := certs.GenerateKey(certs.ECP256)
	if err != nil {
		return tls.Certificate{}, err
	}
	certPEM, caPEM, err := authority.Issue(ctx, "", key.Public(), pkix.Name{CommonName: BrokerClientCN}, 0)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue the broker's MQTT client certificate: %w", err)
	}
	keyPEM, err := certs.EncodeKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	tc, err := tls.X509KeyPair([]byte(certPEM+caPEM), []byte(keyPEM))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("the broker's MQTT client certificate: %w", err)
	}
	if tc.Leaf == nil {
		if tc.Leaf, err = x509.ParseCertificate(tc.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("the broker's MQTT client certificate: %w", err)
		}
	}
	return tc, nil
}

// serverCAPEM is the CA enrollment gives devices to verify the MQTT broker:
// AWS IoT Core's (iotRootPEM) in aws mode, --mqtt-server-ca-file with an
// external broker, else the default CA.
func serverCAPEM(cfg Config, authority *ca.Authority) func(ctx context.Context) (string, error) {
	if cfg.Provider == "aws" {
		return func(context.Context) (string, error) { return iotRootPEM(cfg) }
	}
	if cfg.MQTTURL != "" {
		return func(context.Context) (string, error) {
			b, err := os.ReadFile(cfg.MQTTServerCAFile)
			if err != nil {
				return "", fmt.Errorf("--mqtt-server-ca-file: %w", err)
			}
			return string(b), nil
		}
	}
	return func(ctx context.Context) (string, error) {
		c, err := authority.Default(ctx)
		return c.CertificatePem, err
	}
}

// thingRevoker records a deleted core's certificates as revoked, for the
// CRL file (cores.CertificateRevoker).
type thingRevoker struct {
	prov provider.Provider
	crl  *ca.CRLFile
	now  func() time.Time
}

// RevokeThing revokes every certificate attached to thing; a thing that is
// already gone has nothing left to revoke.
func (r thingRevoker) RevokeThing(ctx context.Context, thing string) error {
	th, err := r.prov.DescribeThing(ctx, thing)
	if errkind.Is(err, errkind.NotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var rs []ca.Revoked
	for _, id := range th.Principals {
		c, err := r.prov.DescribeCertificate(ctx, id)
		if errkind.Is(err, errkind.NotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if c.PEM == "" {
			return errors.New("certificate " + id + " has no PEM to revoke")
		}
		rs = append(rs, ca.Revoked{CertID: id, CAID: c.CAID, CertificatePem: c.PEM, RevokedAt: r.now().UTC()})
	}
	return r.crl.Revoke(ctx, rs)
}
