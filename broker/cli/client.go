package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ggfleet/ggfleet/shared/apiclient"
	"github.com/spf13/pflag"
)

// Exit codes of the client subcommands; scripts branch on them.
const (
	exitOK          = 0   // the command did what was asked
	exitFailed      = 1   // the broker refused the request, or a task ended in Failure
	exitUsage       = 2   // bad flags or arguments
	exitUnreachable = 3   // the broker could not be reached, or it refused the token
	exitInterrupted = 130 // Ctrl-C while waiting; the task goes on
)

// clientUsage is the client part of the top-level usage text.
const clientUsage = `
Operator commands (talk to a running broker):
  ggfleet templates create -f FILE | update NAME -f FILE | list | versions NAME | show NAME [--version N] | delete NAME
  ggfleet provisioning-templates list | show NAME | put NAME -f FILE
  ggfleet cas list | create --common-name CN [--days N] | import --cert FILE --key FILE
  ggfleet cores create --template PT [--core-version V] NAME... | --csv FILE [--no-wait] [--plan]
  ggfleet cores list [--template NAME [--version N]] [--failed-only] | show NAME
  ggfleet cores delete NAME... [--deprovision] [--no-wait] [--plan] | enroll-token NAME [--expires 24h]
  ggfleet cores bootstrap --ssh user@host[:port] --core NAME [--identity KEY] [--host-key-policy strict|tofu]
  ggfleet devices list [--core NAME] | show NAME
  ggfleet devices create --core CORE --template PT NAME... | --csv FILE [--no-wait] [--plan]
  ggfleet devices delete --core CORE NAME... [--deprovision] [--no-wait] [--plan]
  ggfleet deploy --template NAME [--version N] --core NAME... [--group G...] [--no-wait] [--plan]
  ggfleet tasks show ID | watch ID
  ggfleet patch templates create -f FILE | update NAME -f FILE | list | show NAME [--version N] | delete NAME
  ggfleet patch templates upload NAME ARTIFACT FILE
  ggfleet patch targets set DEVICE --core CORE --ssh user@host[:port] --credential-ref REF | -f FILE
  ggfleet patch targets list [--core CORE] | show DEVICE | delete DEVICE | probe DEVICE
  ggfleet patch run --template NAME --device ID... [--var K=V] [--no-wait]
  ggfleet patch show PATCH_ID | retry PATCH_ID | cancel PATCH_ID | logs PATCH_ID [--step S]
  ggfleet fleet summary
  ggfleet events

Common flags: --broker-url (default http://127.0.0.1:8080), --token (default: GGFLEET_TOKEN,
then <--data-dir>/admin.token), --ca-sha256, -o table|json|yaml.
Long operations wait and show progress; --no-wait prints the task id instead;
--plan shows what would change and changes nothing.
Ctrl-C stops waiting, not the task.

Exit codes: 0 ok; 1 the broker refused the request or a task failed; 2 usage error;
3 the broker cannot be reached or refused the token; 130 stopped waiting (Ctrl-C).
`

// usageError is a mistake in the command line (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{msg: fmt.Sprintf(format, a...)} }

// taskFailedError reports a task (or some of its items) that ended in
// Failure (exit 1); the details were already printed.
type taskFailedError struct{ id, msg string }

func (e *taskFailedError) Error() string { return fmt.Sprintf("task %s: %s", e.id, e.msg) }

// interruptedError is Ctrl-C while waiting for a task (exit 130); msg,
// when set, replaces the usual text.
type interruptedError struct{ id, msg string }

func (e *interruptedError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return "stopped waiting; the task continues: ggfleet tasks watch " + e.id
}

// exitCode maps an error of a client subcommand to the process exit code.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	if _, ok := errors.AsType[*usageError](err); ok {
		return exitUsage
	}
	if _, ok := errors.AsType[*interruptedError](err); ok {
		return exitInterrupted
	}
	if ae, ok := errors.AsType[*apiclient.APIError](err); ok {
		if ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden {
			return exitUnreachable
		}
		return exitFailed
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return exitUnreachable
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return exitUnreachable
	}
	if strings.Contains(err.Error(), "cannot reach the broker") {
		return exitUnreachable
	}
	return exitFailed
}

// explain adds what to do to errors whose fix is not obvious.
func explain(err error) string {
	if ae, ok := errors.AsType[*apiclient.APIError](err); ok && ae.Status == http.StatusUnauthorized {
		return err.Error() + "\n(the token was refused: pass --token or GGFLEET_TOKEN, or --data-dir of the broker holding admin.token)"
	}
	return err.Error()
}

// cmdCtx is what a running client subcommand gets.
type cmdCtx struct {
	ctx    context.Context
	api    *apiclient.Client
	cfg    apiclient.Config // what api was made from
	stdout io.Writer
	stderr io.Writer
	output string // table | json | yaml
	tty    bool   // stdout is a terminal: draw progress bars
}

// runFunc runs a subcommand with its positional arguments.
type runFunc func(c *cmdCtx, args []string) error

// subcommand is one client command: setup registers its flags and returns
// the function that runs it with their values.
type subcommand struct {
	name    string // "cores create"
	args    string // synopsis of its arguments
	summary string
	setup   func(fs *pflag.FlagSet) runFunc
}

func clientCommands() []subcommand {
	var all []subcommand
	all = append(all, templateCommands()...)
	all = append(all, coreCommands()...)
	all = append(all, deviceTaskCommands()...)
	all = append(all, caCommands()...)
	all = append(all, bootstrapCommand())
	all = append(all, patchCommands()...)
	all = append(all, deployCommands()...)
	all = append(all, fleetCommands()...)
	return all
}

