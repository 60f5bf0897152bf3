package nucleus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// GreengrassConfig says where the nucleus and its tools are. Zero fields
// take the defaults of a standard Greengrass V2 install.
type GreengrassConfig struct {
	// Root is the nucleus root (default /greengrass/v2).
	Root string
	// CLI is the greengrass-cli program (default <Root>/bin/greengrass-cli).
	CLI string
	// Systemctl is the systemctl program (default "systemctl", found in PATH).
	Systemctl string
	// ServiceName is the nucleus's systemd unit (default greengrass.service).
	ServiceName string
	// StateDir is where the runtime remembers which components ggfleet
	// deployed, so that a later document can remove them by omitting them.
	// Without it, nothing is ever removed: components installed by someone
	// else (the Greengrass CLI itself, the nucleus's own services) are never
	// ggfleet's to remove.
	StateDir string
	// Timeout bounds one whole deployment, from create to a final status
	// (default 10 minutes).
	Timeout time.Duration
	// CommandTimeout bounds one greengrass-cli or systemctl run (default 2
	// minutes; greengrass-cli starts a JVM, which is slow on small devices).
	CommandTimeout time.Duration
	// PollInterval is how often a running local deployment's status is
	// asked for (default 5 seconds).
	PollInterval time.Duration
	// Logger receives the runtime's logs (default: discarded).
	Logger *slog.Logger
}

// errDeploymentTimeout ends a deployment that ran past GreengrassConfig.Timeout.
var errDeploymentTimeout = errors.New("deployment timeout")

// GreengrassDeployedFile is the file in StateDir listing the components
// ggfleet deployed through greengrass-cli.
const GreengrassDeployedFile = "greengrass-deployed.json"

// Greengrass is a Runtime that drives a real nucleus: local deployments with
// `greengrass-cli deployment create`, component states from
// `greengrass-cli component list`, the nucleus's own state from
// `systemctl is-active`.
type Greengrass struct {
	cfg GreengrassConfig
	log *slog.Logger
}

