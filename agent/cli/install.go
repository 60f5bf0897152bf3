package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/agent/statedir"
	"github.com/ggfleet/ggfleet/installer"
	"github.com/ggfleet/ggfleet/shared/certs"
	"github.com/spf13/pflag"
)

func install(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := newCommand("install", "--broker URL (--core NAME --token TOKEN | --certs-zip F --installer-config F) [flags]",
		"Turns this device into a managed Greengrass core: preflight checks, enrollment, the\nGreengrass nucleus (with user ggc_user:ggc_group), the ggagent systemd service, and a wait\nfor the first acknowledged health report. Safe to re-run: finished steps are skipped.\nMust run as root on a systemd-booted system. --dry-run prints the plan and changes nothing.\n", stderr)
	var o installer.Options
	var dryRun bool
	var logLevel string
	c.fs.StringVar(&o.BrokerURL, "broker", "", "broker URL, e.g. https://broker.example:8080 (required)")
	c.fs.StringVar(&o.Core, "core", "", "core name the token was made for")
	c.fs.StringVar(&o.Token, "token", "", "one-time enrollment token (prefer GGAGENT_TOKEN, which other users cannot see in ps)")
	c.fs.StringVar(&o.CASHA256, "ca-sha256", "", "pin the broker's CA: hex SHA-256 of its certificate")
	c.fs.StringVar(&o.KeyAlgorithm, "key-algorithm", certs.ECP256, "device key algorithm: "+certs.ECP256+" or "+certs.RSA2048)
	c.fs.StringVar(&o.CertsZip, "certs-zip", "", "the CDF way: the core's certs.zip (with a broker-made private key) instead of --core/--token")
	c.fs.StringVar(&o.InstallerConfig, "installer-config", "", "the CDF way: the core's installer config YAML (with --certs-zip)")
	c.fs.StringVar(&o.Mode, "mode", "", "the CDF way: the broker's mode, local or aws (default: aws for an amazonaws.com endpoint)")
	c.fs.StringVar(&o.StateDir, "state-dir", statedir.DefaultPath, "state directory for the identity and the install record")
	c.fs.StringVar(&o.Runtime, "runtime", installer.RuntimeGreengrass, "greengrass (install the nucleus) or simulated (no nucleus)")
	c.fs.StringVar(&o.GreengrassRoot, "greengrass-root", installer.DefaultGreengrassRoot, "the nucleus root directory")
	c.fs.StringVar(&o.NucleusZip, "nucleus-zip", "", "path or http(s) URL of greengrass-nucleus-latest.zip (required for the greengrass runtime)")
	c.fs.StringVar(&o.NucleusSHA256, "nucleus-sha256", "", "hex SHA-256 of the nucleus zip (required for a URL)")
	c.fs.BoolVar(&o.NoService, "no-service", false, "do not install the systemd service (and do not wait for a report)")
	c.fs.DurationVar(&o.Wait, "wait", installer.DefaultWait, "how long to wait for the first acknowledged health report")
	c.fs.BoolVar(&dryRun, "dry-run", false, "print what would be done and change nothing")
	c.fs.StringVar(&logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	if code, done := c.parse(args, stderr); done {
		return code
	}
	logger, err := newLogger(stderr, logLevel, "text")
	if err != nil {
		return c.fail(stderr, ExitUsage, err)
	}
	o.Runtime = strings.TrimSpace(o.Runtime)
	if err := o.Validate(); err != nil {
		fmt.Fprintln(stderr, "ggagent install: invalid options:\n"+err.Error())
		return ExitUsage
	}
	if strings.HasPrefix(strings.ToLower(o.BrokerURL), "http://") {
		fmt.Fprintln(stderr, "ggagent install: warning: the broker URL is plain http://: use https:// (with --ca-sha256) outside local development")
	}
	env := &installer.Env{Options: o, Out: stdout, Logger: logger}
	if dryRun {
		err = installer.DryRun(ctx, env)
	} else {
		err = installer.Install(ctx, env)
	}
	if err != nil {
		return c.fail(stderr, ExitFailure, err)
	}
	return ExitOK
}

func uninstall(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := newCommand("uninstall", "[--purge] [flags]",
		"Undoes what ggagent install added, as recorded in the state directory's install.json:\nthe ggagent service, the nucleus it installed and greengrass.service, ggc_user and\nggc_group, the unzipped nucleus. The identity is kept unless --purge.\n", stderr)
	var stateDir string
	var purge bool
	c.fs.StringVar(&stateDir, "state-dir", statedir.DefaultPath, "state directory of the install")
	c.fs.BoolVar(&purge, "purge", false, "also remove the state directory with the device identity (a new install needs a new token)")
	if code, done := c.parse(args, stderr); done {
		return code
	}
	env := &installer.Env{Options: installer.Options{StateDir: stateDir}, Out: stdout}
	if err := installer.Uninstall(ctx, env, purge); err != nil {
		return c.fail(stderr, ExitFailure, err)
	}
	return ExitOK
}

// statusWithService is `ggagent status`, followed in text form by the
// ggagent service's state when an install registered it.
func statusWithService(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	code := status(args, stdout, stderr)
	if code != ExitOK {
		return code
	}
	// Read --state-dir and --format the way status did.
	fs := pflag.NewFlagSet("status", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.ParseErrorsAllowlist.UnknownFlags = true
	stateDir := fs.String("state-dir", statedir.DefaultPath, "")
	format := fs.String("format", "text", "")
	if fs.Parse(args) != nil || applyEnv(fs) != nil || *format != "text" {
		return code
	}
	dir, err := statedir.OpenExisting(*stateDir)
	if err != nil {
		return code
	}
	var rec installer.Record
	if dir.ReadJSON(installer.RecordFile, &rec) != nil || !rec.Added.Service {
		return code
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	fmt.Fprintf(stdout, "Service: %s is %s (installed %s)\n", installer.ServiceName, installer.ServiceState(cctx, installer.ExecCommander{}), rec.Steps["service"].Format(time.RFC3339))
	return code
}
