package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/broker/ca"
	"github.com/ggfleet/ggfleet/broker/enroll"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/events"
	"github.com/ggfleet/ggfleet/broker/health"
	"github.com/ggfleet/ggfleet/broker/httpapi"
	"github.com/ggfleet/ggfleet/broker/mqttbus"
	"github.com/ggfleet/ggfleet/broker/mqttbus/external"
	"github.com/ggfleet/ggfleet/broker/provider"
	awsprov "github.com/ggfleet/ggfleet/broker/provider/aws"
	"github.com/ggfleet/ggfleet/broker/provider/local"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
)

// cloud is the provider --provider chose, with the other roles it plays.
type cloud struct {
	prov       provider.Provider
	enrollProv provider.Provider // what enrollment registers agent certificates with
	artifacts  interface {
		GetArtifact(context.Context, string) ([]byte, string, error)
	}
	authorizer mqttbus.Authorizer
	// registry and registrar are nil interfaces in aws mode: Greengrass
	// keeps the core registration there.
	registry   health.Registry
	registrar  enroll.Registrar
	forwarders []events.Forwarder
	// deployer delivers deployments through Greengrass (aws mode), else nil.
	deployer *greengrassDeployer
	// dataEndpoint and credEndpoint are the AWS IoT endpoints (aws mode).
	dataEndpoint, credEndpoint string
	// region is the AWS region in effect: the SDK's in aws mode, else
	// --aws-region or us-east-1 (written into installer configs).
	region string
	// aws is the aws provider (aws mode), else nil.
	aws   *awsprov.Provider
	close func() error
}

// defaultLocalRegion is the region local mode writes into installer
// configs when --aws-region is not given.
const defaultLocalRegion = "us-east-1"

// awsEndpointTimeout bounds the start-up DescribeEndpoint calls.
const awsEndpointTimeout = 30 * time.Second

// newCloud builds the provider named by cfg.Provider.
func newCloud(ctx context.Context, cfg Config, db *sqlstore.DB, log *slog.Logger) (cloud, error) {
	if cfg.Provider != "aws" {
		p, err := local.New(local.Config{Store: db.Registry(), ArtifactsDir: filepath.Join(cfg.DataDir, "artifacts"), Logger: log})
		if err != nil {
			return cloud{}, err
		}
		region := cfg.AWSRegion
		if region == "" {
			region = defaultLocalRegion
		}
		return cloud{prov: p, enrollProv: p, artifacts: p, authorizer: p, registry: p, registrar: p, region: region, close: p.Close}, nil
	}
	limits, err := cfg.awsLimits()
	if err != nil {
		return cloud{}, err
	}
	p, err := awsprov.New(ctx, awsprov.Config{
		Region: cfg.AWSRegion, EndpointURL: cfg.AWSEndpointURL,
		ArtifactsBucket: cfg.ArtifactsBucket, ArtifactsPrefix: cfg.ArtifactsPrefix,
		Limits: limits, Logger: log.With("provider", "aws"),
	})
	if err != nil {
		return cloud{}, err
	}
	epCtx, cancel := context.WithTimeout(ctx, awsEndpointTimeout)
	defer cancel()
	eps, err := p.DescribeEndpoints(epCtx)
	if err != nil {
		return cloud{}, fmt.Errorf("aws provider: find the AWS IoT endpoints (check credentials, region and iot:DescribeEndpoint permission): %w", err)
	}
	if _, err := p.PutPolicy(epCtx, awsprov.AgentPolicyName, awsprov.AgentPolicyDocument); err != nil {
		return cloud{}, fmt.Errorf("aws provider: create the agent policy %q: %w", awsprov.AgentPolicyName, err)
	}
	c := cloud{prov: p, enrollProv: agentPolicyAttacher{Provider: p}, deployer: newGreengrassDeployer(p, log, cfg.awsJobPollInterval), artifacts: p, authorizer: p,
		dataEndpoint: eps.Data, credEndpoint: eps.Credential, region: p.Region(), aws: p, close: func() error { return nil }}
	if cfg.EventBus != "-" {
		bus := cfg.EventBus
		c.forwarders = []events.Forwarder{{Name: "eventbridge:" + bus, Batch: 10, Send: func(ctx context.Context, evs []events.Event) error {
			entries := make([]awsprov.EventEntry, len(evs))
			for i, ev := range evs {
				entries[i] = awsprov.EventEntry{Source: ev.Source, DetailType: ev.DetailType, Detail: string(ev.Detail), Time: ev.Time}
			}
			return p.PutEvents(ctx, bus, entries)
		}}}
	}
	log.Info("aws provider ready", "region", c.region, "iotDataEndpoint", eps.Data, "credentialEndpoint", eps.Credential,
		"artifacts", "s3://"+cfg.ArtifactsBucket+"/"+cfg.ArtifactsPrefix, "eventBus", cfg.EventBus)
	return c, nil
}