// NewGreengrass returns a runtime for the nucleus cfg describes. It runs
// nothing yet.
func NewGreengrass(cfg GreengrassConfig) *Greengrass {
	if cfg.Root == "" {
		cfg.Root = "/greengrass/v2"
	}
	if cfg.CLI == "" {
		cfg.CLI = filepath.Join(cfg.Root, "bin", "greengrass-cli")
	}
	if cfg.Systemctl == "" {
		cfg.Systemctl = "systemctl"
	}
	if cfg.ServiceName == "" {
		cfg.ServiceName = "greengrass.service"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = 2 * time.Minute
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Greengrass{cfg: cfg, log: log}
}

// Name returns "greengrass".
func (g *Greengrass) Name() string { return "greengrass" }

// Apply runs one local deployment that merges every component of d and
// removes the components ggfleet deployed before that d no longer names,
// then waits for the nucleus to finish it.
func (g *Greengrass) Apply(ctx context.Context, d mqttmsg.DeploymentMsg) (Outcome, error) {
	installed, err := g.Components(ctx)
	if err != nil {
		return Outcome{}, err
	}
	deployed, err := g.loadDeployed()
	if err != nil {
		return Outcome{}, err
	}
	var remove []string
	for _, c := range installed {
		if _, keep := d.Components[c.Name]; !keep && slices.Contains(deployed, c.Name) {
			remove = append(remove, c.Name)
		}
	}
	args, err := createArgs(d, remove)
	if err != nil {
		return Outcome{
			Status:         mqttmsg.StatusFailed,
			DetailedStatus: mqttmsg.DetailRejected,
			Stage:          "validate",
			Reason:         err.Error(),
		}, nil
	}
	if args == nil { // nothing to merge, nothing to remove
		return Succeeded(), g.saveDeployed(nil)
	}

	ctx, cancel := context.WithTimeoutCause(ctx, g.cfg.Timeout, errDeploymentTimeout)
	defer cancel()
	out, err := g.run(ctx, g.cfg.CLI, args...)
	if err != nil {
		return Outcome{}, fmt.Errorf("create local deployment: %w", err)
	}
	id := parseDeploymentID(out)
	if id == "" {
		return Outcome{}, fmt.Errorf("create local deployment: no deployment id in greengrass-cli output %q", truncate(out, 300))
	}
	g.log.Info("local deployment submitted", "deployment", d.DeploymentID, "local_deployment", id, "remove", remove)

	oc, err := g.wait(ctx, id, d)
	if err != nil {
		return Outcome{}, err
	}
	// Remember what ggfleet put on the core: on success exactly d's
	// components; after a failure also the old ones, since a failure without
	// rollback may leave any of them behind.
	keys := make([]string, 0, len(d.Components)+len(deployed))
	for k := range d.Components {
		keys = append(keys, k)
	}
	if oc.Status != mqttmsg.StatusSucceeded {
		keys = append(keys, deployed...)
	}
	if err := g.saveDeployed(keys); err != nil {
		return Outcome{}, err
	}
	return oc, nil
}

// wait polls the local deployment until it ends or ctx (which carries the
// deployment timeout) runs out. A failing status call is retried: the nucleus
// restarts itself during some deployments.
func (g *Greengrass) wait(ctx context.Context, id string, d mqttmsg.DeploymentMsg) (Outcome, error) {
	tick := time.NewTicker(g.cfg.PollInterval)
	defer tick.Stop()
	for {
		out, err := g.run(ctx, g.cfg.CLI, "deployment", "status", "-i", id)
		if err == nil {
			st := parseStatus(out)
			if oc, done := st.outcome(id, d, g.cfg.Root); done {
				return oc, nil
			}
		} else if ctx.Err() == nil {
			g.log.Warn("local deployment status", "local_deployment", id, "err", err)
		}
		select {
		case <-ctx.Done():
			if errors.Is(context.Cause(ctx), errDeploymentTimeout) {
				return Outcome{
					Status:         mqttmsg.StatusFailed,
					DetailedStatus: mqttmsg.DetailFailedRollbackNotRequested,
					Stage:          "apply",
					Reason: fmt.Sprintf("the nucleus did not finish local deployment %s within %s; see %s",
						id, g.cfg.Timeout, filepath.Join(g.cfg.Root, "logs", "greengrass.log")),
				}, nil
			}
			return Outcome{}, ctx.Err()
		case <-tick.C:
		}
	}
}

// Components parses `greengrass-cli component list`.
func (g *Greengrass) Components(ctx context.Context) ([]mqttmsg.ComponentState, error) {
	out, err := g.run(ctx, g.cfg.CLI, "component", "list")
	if err != nil {
		return nil, fmt.Errorf("list components: %w", err)
	}
	return parseComponentList(out), nil
}

// Nucleus asks systemd whether the nucleus service is active and reads the
// nucleus version from the nucleus's effective configuration
// (<Root>/config/effectiveConfig.yaml), or from the component list when that
// file cannot be read.
func (g *Greengrass) Nucleus(ctx context.Context) (mqttmsg.NucleusState, error) {
	out, err := g.run(ctx, g.cfg.Systemctl, "is-active", g.cfg.ServiceName)
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return mqttmsg.NucleusState{}, fmt.Errorf("ask systemd about %s: %w", g.cfg.ServiceName, err)
	}
	// is-active prints the state and exits non-zero for anything but active.
	// The effective configuration is a cheap file read; greengrass-cli starts
	// a JVM, so it is only asked when the file cannot be read.
	ns := mqttmsg.NucleusState{State: unitState(strings.TrimSpace(out)), Version: g.configVersion()}
	if ns.Version == "" && ns.State == StateRunning {
		if comps, err := g.Components(ctx); err == nil {
			for _, c := range comps {
				if c.Name == NucleusComponent {
					ns.Version = c.Version
				}
			}
		}
	}
	return ns, nil
}

// unitState maps `systemctl is-active` words to nucleus states.
func unitState(s string) string {
	switch s {
	case "active":
		return StateRunning
	case "inactive":
		return StateStopped
	case "failed":
		return StateErrored
	case "activating", "reloading":
		return StateStarting
	case "deactivating":
		return StateStopping
	default:
		return StateUnknown
	}
}

