package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ggfleet/ggfleet/agent/patch/credstore"
	"github.com/ggfleet/ggfleet/agent/statedir"
	"github.com/spf13/pflag"
)

const credentialsUsage = `Usage:
  ggagent credentials set NAME --from-file F   store a secret (F may be - for stdin)
  ggagent credentials list                     list the stored names (never values)
  ggagent credentials delete NAME              remove a stored secret

Credentials are the SSH keys and passwords this core uses to reach its client
devices when it runs a patch. They stay on this core, in <state-dir>/credentials/
(folder 0700, files 0600); a target profile on the broker refers to one as
"core:NAME". Names are 1-64 letters, digits, '.', '_' or '-'.

Flags:
  --state-dir DIR   state directory (default /var/lib/ggagent; GGAGENT_STATE_DIR)
`

// credentialsStdin is where `--from-file -` reads; tests replace it.
var credentialsStdin io.Reader = os.Stdin

// credentials is `ggagent credentials set|list|delete`.
func credentials(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, credentialsUsage)
		return ExitUsage
	}
	verb := args[0]
	switch verb {
	case "help", "--help", "-h":
		fmt.Fprint(stdout, credentialsUsage)
		return ExitOK
	case "set", "list", "delete":
	default:
		fmt.Fprintf(stderr, "ggagent credentials: unknown action %q\n\n%s", verb, credentialsUsage)
		return ExitUsage
	}
	c := newCommand("credentials "+verb, "", "", stderr)
	c.fs.Usage = func() { fmt.Fprint(stderr, credentialsUsage) }
	var stateDir, fromFile string
	c.fs.StringVar(&stateDir, "state-dir", statedir.DefaultPath, "state directory")
	if verb == "set" {
		c.fs.StringVar(&fromFile, "from-file", "", "file holding the secret, or - for stdin")
	}
	if err := c.fs.Parse(args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return ExitOK
		}
		fmt.Fprintf(stderr, "ggagent credentials %s: %v (run 'ggagent credentials --help')\n", verb, err)
		return ExitUsage
	}
	if err := applyEnv(c.fs); err != nil {
		return c.fail(stderr, ExitUsage, err)
	}
	pos := c.fs.Args()
	wantArgs := 1
	if verb == "list" {
		wantArgs = 0
	}
	if len(pos) != wantArgs {
		if wantArgs == 0 {
			return c.fail(stderr, ExitUsage, fmt.Errorf("takes no arguments, got %q", pos))
		}
		return c.fail(stderr, ExitUsage, fmt.Errorf("needs exactly one credential NAME, got %d arguments", len(pos)))
	}
	store := credstore.New(stateDir)
	switch verb {
	case "set":
		if fromFile == "" {
			return c.fail(stderr, ExitUsage, errors.New("--from-file is required (a file, or - to read the secret from stdin)"))
		}
		var value []byte
		var err error
		if fromFile == "-" {
			value, err = io.ReadAll(io.LimitReader(stdin, credstore.MaxSize+1))
		} else {
			value, err = os.ReadFile(fromFile)
		}
		if err != nil {
			return c.fail(stderr, ExitFailure, fmt.Errorf("read the secret: %w", err))
		}
		if err := store.Set(pos[0], value); err != nil {
			return c.fail(stderr, ExitFailure, err)
		}
		fmt.Fprintf(stdout, "stored credential %q; refer to it as core:%s in a target profile\n", pos[0], pos[0])
	case "list":
		names, err := store.List()
		if err != nil {
			return c.fail(stderr, ExitFailure, err)
		}
		for _, n := range names {
			fmt.Fprintln(stdout, n)
		}
	case "delete":
		if err := store.Delete(pos[0]); err != nil {
			return c.fail(stderr, ExitFailure, err)
		}
		fmt.Fprintf(stdout, "deleted credential %q\n", pos[0])
	}
	return ExitOK
}
