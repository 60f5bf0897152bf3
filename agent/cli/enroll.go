package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/agent/identity"
	"github.com/ggfleet/ggfleet/agent/statedir"
	"github.com/ggfleet/ggfleet/internal/version"
	"github.com/ggfleet/ggfleet/shared/certs"
)

func enroll(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := newCommand("enroll", "--broker URL --core NAME --token TOKEN [flags]",
		"Obtains this device's identity from the broker with a one-time enrollment token\n(POST /cores/NAME/enrollmentTokens on the broker). The private key is generated here\nand never leaves the device; only a certificate signing request is sent. Re-running\nit on an enrolled device does nothing and spends no token.\n", stderr)
	var opts identity.EnrollOptions
	var stateDir, logLevel, logFormat string
	c.fs.StringVar(&opts.BrokerURL, "broker", "", "broker URL, e.g. https://broker.example:8080 (required)")
	c.fs.StringVar(&opts.Core, "core", "", "core name the token was made for (required)")
	c.fs.StringVar(&opts.Token, "token", "", "one-time enrollment token (required; prefer GGAGENT_TOKEN, which other users cannot see in ps)")
	c.fs.StringVar(&opts.CASHA256, "ca-sha256", "", "pin the broker's CA: hex SHA-256 of its certificate (caId in GET /certificateAuthorities)")
	c.fs.StringVar(&opts.KeyAlgorithm, "key-algorithm", certs.ECP256, "device key algorithm: "+certs.ECP256+" or "+certs.RSA2048)
	c.fs.StringVar(&stateDir, "state-dir", statedir.DefaultPath, "state directory for the key, certificates and identity")
	c.fs.StringVar(&logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	c.fs.StringVar(&logFormat, "log-format", "text", "log format: text, json, or auto")
	if code, done := c.parse(args, stderr); done {
		return code
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"--broker", opts.BrokerURL}, {"--core", opts.Core}, {"--token", opts.Token}} {
		if strings.TrimSpace(f.v) == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		verb := "are"
		if len(missing) == 1 {
			verb = "is"
		}
		fmt.Fprintf(stderr, "ggagent enroll: %s %s required (run 'ggagent enroll --help')\n", strings.Join(missing, ", "), verb)
		return ExitUsage
	}
	if err := opts.Validate(); err != nil {
		return c.fail(stderr, ExitUsage, err)
	}
	logger, err := newLogger(stderr, logLevel, logFormat)
	if err != nil {
		return c.fail(stderr, ExitUsage, err)
	}
	if strings.HasPrefix(strings.ToLower(strings.TrimSpace(opts.BrokerURL)), "http://") {
		fmt.Fprintln(stderr, "ggagent enroll: warning: the broker URL is plain http://: the token and certificates travel unencrypted and the broker is not authenticated; use https:// (with --ca-sha256) outside local development")
	}
	dir, err := statedir.Open(stateDir)
	if err != nil {
		return c.fail(stderr, ExitFailure, err)
	}
	opts.Dir = dir
	opts.Logger = logger
	opts.UserAgent = "ggagent/" + version.Version
	id, err := identity.Enroll(ctx, opts)
	if err != nil {
		return c.fail(stderr, ExitFailure, err)
	}
	if id.AlreadyEnrolled {
		fmt.Fprintf(stdout, "Already enrolled as core %q with %s: nothing to do (no token was spent).\n", id.ThingName, id.BrokerURL)
	} else {
		fmt.Fprintf(stdout, "Enrolled core %q with %s (mode %s).\n", id.ThingName, id.BrokerURL, id.Mode)
	}
	printIdentity(stdout, id, time.Now())
	fmt.Fprintf(stdout, "Next: ggagent run --state-dir %s\n", dir.Path())
	return ExitOK
}

// printIdentity writes the identity block shared by enroll and status.
func printIdentity(w io.Writer, id identity.Identity, now time.Time) {
	fmt.Fprintf(w, "  Thing name:      %s\n", id.ThingName)
	fmt.Fprintf(w, "  Broker:          %s (mode %s)\n", id.BrokerURL, id.Mode)
	fmt.Fprintf(w, "  MQTT endpoint:   %s (client id %s)\n", id.MQTTEndpoint, id.ClientID())
	fmt.Fprintf(w, "  Broker CA:       sha256 %s\n", id.CASHA256)
	if !id.EnrolledAt.IsZero() {
		fmt.Fprintf(w, "  Enrolled at:     %s\n", id.EnrolledAt.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "  Certificate:     %s\n", expiry(id.CertificateNotAfter(), now))
}

// expiry describes a certificate's end of validity relative to now.
func expiry(notAfter, now time.Time) string {
	at := notAfter.UTC().Format(time.RFC3339)
	left := notAfter.Sub(now)
	switch {
	case notAfter.IsZero():
		return "unknown expiry"
	case left <= 0:
		return fmt.Sprintf("EXPIRED at %s: enroll again with a new token", at)
	case left < 48*time.Hour:
		return fmt.Sprintf("expires at %s (in %s)", at, left.Round(time.Minute))
	}
	return fmt.Sprintf("expires at %s (in %d days)", at, int(left.Hours()/24))
}