// awsLimits parses --aws-quota OPERATION=TPS overrides.
func (c *Config) awsLimits() (map[string]float64, error) {
	if len(c.AWSQuotas) == 0 {
		return nil, nil
	}
	out := map[string]float64{}
	keys := make([]string, 0, len(c.AWSQuotas))
	for k := range c.AWSQuotas {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, op := range keys {
		v, err := strconv.ParseFloat(strings.TrimSpace(c.AWSQuotas[op]), 64)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("--aws-quota %s=%s: want OPERATION=TPS with a number >= 0 (0 removes the limit), e.g. CreateThing=50", op, c.AWSQuotas[op])
		}
		if _, known := awsprov.DefaultLimits[op]; !known {
			return nil, fmt.Errorf("--aws-quota %s: not an operation the broker calls; known: %s", op, strings.Join(knownOps(), ", "))
		}
		out[op] = v
	}
	return out, nil
}

func knownOps() []string {
	ops := make([]string, 0, len(awsprov.DefaultLimits))
	for op := range awsprov.DefaultLimits {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	return ops
}

// agentPolicyAttacher is the provider enrollment uses in aws mode: a
// certificate attached to a core's thing also gets the agent policy, so
// the agent can connect to AWS IoT Core as <thing>-ggagent. It embeds the
// aws provider itself so enrollment sees its CreateCertificateFromCsr and
// DeleteCertificate (enroll.CSRSigner, enroll.CertificateDeleter).
type agentPolicyAttacher struct {
	*awsprov.Provider
}

func (a agentPolicyAttacher) AttachThingPrincipal(ctx context.Context, thing, certID string) error {
	if err := a.Provider.AttachThingPrincipal(ctx, thing, certID); err != nil {
		return err
	}
	return a.Provider.AttachPolicy(ctx, awsprov.AgentPolicyName, certID)
}

// iotCoreBus is the broker's own connection to the AWS IoT Core data
// endpoint (aws mode): with the broker identity (awsprov.BrokerIdentity,
// shared by every replica) and the client id ggfleet-broker-<replica>, it
// consumes what agents publish through shared subscriptions, so replicas
// split the messages, with the same dispatch as --mqtt-url; patch jobs and
// other broker → device messages are published through it too.
func iotCoreBus(ctx context.Context, cfg Config, cl cloud, db *sqlstore.DB, issuer awsprov.CertificateIssuer, secretsKey []byte,
	handlers mqttbus.Handlers, log *slog.Logger) (*external.Bus, error) {
	roots, err := iotRoots(cfg)
	if err != nil {
		return nil, err
	}
	id := &iotIdentity{prov: cl.aws, cfg: awsprov.IdentityConfig{Store: db, Issuer: issuer, SecretsKey: secretsKey}, now: time.Now}
	idCtx, cancel := context.WithTimeout(ctx, awsEndpointTimeout)
	defer cancel()
	if _, err := id.get(idCtx); err != nil {
		return nil, fmt.Errorf("aws provider: %w", err)
	}
	getCert := func() (tls.Certificate, error) {
		ctx, cancel := context.WithTimeout(context.Background(), awsEndpointTimeout)
		defer cancel()
		return id.get(ctx)
	}
	clientID := awsprov.BrokerClientIDPrefix + replicaName(cfg)
	bus, err := external.New(external.Config{URL: "mqtts://" + iotDataAddress(cl.dataEndpoint), ClientID: clientID,
		GetCertificate: getCert, RootCAs: roots, Handlers: handlers, Logger: log.With("mqtt", "aws-iot-core")})
	if err != nil {
		return nil, fmt.Errorf("aws provider: the AWS IoT Core connection: %w", err)
	}
	return bus, nil
}

// iotIdentity is the broker's IoT Core certificate as the TLS handshakes
// ask for it: kept in memory, and taken again from BrokerIdentity (which
// replaces it, once for all replicas) when it is within
// awsprov.BrokerIdentityRenewBefore of its expiry, so a long-running
// broker reconnects with the new one.
type iotIdentity struct {
	prov *awsprov.Provider
	cfg  awsprov.IdentityConfig
	now  func() time.Time

	mu   sync.Mutex
	cert tls.Certificate
}

func (i *iotIdentity) get(ctx context.Context) (tls.Certificate, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.cert.Leaf != nil && i.now().Add(awsprov.BrokerIdentityRenewBefore).Before(i.cert.Leaf.NotAfter) {
		return i.cert, nil
	}
	cfg := i.cfg
	cfg.Now = i.now
	c, err := i.prov.BrokerIdentity(ctx, cfg)
	if err != nil {
		if i.cert.Leaf != nil && i.now().Before(i.cert.Leaf.NotAfter) {
			return i.cert, nil // still valid; try again at the next handshake
		}
		return tls.Certificate{}, err
	}
	i.cert = c
	return c, nil
}

// replicaName names this replica in its MQTT client id: --mqtt-client-id,
// else the host name (unique per replica in a cluster).
func replicaName(cfg Config) string {
	name := cfg.MQTTClientID
	if name == "" {
		name, _ = os.Hostname()
	}
	return strings.NewReplacer("+", "-", "#", "-", "/", "-").Replace(name)
}

// iotDataAddress is the host:port of the AWS IoT data endpoint: the address
// DescribeEndpoint returned, on port 8883 unless it names a port (the
// awsfake's does).
func iotDataAddress(endpoint string) string {
	if _, _, err := net.SplitHostPort(endpoint); err == nil {
		return endpoint
	}
	return net.JoinHostPort(endpoint, "8883")
}

// iotRootPEM is the CA that verifies AWS IoT Core's data endpoint:
// --aws-iot-ca-file, or Amazon Root CA 1.
func iotRootPEM(cfg Config) (string, error) {
	if cfg.AWSIoTCAFile == "" {
		return awsprov.AmazonRootCA1PEM, nil
	}
	b, err := os.ReadFile(cfg.AWSIoTCAFile)
	if err != nil {
		return "", fmt.Errorf("--aws-iot-ca-file: %w", err)
	}
	return string(b), nil
}

func iotRoots(cfg Config) (*x509.CertPool, error) {
	pemText, err := iotRootPEM(cfg)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(pemText)) {
		return nil, fmt.Errorf("--aws-iot-ca-file %s: no PEM certificate in it", cfg.AWSIoTCAFile)
	}
	return pool, nil
}

