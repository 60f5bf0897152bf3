// Package cli is the ggfleet command tree: `serve` runs the broker, the other
// subcommands (added by the operator-CLI work) talk to a broker's API. Every
// flag can also be given as a GGFLEET_* environment variable.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/broker/server"
	"github.com/ggfleet/ggfleet/internal/version"
	"github.com/spf13/pflag"
)

const usage = `ggfleet — provision and manage fleets of AWS IoT Greengrass V2 devices.

Usage:
  ggfleet serve [flags]     run the broker (embedded defaults: no cloud account needed)
  ggfleet version           print the version
  ggfleet <command> ...     operator commands, below

Run 'ggfleet serve --help' for the broker's flags. Every flag can also be set
with an environment variable: --mqtt-listen ↔ GGFLEET_MQTT_LISTEN.
`

// Run runs the command line args and returns the process exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage+clientUsage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, version.String("ggfleet"))
		return 0
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage+clientUsage)
		return 0
	case "templates", "provisioning-templates", "cas", "cores", "devices", "deploy", "tasks", "fleet", "events", "patch":
		return runClient(ctx, args, stdout, stderr)
	}
	fmt.Fprintf(stderr, "ggfleet: unknown command %q\n\n%s", args[0], usage+clientUsage)
	return 2
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("ggfleet serve", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg server.Config
	var logLevel, logFormat string
	fs.StringVar(&cfg.DataDir, "data-dir", "./ggfleet-data", "directory for the database, artifacts, secrets key and admin token")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "address of the HTTP API")
	fs.StringVar(&cfg.MQTTListen, "mqtt-listen", "127.0.0.1:8883", "address of the embedded MQTT broker (mutual TLS)")
	fs.StringVar(&cfg.MQTTAdvertise, "mqtt-advertise", "", "host:port that enrollment tells devices to connect to (default: --mqtt-listen, or the --mqtt-url host)")
	fs.StringVar(&cfg.MQTTURL, "mqtt-url", "", "use this external MQTT broker (mqtts://host:port, e.g. Mosquitto per docs/mosquitto.md) instead of the embedded one")
	fs.StringVar(&cfg.MQTTServerCAFile, "mqtt-server-ca-file", "", "PEM CA that verifies the --mqtt-url broker's TLS certificate; enrollment gives it to devices (required with --mqtt-url)")
	fs.StringVar(&cfg.MQTTClientID, "mqtt-client-id", "", "this replica's MQTT client id at the --mqtt-url broker, unique per replica (default: ggfleet.broker.<hostname>)")
	fs.StringVar(&cfg.MQTTCRLFile, "mqtt-crl-file", "", "write the CRLs of the broker's CAs (deleted cores' certificates) here and keep them current, for an external MQTT broker's crlfile")
	fs.StringVar(&cfg.MQTTCAFile, "mqtt-ca-file", "", "write the broker's CA certificates here and keep them current, for an external MQTT broker's cafile")
	fs.StringVar(&cfg.Provider, "provider", "local", "cloud provider: local (embedded, no account) or aws")
	fs.StringVar(&cfg.DatabaseURL, "database", "", "database URL (default: SQLite in the data dir)")
	fs.StringVar(&cfg.SecretsKeyFile, "secrets-key-file", "", "file with the 32-byte base64 key that encrypts CA keys (default: <data-dir>/secrets.key, created on first start)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "serve HTTPS with this certificate (PEM); needs --tls-key")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "private key (PEM) of --tls-cert")
	fs.BoolVar(&cfg.TLSAuto, "tls-auto", false, "serve HTTPS with a certificate from the broker's own CA (devices pin its SHA-256 with --ca-sha256)")
	fs.StringSliceVar(&cfg.TLSHosts, "tls-host", nil, "extra DNS names or IPs for the --tls-auto certificate (repeatable)")
	fs.StringVar(&cfg.PublicURL, "public-url", "", "URL devices and operators use to reach the API (default: derived from --listen)")
	fs.StringVar(&cfg.AWSRegion, "aws-region", "", "AWS region of the aws provider's calls and of generated installer configs; default: the SDK's (AWS_REGION, the shared config's profile), us-east-1 with --provider local")
	fs.StringVar(&cfg.AWSIoTCAFile, "aws-iot-ca-file", "", "PEM CA that verifies the AWS IoT data endpoint, for the broker and enrolled agents (--provider aws); default: Amazon Root CA 1")
	fs.StringVar(&cfg.AWSEndpointURL, "aws-endpoint-url", "", "send every AWS API call of --provider aws to this URL (tests, the awsfake); default: the real AWS endpoints")
	fs.StringVar(&cfg.ArtifactsBucket, "artifacts-bucket", "", "S3 bucket for certs.zip and installer configs (--provider aws)")
	fs.StringVar(&cfg.ArtifactsPrefix, "artifacts-prefix", "", "prefix of the artifact keys in --artifacts-bucket (--provider aws)")
	fs.StringToStringVar(&cfg.AWSQuotas, "aws-quota", nil, "client-side TPS limit of an AWS operation, OPERATION=TPS (repeatable; 0 = unlimited); defaults are AWS's default quotas, e.g. CreateThing=15")
	fs.StringVar(&cfg.EventBus, "eventbridge-bus", "default", "EventBridge bus the CDF events are also sent to with --provider aws (name or ARN; - for none)")
	fs.StringVar(&cfg.IoTRoleAlias, "iot-role-alias", "GreengrassV2TokenExchangeRoleAlias", "token exchange role alias written into generated installer configs")
	fs.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", 4<<20, "largest accepted request body")
	fs.IntVar(&cfg.Workers, "workers", 4, "task batches worked at once; 0 makes an API-only replica (PostgreSQL): the replicas started with workers run the bulk tasks")
	fs.DurationVar(&cfg.DeploymentTimeout, "deployment-timeout", 10*time.Minute, "how long a registered core has to report a deployment's outcome before it fails")
	fs.DurationVar(&cfg.PatchDispatchTimeout, "patch-dispatch-timeout", 24*time.Hour, "how long a dispatched patch may wait for its core's agent to accept it before it fails with AGENT:NoAck")
	fs.StringVar(&cfg.AssetLibraryURL, "asset-library-url", "", "base URL of a CDF Asset Library, for assetLibrary* deployment targets")
	fs.StringArrayVar(&cfg.Webhooks, "webhook", nil, "URL that receives every event as a signed POST (repeatable)")
	fs.StringVar(&cfg.WebhookSecretFile, "webhook-secret-file", "", "file holding the secret (at least 16 bytes) that signs webhook deliveries")
	fs.StringVar(&cfg.DownloadsDir, "downloads-dir", "", "directory of the ggagent builds served to devices at /downloads and used by /install.sh (make cross fills dist/ with ggagent_linux_<arch>)")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", "", "also serve /metrics without a token on this address (e.g. 127.0.0.1:9100)")
	fs.StringVar(&cfg.PprofListen, "pprof-listen", "", "serve Go's profiles at /debug/pprof/ without a token on this loopback address (e.g. 127.0.0.1:6060), for diagnosing CPU and memory use")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 20*time.Second, "how long to wait for requests and task batches on shutdown")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&logFormat, "log-format", "auto", "log format: text, json, or auto (json when stderr is not a terminal)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ggfleet serve [flags]\n\nRuns the broker. With no flags: data in ./ggfleet-data, API on http://127.0.0.1:8080, SQLite, local provider.\nEvery flag can also be set as GGFLEET_<FLAG> (e.g. GGFLEET_DATA_DIR).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String("ggfleet"))
		return 0
	}
	if err := applyEnv(fs, "GGFLEET"); err != nil {
		fmt.Fprintln(stderr, "ggfleet serve:", err)
		return 2
	}
	logger, err := newLogger(stderr, logLevel, logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "ggfleet serve:", err)
		return 2
	}
	cfg.Logger = logger
	cfg.Banner = stdout
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "ggfleet serve: invalid configuration:\n"+err.Error())
		return 2
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(server.GCPercent)
	}
	if err := server.Run(ctx, cfg); err != nil {
		fmt.Fprintln(stderr, "ggfleet serve:", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "auto", "":
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				return slog.New(slog.NewTextHandler(w, opts)), nil
			}
		}
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text, json or auto", format)
}