// configVersion reads services.aws.greengrass.Nucleus.version from the
// nucleus's effective configuration; "" when it cannot.
func (g *Greengrass) configVersion() string {
	b, err := os.ReadFile(filepath.Join(g.cfg.Root, "config", "effectiveConfig.yaml"))
	if err != nil {
		return ""
	}
	var cfg struct {
		Services map[string]struct {
			Version string `yaml:"version"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		return ""
	}
	return cfg.Services[NucleusComponent].Version
}

// createArgs builds the `deployment create` arguments for d, or nil when
// there is nothing to do.
func createArgs(d mqttmsg.DeploymentMsg, remove []string) ([]string, error) {
	if len(d.Components) == 0 && len(remove) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, len(d.Components))
	for k := range d.Components {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	args := []string{"deployment", "create"}
	config := map[string]map[string]any{}
	var runWith []string
	for _, k := range keys {
		spec := d.Components[k]
		if spec.ComponentVersion == "" {
			return nil, fmt.Errorf("component %s has no componentVersion", k)
		}
		args = append(args, "--merge", k+"="+spec.ComponentVersion)
		if u := spec.ConfigurationUpdate; u != nil && (u.Merge != "" || len(u.Reset) > 0) {
			entry := map[string]any{}
			if u.Merge != "" {
				var merge map[string]any
				if err := json.Unmarshal([]byte(u.Merge), &merge); err != nil {
					return nil, fmt.Errorf("component %s: configurationUpdate.merge is not a JSON object: %w", k, err)
				}
				entry["MERGE"] = merge
			}
			if len(u.Reset) > 0 {
				entry["RESET"] = u.Reset
			}
			config[k] = entry
		}
		if spec.RunWith != nil && spec.RunWith.PosixUser != "" {
			runWith = append(runWith, "--runWith", k+":posixUser="+spec.RunWith.PosixUser)
		}
	}
	if len(config) > 0 {
		b, err := json.Marshal(config)
		if err != nil {
			return nil, fmt.Errorf("encode configuration updates: %w", err)
		}
		args = append(args, "--update-config", string(b))
	}
	args = append(args, runWith...)
	remove = slices.Sorted(slices.Values(remove))
	for _, k := range remove {
		args = append(args, "--remove", k)
	}
	if p := failurePolicy(d); p != "" {
		args = append(args, "--failure-handling-policy", p)
	}
	return args, nil
}

// failurePolicy is the document's deploymentPolicies.failureHandlingPolicy
// when it is one greengrass-cli accepts.
func failurePolicy(d mqttmsg.DeploymentMsg) string {
	if len(d.DeploymentPolicies) == 0 {
		return ""
	}
	var p struct {
		FailureHandlingPolicy string `json:"failureHandlingPolicy"`
	}
	if json.Unmarshal(d.DeploymentPolicies, &p) != nil {
		return ""
	}
	switch p.FailureHandlingPolicy {
	case "ROLLBACK", "DO_NOTHING":
		return p.FailureHandlingPolicy
	}
	return ""
}

// parseDeploymentID finds the id in "Local deployment submitted! Deployment Id: <id>".
func parseDeploymentID(out string) string {
	for line := range strings.Lines(out) {
		if _, id, ok := strings.Cut(line, "Deployment Id:"); ok {
			if f := strings.Fields(id); len(f) > 0 {
				return f[0]
			}
		}
	}
	return ""
}

// localStatus is what `greengrass-cli deployment status` printed.
type localStatus struct {
	status string // QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, or a detailed status
	cause  string // "Deployment Failure Cause", newer CLIs only
}

// parseStatus reads both the old one-line form "<id>: <STATUS>" and the
// newer block ("Deployment ID: …", "Status: …", "Deployment Failure Cause: …").
func parseStatus(out string) localStatus {
	var st localStatus
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		key, val, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "Status":
			st.status = val
		case "Deployment Failure Cause":
			st.cause = val
		case "Deployment ID", "Created on", "Deployment Error Stack", "Deployment Error Types", "INFO", "WARNING", "SEVERE":
		default:
			if st.status == "" && !strings.Contains(key, " ") && isStatusWord(val) {
				st.status = val // old form: "<id>: SUCCEEDED"
			}
		}
	}
	return st
}

func isStatusWord(s string) bool {
	return s != "" && strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") == ""
}

// outcome maps a local status to an Outcome; done is false while the
// deployment is still queued or running.
func (st localStatus) outcome(id string, d mqttmsg.DeploymentMsg, root string) (oc Outcome, done bool) {
	switch st.status {
	case "SUCCEEDED", mqttmsg.DetailSuccessful:
		return Succeeded(), true
	case "FAILED", mqttmsg.DetailFailedNoStateChange, mqttmsg.DetailFailedRollbackNotRequested,
		mqttmsg.DetailFailedRollbackComplete, mqttmsg.DetailRejected:
	default:
		return Outcome{}, false
	}
	oc = Outcome{Status: mqttmsg.StatusFailed, DetailedStatus: st.status, Stage: "apply", Reason: st.cause}
	if oc.DetailedStatus == "FAILED" {
		oc.DetailedStatus = mqttmsg.DetailFailedRollbackComplete
		if failurePolicy(d) == "DO_NOTHING" {
			oc.DetailedStatus = mqttmsg.DetailFailedRollbackNotRequested
		}
	}
	if oc.Reason == "" {
		oc.Reason = fmt.Sprintf("local deployment %s failed; see %s", id, filepath.Join(root, "logs", "greengrass.log"))
	}
	return oc, true
}

// parseComponentList reads the blocks of `greengrass-cli component list`:
//
//	Component Name: aws.greengrass.Cli
//	    Version: 2.12.0
//	    State: RUNNING
//	    Configuration: {...}
//
// ignoring the JVM's log lines around them.
func parseComponentList(out string) []mqttmsg.ComponentState {
	var comps []mqttmsg.ComponentState
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		if name, ok := strings.CutPrefix(line, "Component Name:"); ok {
			comps = append(comps, mqttmsg.ComponentState{Name: strings.TrimSpace(name), State: StateUnknown})
			continue
		}
		if len(comps) == 0 {
			continue
		}
		c := &comps[len(comps)-1]
		if v, ok := strings.CutPrefix(line, "Version:"); ok {
			if v = strings.TrimSpace(v); v != "null" {
				c.Version = v
			}
		} else if s, ok := strings.CutPrefix(line, "State:"); ok {
			c.State = strings.TrimSpace(s)
		}
	}
	slices.SortFunc(comps, func(a, b mqttmsg.ComponentState) int { return strings.Compare(a.Name, b.Name) })
	return comps
}

// run runs one program with CommandTimeout and returns its standard output.
// A non-zero exit is an *exec.ExitError wrapped with the program's stderr.
func (g *Greengrass) run(ctx context.Context, prog string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.CommandTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err != nil {
		if ctx.Err() != nil {
			return stdout.String(), fmt.Errorf("%s %s: %w", filepath.Base(prog), args[0], ctx.Err())
		}
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(prog), strings.Join(args, " "), err, truncate(stderr.String(), 500))
	}
	return stdout.String(), nil
}

func truncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

type deployedFile struct {
	Version    int      `json:"version"`
	Components []string `json:"components"`
}

func (g *Greengrass) loadDeployed() ([]string, error) {
	if g.cfg.StateDir == "" {
		return nil, nil
	}
	b, err := os.ReadFile(filepath.Join(g.cfg.StateDir, GreengrassDeployedFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read deployed components: %w", err)
	}
	var f deployedFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("read deployed components from %s: %w", GreengrassDeployedFile, err)
	}
	return f.Components, nil
}

func (g *Greengrass) saveDeployed(keys []string) error {
	if g.cfg.StateDir == "" {
		return nil
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	b, err := json.Marshal(deployedFile{Version: 1, Components: keys})
	if err != nil {
		return fmt.Errorf("encode deployed components: %w", err)
	}
	return writeFileAtomic(filepath.Join(g.cfg.StateDir, GreengrassDeployedFile), append(b, '\n'), 0o600)
}
