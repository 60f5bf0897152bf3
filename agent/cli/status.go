package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"slices"
	"time"

	"github.com/ggfleet/ggfleet/agent/identity"
	"github.com/ggfleet/ggfleet/agent/statedir"
)

// statusReport is `ggagent status --format json`.
type statusReport struct {
	Identity            identity.Identity `json:"identity"`
	ClientID            string            `json:"clientId"`
	CertificateNotAfter time.Time         `json:"certificateNotAfter"`
	// Agent is status.json as the running daemon last wrote it (absent
	// before the first run).
	Agent json.RawMessage `json:"agent,omitempty"`
}

func status(args []string, stdout, stderr io.Writer) int {
	c := newCommand("status", "[flags]", "Shows this device's identity, when its certificate expires, and what the agent last\nreported about itself (connection, last health report) if it has run.\n", stderr)
	var stateDir, format string
	c.fs.StringVar(&stateDir, "state-dir", statedir.DefaultPath, "state directory holding the enrolled identity")
	c.fs.StringVar(&format, "format", "text", "output format: text or json")
	if code, done := c.parse(args, stderr); done {
		return code
	}
	if format != "text" && format != "json" {
		return c.fail(stderr, ExitUsage, fmt.Errorf("--format %q: use text or json", format))
	}
	dir, err := statedir.OpenExisting(stateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return c.fail(stderr, ExitFailure, fmt.Errorf("%w: the state directory %s does not exist; run ggagent enroll --broker URL --core NAME --token TOKEN --state-dir %s", identity.ErrNotEnrolled, stateDir, stateDir))
	}
	if err != nil {
		return c.fail(stderr, ExitFailure, err)
	}
	id, err := identity.Load(dir)
	if err != nil {
		return c.fail(stderr, ExitFailure, err)
	}
	agent, agentErr := dir.ReadFile(statedir.StatusFile)
	var agentStatus map[string]any
	if agentErr == nil {
		agentErr = dir.ReadJSON(statedir.StatusFile, &agentStatus)
	}

	if format == "json" {
		rep := statusReport{Identity: id, ClientID: id.ClientID(), CertificateNotAfter: id.CertificateNotAfter()}
		if agentErr == nil {
			rep.Agent = agent
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return c.fail(stderr, ExitFailure, err)
		}
		return ExitOK
	}

	fmt.Fprintf(stdout, "Enrolled as core %q.\n", id.ThingName)
	printIdentity(stdout, id, time.Now())
	fmt.Fprintf(stdout, "  State directory: %s\n", dir.Path())
	switch {
	case errors.Is(agentErr, fs.ErrNotExist):
		fmt.Fprintln(stdout, "Agent: no status yet (ggagent run writes it once it runs)")
	case agentErr != nil:
		fmt.Fprintf(stdout, "Agent: status unreadable: %v\n", agentErr)
	default:
		fmt.Fprintln(stdout, "Agent:")
		for _, k := range slices.Sorted(maps.Keys(agentStatus)) {
			if k == "version" {
				continue
			}
			v := agentStatus[k]
			text, ok := v.(string)
			if !ok {
				b, _ := json.Marshal(v)
				text = string(b)
			}
			fmt.Fprintf(stdout, "  %-16s %s\n", k+":", text)
		}
	}
	return ExitOK
}
