// Package cli is the ggagent command tree: `enroll` gives the device its
// identity, `status` shows it, `run` starts the agent in the foreground
// (what the systemd service runs), `version` prints the build. Every flag
// can also be given as a GGAGENT_* environment variable (--state-dir ↔
// GGAGENT_STATE_DIR), which is how the service's defaults file configures it.
//
// Only agent/cmd/ggagent imports it. The daemon is reached through the
// RunAgent hook, so this package does not depend on it.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/agent/statedir"
	"github.com/ggfleet/ggfleet/internal/version"
	"github.com/spf13/pflag"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

const usage = `ggagent — the ggfleet agent of an AWS IoT Greengrass V2 core device.

Usage:
  ggagent enroll --broker URL --core NAME --token TOKEN [flags]
                            obtain this device's identity from the broker
  ggagent status [flags]    show the identity, certificate expiry and agent status
  ggagent run [flags]       run the agent in the foreground (what the service runs)
  ggagent install --broker URL --core NAME --token TOKEN --nucleus-zip F [flags]
                            enroll, install the Greengrass nucleus and the ggagent service
  ggagent uninstall [--purge]
                            undo ggagent install (keeps the identity unless --purge)
  ggagent credentials set NAME --from-file F | list | delete NAME
                            manage the secrets used to reach client devices
  ggagent version           print the version

Run 'ggagent <command> --help' for a command's flags. Every flag can also be
set with an environment variable: --state-dir ↔ GGAGENT_STATE_DIR.
`

// Run runs the command line args and returns the process exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ExitUsage
	}
	switch args[0] {
	case "enroll":
		return enroll(ctx, args[1:], stdout, stderr)
	case "status":
		return statusWithService(ctx, args[1:], stdout, stderr)
	case "install":
		return install(ctx, args[1:], stdout, stderr)
	case "uninstall":
		return uninstall(ctx, args[1:], stdout, stderr)
	case "run":
		return run(ctx, args[1:], stdout, stderr)
	case "credentials":
		return credentials(args[1:], credentialsStdin, stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, version.String("ggagent"))
		return ExitOK
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
		return ExitOK
	}
	fmt.Fprintf(stderr, "ggagent: unknown command %q\n\n%s", args[0], usage)
	return ExitUsage
}

// command is one subcommand's flag set and its help text.
type command struct {
	name string
	fs   *pflag.FlagSet
}

func newCommand(name, synopsis, about string, stderr io.Writer) *command {
	fs := pflag.NewFlagSet("ggagent "+name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ggagent %s %s\n\n%s\nEvery flag can also be set as GGAGENT_<FLAG> (e.g. GGAGENT_STATE_DIR).\n\nFlags:\n", name, synopsis, about)
		fs.PrintDefaults()
	}
	return &command{name: name, fs: fs}
}

// parse parses args and then the environment twins. It returns done with
// the exit code when the command should stop (help or a usage error).
func (c *command) parse(args []string, stderr io.Writer) (code int, done bool) {
	if err := c.fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return ExitOK, true
		}
		fmt.Fprintf(stderr, "ggagent %s: %v (run 'ggagent %s --help')\n", c.name, err, c.name)
		return ExitUsage, true
	}
	if c.fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ggagent %s: unexpected argument %q (run 'ggagent %s --help')\n", c.name, c.fs.Arg(0), c.name)
		return ExitUsage, true
	}
	if err := applyEnv(c.fs); err != nil {
		fmt.Fprintf(stderr, "ggagent %s: %v\n", c.name, err)
		return ExitUsage, true
	}
	return 0, false
}

func (c *command) fail(stderr io.Writer, code int, err error) int {
	fmt.Fprintf(stderr, "ggagent %s: %v\n", c.name, err)
	return code
}

// Runtimes for RunConfig.Runtime.
const (
	RuntimeGreengrass = "greengrass"
	RuntimeSimulated  = "simulated"
)

// RunConfig is what `ggagent run` was asked to do, filled from its flags
// and their GGAGENT_* twins and checked by Validate.
type RunConfig struct {
	// StateDir is the enrolled state directory (--state-dir).
	StateDir string
	// Runtime is RuntimeGreengrass (a real nucleus) or RuntimeSimulated (--runtime).
	Runtime string
	// HealthInterval is how often health is reported (--health-interval).
	HealthInterval time.Duration
	// PatchConcurrency bounds the client-device patches run at once
	// (--patch-concurrency).
	PatchConcurrency int
	// LogLevel and LogFormat are the flags Logger was built from.
	LogLevel  string
	LogFormat string
	// Logger is the agent's logger (stderr; JSON unless on a terminal).
	Logger *slog.Logger
}

// Validate reports every problem with the configuration at once.
func (c RunConfig) Validate() error {
	var probs []string
	if c.StateDir == "" {
		probs = append(probs, "--state-dir is required")
	}
	if c.Runtime != RuntimeGreengrass && c.Runtime != RuntimeSimulated {
		probs = append(probs, fmt.Sprintf("--runtime %q: use %s or %s", c.Runtime, RuntimeGreengrass, RuntimeSimulated))
	}
	if c.HealthInterval < time.Second {
		probs = append(probs, fmt.Sprintf("--health-interval %s: use at least 1s", c.HealthInterval))
	}
	if c.PatchConcurrency < 0 || c.PatchConcurrency > 1024 {
		probs = append(probs, fmt.Sprintf("--patch-concurrency %d: use 1 to 1024 (0 means the default, 16)", c.PatchConcurrency))
	}
	if len(probs) > 0 {
		return errors.New(strings.Join(probs, "\n"))
	}
	return nil
}

// RunAgent runs the agent until ctx is cancelled; agent/cmd/ggagent sets
// it to the daemon's entry point. `ggagent run` fails clearly while it is nil.
var RunAgent func(ctx context.Context, cfg RunConfig) error

func run(ctx context.Context, args []string, _, stderr io.Writer) int {
	c := newCommand("run", "[flags]", "Runs the agent in the foreground until SIGINT or SIGTERM: connects to the broker over MQTT\nwith the enrolled identity, reports health and applies deployments. This is what the\nggagent service runs.\n", stderr)
	cfg := RunConfig{}
	c.fs.StringVar(&cfg.StateDir, "state-dir", statedir.DefaultPath, "state directory holding the enrolled identity")
	c.fs.StringVar(&cfg.Runtime, "runtime", RuntimeGreengrass, "what the agent manages: greengrass (the installed nucleus) or simulated (no nucleus; for tests and demos)")
	c.fs.DurationVar(&cfg.HealthInterval, "health-interval", 30*time.Second, "how often to report health")
	c.fs.IntVar(&cfg.PatchConcurrency, "patch-concurrency", 16, "most client-device patches (and probes) run at once; one per device at a time")
	c.fs.StringVar(&cfg.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	c.fs.StringVar(&cfg.LogFormat, "log-format", "auto", "log format: text, json, or auto (json when stderr is not a terminal)")
	if code, done := c.parse(args, stderr); done {
		return code
	}
	logger, err := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return c.fail(stderr, ExitUsage, err)
	}
	cfg.Logger = logger
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "ggagent run: invalid configuration:\n"+err.Error())
		return ExitUsage
	}
	if RunAgent == nil {
		return c.fail(stderr, ExitFailure, errors.New("this build of ggagent cannot run the agent (no daemon linked)"))
	}
	if err := RunAgent(ctx, cfg); err != nil && !(ctx.Err() != nil && errors.Is(err, context.Canceled)) {
		return c.fail(stderr, ExitFailure, err)
	}
	return ExitOK
}
