package server

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/broker/sqlstore"
)

// GCPercent is the garbage collector's target `ggfleet serve` runs with when
// GOGC is not set. The broker's live heap is small (tens of MiB) and its work
// allocation-heavy (TLS, SQL rows, JSON): collecting when the heap has tripled
// rather than doubled costs some tens of MiB and saves about a tenth of the CPU of a
// bulk provisioning task (BENCHMARKS.md, run 7).
const GCPercent = 200

// Config is everything `ggfleet serve` can be told. The cli package fills
// it from flags and GGFLEET_* variables; Validate reports every problem.
type Config struct {
	DataDir         string
	Listen          string
	MQTTListen      string
	MQTTAdvertise   string
	Provider        string
	DatabaseURL     string
	SecretsKeyFile  string
	TLSCert         string
	TLSKey          string
	TLSAuto         bool
	TLSHosts        []string
	PublicURL       string
	AWSRegion       string
	IoTRoleAlias    string
	MaxBodyBytes    int64
	Workers         int
	ShutdownTimeout time.Duration

	DeploymentTimeout time.Duration
	// PatchDispatchTimeout fails a dispatched patch no agent accepted (AGENT:NoAck); 0 means 24h.
	PatchDispatchTimeout time.Duration
	AssetLibraryURL      string
	Webhooks             []string
	WebhookSecretFile    string
	MetricsListen        string
	// PprofListen serves Go's profiles (CPU, heap, goroutines, execution
	// traces) without a token, so it must be a loopback address.
	PprofListen string
	// DownloadsDir holds the ggagent builds served at /downloads (make cross's dist/).
	DownloadsDir string

	// MQTTURL, when set, is the external MQTT broker used instead of the
	// embedded one; MQTTServerCAFile verifies it, MQTTClientID names this
	// replica there.
	MQTTURL          string
	MQTTServerCAFile string
	MQTTClientID     string
	// MQTTCRLFile and MQTTCAFile are written and kept current for an
	// external MQTT broker (its crlfile and cafile).
	MQTTCRLFile string
	MQTTCAFile  string

	// AWS provider (--provider aws).
	AWSEndpointURL  string            // one endpoint for every AWS service (tests, the awsfake)
	ArtifactsBucket string            // S3 bucket of certs.zip and installer configs
	ArtifactsPrefix string            // prepended to artifact keys in the bucket
	AWSQuotas       map[string]string // OPERATION=TPS overrides of the client-side rate limits
	EventBus        string            // EventBridge bus of the CDF events ("-" for none)
	AWSIoTCAFile    string            // PEM CA of the AWS IoT data endpoint ("" = Amazon Root CA 1)

	// awsDataEndpoint and awsCredEndpoint are learnt at start (aws mode).
	awsDataEndpoint, awsCredEndpoint string
	// awsJobPollInterval is how often deployment job executions are read (default 5s).
	awsJobPollInterval time.Duration

	Logger *slog.Logger
	// Banner receives the human start-up message (URL, token file, next steps).
	Banner io.Writer
}