// runClient runs an operator subcommand (args[0] is its group) and returns the exit code.
func runClient(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmds := clientCommands()
	byName := map[string]subcommand{}
	var verbs []subcommand
	for _, c := range cmds {
		byName[c.name] = c
		if strings.HasPrefix(c.name, args[0]+" ") {
			verbs = append(verbs, c)
		}
	}
	// The longest name the words start with: "patch templates create"
	// before "patch run", "cores create" before "deploy".
	for n := min(3, len(args)); n >= 1; n-- {
		if sub, ok := byName[strings.Join(args[:n], " ")]; ok {
			return runSubcommand(ctx, sub, args[n:], stdout, stderr)
		}
	}
	group := args[0]
	if len(args) > 1 && !strings.HasPrefix(args[1], "-") {
		// A known two-word group ("patch templates") with a missing or unknown verb.
		for _, c := range verbs {
			if strings.HasPrefix(c.name, args[0]+" "+args[1]+" ") {
				group = args[0] + " " + args[1]
				break
			}
		}
	}
	var groupVerbs []subcommand
	for _, c := range verbs {
		if strings.HasPrefix(c.name, group+" ") {
			groupVerbs = append(groupVerbs, c)
		}
	}
	words := strings.Count(group, " ") + 1
	if len(args) <= words || strings.HasPrefix(args[words], "-") {
		fmt.Fprintf(stderr, "ggfleet %s: which one? %s\n", group, listVerbs(groupVerbs, group))
		return exitUsage
	}
	fmt.Fprintf(stderr, "ggfleet %s: unknown command %q: use %s\n", group, args[words], listVerbs(groupVerbs, group))
	return exitUsage
}

func listVerbs(cmds []subcommand, group string) string {
	var v []string
	for _, c := range cmds {
		v = append(v, strings.TrimPrefix(c.name, group+" "))
	}
	sort.Strings(v)
	return strings.Join(v, ", ")
}

func runSubcommand(ctx context.Context, sub subcommand, args []string, stdout, stderr io.Writer) int {
	name := "ggfleet " + sub.name
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	run := sub.setup(fs)
	brokerURL := fs.String("broker-url", "http://127.0.0.1:8080", "URL of the broker's API")
	token := fs.String("token", "", "API token (default: GGFLEET_TOKEN, then <data-dir>/admin.token)")
	dataDir := fs.String("data-dir", "./ggfleet-data", "the broker's data dir, to read admin.token when no token is given")
	caSHA := fs.String("ca-sha256", "", "trust an https:// broker whose CA certificate has this SHA-256")
	output := fs.StringP("output", "o", "table", "output format: table, json or yaml")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s %s\n\n%s.\n\nFlags:\n", name, sub.args, sub.summary)
		fs.PrintDefaults()
		fmt.Fprint(stderr, "\nExit codes: 0 ok; 1 refused or task failed; 2 usage; 3 broker unreachable or token refused; 130 Ctrl-C while waiting.\n")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for usage.\n", name, err, name)
		return exitUsage
	}
	if err := applyEnv(fs, "GGFLEET"); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitUsage
	}
	switch *output {
	case "table", "json", "yaml":
	default:
		fmt.Fprintf(stderr, "%s: -o %q: use table, json or yaml\n", name, *output)
		return exitUsage
	}
	tok := strings.TrimSpace(*token)
	if tok == "" {
		if b, err := os.ReadFile(filepath.Join(*dataDir, "admin.token")); err == nil {
			tok = strings.TrimSpace(string(b))
		}
	}
	cfg := apiclient.Config{BaseURL: *brokerURL, Token: tok, CASHA256: *caSHA, UserAgent: "ggfleet-cli"}
	api, err := apiclient.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitUsage
	}
	c := &cmdCtx{ctx: ctx, api: api, cfg: cfg, stdout: stdout, stderr: stderr, output: *output, tty: isTerminal(stdout)}
	err = run(c, fs.Args())
	if err == nil {
		return exitOK
	}
	if _, ok := errors.AsType[*interruptedError](err); ok {
		fmt.Fprintln(stderr, err.Error())
		return exitInterrupted
	}
	fmt.Fprintf(stderr, "%s: %s\n", name, explain(err))
	if _, ok := errors.AsType[*usageError](err); ok {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", name)
	}
	return exitCode(err)
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// needArgs checks the count of positional arguments.
// deleteByName is the setup of a "delete NAME" command: DELETE
// prefix+NAME, then print what was deleted (what names the resource in
// messages, label the argument in the usage error).
func deleteByName(what, label, prefix string) func(fs *pflag.FlagSet) runFunc {
	return func(fs *pflag.FlagSet) runFunc {
		return func(c *cmdCtx, args []string) error {
			if err := needArgs(args, 1, label); err != nil {
				return err
			}
			if err := c.api.Do(c.ctx, http.MethodDelete, prefix+url.PathEscape(args[0]), nil, nil); err != nil {
				return fmt.Errorf("delete %s %q: %w", what, args[0], err)
			}
			return emit(c, map[string]string{"deleted": args[0]}, func(w io.Writer) { fmt.Fprintf(w, "deleted %s %s\n", what, args[0]) })
		}
	}
}

func needArgs(args []string, n int, what string) error {
	if len(args) != n {
		return usagef("expected %s, got %d argument(s)", what, len(args))
	}
	return nil
}