// readiness is /readyz's check: the database answers and, in aws mode,
// the connection to AWS IoT Core is up and subscribed.
func readiness(ping func(context.Context) error, iot *external.Bus) func(context.Context) error {
	return func(ctx context.Context) error {
		if err := ping(ctx); err != nil {
			return err
		}
		if iot != nil && !iot.Connected() {
			return errors.New("not connected to AWS IoT Core (see the log)")
		}
		return nil
	}
}

// caRegistrar registers the broker's CAs with the cloud, so the device
// certificates they sign can be registered there. The aws provider
// implements it; local mode has nothing to register with.
type caRegistrar interface {
	RegisterCA(ctx context.Context, issuer awsprov.CertificateIssuer, caID, caPEM string) error
}

// caRegisterActions are the IAM actions RegisterCA needs, for start-up errors.
const caRegisterActions = "iot:DescribeCACertificate, iot:GetRegistrationCode, iot:RegisterCACertificate"

// registerCAs registers every CA the broker holds (the default one and any
// generated or imported) with AWS IoT, once per start, under a database
// lock so replicas starting together do not race. A CA an operator
// deactivated in AWS IoT is left so and logged; any other failure stops
// the start.
func registerCAs(ctx context.Context, reg caRegistrar, db *sqlstore.DB, authority *ca.Authority, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, awsEndpointTimeout)
	defer cancel()
	return db.WithLock(ctx, "aws-register-cas", func(ctx context.Context) error {
		list, err := authority.List(ctx)
		if err != nil {
			return fmt.Errorf("aws provider: list the certificate authorities to register with AWS IoT: %w", err)
		}
		for _, c := range list {
			err := reg.RegisterCA(ctx, authority, c.ID, c.CertificatePem)
			if errkind.Is(err, errkind.Conflict) {
				log.Warn("a certificate authority is not active in AWS IoT: devices it signs cannot be registered", "caId", c.ID, "err", err)
				continue
			}
			if err != nil {
				return fmt.Errorf("aws provider: register certificate authority %s (%s) with AWS IoT (needs %s): %w", c.ID, c.Subject, caRegisterActions, err)
			}
		}
		return nil
	})
}

// registeringCAs is the CA service the API uses in aws mode: a CA
// generated or imported through POST /certificateAuthorities is
// registered with AWS IoT before the request answers.
type registeringCAs struct {
	*ca.Authority
	reg caRegistrar
}

var _ httpapi.CAService = registeringCAs{}

func (r registeringCAs) Import(ctx context.Context, certPEM, keyPEM string) (ca.CA, error) {
	c, err := r.Authority.Import(ctx, certPEM, keyPEM)
	if err != nil {
		return c, err
	}
	return c, r.register(ctx, c)
}

func (r registeringCAs) Generate(ctx context.Context, commonName string, days int, keyAlg string) (ca.CA, error) {
	c, err := r.Authority.Generate(ctx, commonName, days, keyAlg)
	if err != nil {
		return c, err
	}
	return c, r.register(ctx, c)
}

// register registers a CA just stored; on failure the CA stays stored and
// the next start registers it again.
func (r registeringCAs) register(ctx context.Context, c ca.CA) error {
	if err := r.reg.RegisterCA(ctx, r.Authority, c.ID, c.CertificatePem); err != nil {
		return errkind.Wrap(errkind.Unavailable, err,
			"certificate authority %s was stored but not registered with AWS IoT (needs %s); the broker registers it again at its next start", c.ID, caRegisterActions)
	}
	return nil
}

// caService is the CA service the API uses: the authority, registering
// new CAs with the cloud when the provider can.
func caService(authority *ca.Authority, cl cloud) httpapi.CAService {
	if cl.aws == nil {
		return authority
	}
	return registeringCAs{Authority: authority, reg: cl.aws}
}