// Validate checks the configuration and reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir must not be empty"))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen %q: want host:port", c.Listen))
	}
	if _, _, err := net.SplitHostPort(c.MQTTListen); err != nil {
		errs = append(errs, fmt.Errorf("--mqtt-listen %q: want host:port", c.MQTTListen))
	}
	if c.MQTTAdvertise != "" {
		if _, _, err := net.SplitHostPort(c.MQTTAdvertise); err != nil {
			errs = append(errs, fmt.Errorf("--mqtt-advertise %q: want host:port", c.MQTTAdvertise))
		}
	}
	if c.MQTTURL != "" {
		if u, err := url.Parse(c.MQTTURL); err != nil || u.Scheme != "mqtts" || u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
			errs = append(errs, fmt.Errorf("--mqtt-url %q: want mqtts://host:port", c.MQTTURL))
		}
		if c.MQTTServerCAFile == "" {
			errs = append(errs, errors.New("--mqtt-url needs --mqtt-server-ca-file: the PEM CA that verifies that broker's TLS certificate (devices get it at enrollment)"))
		}
	} else if c.MQTTServerCAFile != "" || (c.MQTTClientID != "" && c.Provider != "aws") {
		errs = append(errs, errors.New("--mqtt-server-ca-file and --mqtt-client-id only apply with --mqtt-url (and --mqtt-client-id with --provider aws)"))
	}
	if strings.ContainsAny(c.MQTTClientID, "+#/") {
		errs = append(errs, fmt.Errorf("--mqtt-client-id %q: must not contain '+', '#' or '/'", c.MQTTClientID))
	}
	switch c.Provider {
	case "local":
	case "aws":
		if c.ArtifactsBucket == "" {
			errs = append(errs, errors.New("--provider aws needs --artifacts-bucket: the S3 bucket for certs.zip and installer configs"))
		}
		if c.AWSEndpointURL != "" {
			if u, err := url.Parse(c.AWSEndpointURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				errs = append(errs, fmt.Errorf("--aws-endpoint-url %q: want http(s)://host[:port]", c.AWSEndpointURL))
			}
		}
		if _, err := c.awsLimits(); err != nil {
			errs = append(errs, err)
		}
		if c.MQTTURL != "" {
			errs = append(errs, errors.New("--mqtt-url does not apply with --provider aws: agents and the broker use AWS IoT Core"))
		}
	default:
		errs = append(errs, fmt.Errorf("--provider %q: use local or aws", c.Provider))
	}
	switch {
	case c.DatabaseURL == "", strings.HasPrefix(c.DatabaseURL, "sqlite:"):
	case c.postgres():
		if u, err := url.Parse(c.DatabaseURL); err != nil || u.Host == "" {
			errs = append(errs, fmt.Errorf("--database %q: want postgres://user[:password]@host[:port]/database[?sslmode=…]", sqlstore.RedactURL(c.DatabaseURL)))
		}
		if c.SecretsKeyFile == "" {
			errs = append(errs, errors.New("--database postgres://… needs --secrets-key-file: every replica must use the same key that encrypts the CA keys (docs/scaling.md)"))
		}
	default:
		errs = append(errs, fmt.Errorf("--database %q: use sqlite:/path/to/file.db, postgres://…, or nothing for SQLite in the data dir", sqlstore.RedactURL(c.DatabaseURL)))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if c.TLSAuto && c.TLSCert != "" {
		errs = append(errs, errors.New("use either --tls-auto or --tls-cert/--tls-key, not both"))
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--public-url %q: want http(s)://host[:port]", c.PublicURL))
		}
	}
	if c.MaxBodyBytes < 1024 {
		errs = append(errs, fmt.Errorf("--max-body-bytes %d: must be at least 1024", c.MaxBodyBytes))
	}
	if c.PatchDispatchTimeout < 0 {
		errs = append(errs, fmt.Errorf("--patch-dispatch-timeout %s: must not be negative", c.PatchDispatchTimeout))
	}
	if c.DeploymentTimeout < time.Second {
		errs = append(errs, fmt.Errorf("--deployment-timeout %s: must be at least 1s", c.DeploymentTimeout))
	}
	if c.AssetLibraryURL != "" {
		if u, err := url.Parse(c.AssetLibraryURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--asset-library-url %q: want http(s)://host[:port][/path]", c.AssetLibraryURL))
		}
	}
	for _, w := range c.Webhooks {
		if u, err := url.Parse(w); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--webhook %q: want an http(s) URL", w))
		}
	}
	if len(c.Webhooks) > 0 && c.WebhookSecretFile == "" {
		errs = append(errs, errors.New("--webhook needs --webhook-secret-file: deliveries are signed with its secret"))
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			errs = append(errs, fmt.Errorf("--metrics-listen %q: want host:port", c.MetricsListen))
		}
	}
	if c.PprofListen != "" {
		if err := loopbackAddr(c.PprofListen); err != nil {
			errs = append(errs, fmt.Errorf("--pprof-listen %q: %w", c.PprofListen, err))
		}
	}
	switch {
	case c.Workers < 0 || c.Workers > 64:
		errs = append(errs, fmt.Errorf("--workers %d: must be from 0 (an API-only replica) to 64", c.Workers))
	case c.Workers == 0 && !c.postgres():
		errs = append(errs, errors.New("--workers 0 (an API-only replica) needs --database postgres://…: on SQLite no other process can work the task batches"))
	}
	return errors.Join(errs...)
}

// loopbackAddr accepts host:port whose host is localhost or a loopback IP:
// what is served there needs no token, so it must not reach the network.
func loopbackAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port")
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return errors.New("want a loopback address such as 127.0.0.1:6060 (profiles are served without a token; reach a remote replica through an SSH tunnel)")
	}
	return nil
}

func (c *Config) tls() bool { return c.TLSAuto || c.TLSCert != "" }

// publicURL is how clients reach the API.
func (c *Config) publicURL() string {
	if c.PublicURL != "" {
		return strings.TrimRight(c.PublicURL, "/")
	}
	scheme := "http"
	if c.tls() {
		scheme = "https"
	}
	host, port, _ := net.SplitHostPort(c.Listen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// mqttEndpoint is the host:port enrollment tells devices.
func (c *Config) mqttEndpoint() string {
	if c.awsDataEndpoint != "" {
		return iotDataAddress(c.awsDataEndpoint)
	}
	if c.MQTTAdvertise != "" {
		return c.MQTTAdvertise
	}
	if c.MQTTURL != "" {
		if u, err := url.Parse(c.MQTTURL); err == nil {
			return u.Host
		}
	}
	host, port, _ := net.SplitHostPort(c.MQTTListen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// postgres reports whether the broker runs on PostgreSQL (replicas).
func (c *Config) postgres() bool {
	return strings.HasPrefix(c.DatabaseURL, "postgres://") || strings.HasPrefix(c.DatabaseURL, "postgresql://")
}

// eventPollInterval is how often webhook delivery looks for new events. On
// PostgreSQL events published by other replicas do not wake the leader's
// deliverers, so it polls often; 0 keeps the events package's default.
func (c *Config) eventPollInterval() time.Duration {
	if c.postgres() {
		return 2 * time.Second
	}
	return 0
}

func (c *Config) dbPath() string {
	if strings.HasPrefix(c.DatabaseURL, "sqlite:") {
		return strings.TrimPrefix(c.DatabaseURL, "sqlite:")
	}
	return filepath.Join(c.DataDir, "ggfleet.db")
}

func (c *Config) secretsKeyPath() string {
	if c.SecretsKeyFile != "" {
		return c.SecretsKeyFile
	}
	return filepath.Join(c.DataDir, "secrets.key")
}
