package nucleus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// Files the simulated runtime keeps in its directory.
const (
	// SimStateFile holds the simulated components.
	SimStateFile = "simulated-components.json"
	// SimFailFile lists component keys (one a line, # comments) whose
	// deployment fails, so a test or a demo can make a running agent fail.
	SimFailFile = "simulated-fail"
	// SimApplyLogFile gets one line, "<RFC 3339 time> <deploymentId>", each
	// time Apply is called, so a test or a demo can count how often a
	// deployment was really applied (and prove a restart re-applied nothing).
	// It is a debugging aid, not a stable interface.
	SimApplyLogFile = "simulated-applies.log"
)

// SimulatedVersion is the nucleus version the simulated runtime reports.
const SimulatedVersion = "2.12.0 (simulated)"

// SimOptions tunes the simulated runtime.
type SimOptions struct {
	// FailComponents are component keys whose deployment always fails.
	FailComponents []string
	// StepDelay is how long installing, upgrading or removing one component
	// takes (zero: instant), so demos and benchmarks see deployments in progress.
	StepDelay time.Duration
}

// Simulated is a Runtime without a nucleus: components live in a JSON file
// in its directory and are always RUNNING once deployed. It is what
// `ggagent run --runtime simulated` uses for demos, tests and benchmarks.
type Simulated struct {
	dir  string
	opts SimOptions
	mu   sync.Mutex // serialises Apply against itself and readers of the file
}

type simState struct {
	Version    int                     `json:"version"`
	Components map[string]simComponent `json:"components"`
}

type simComponent struct {
	Version string `json:"version"`
	State   string `json:"state"`
}

// NewSimulated returns a simulated runtime keeping its state in dir, which
// must exist (normally the agent's state directory).
func NewSimulated(dir string, opts SimOptions) (*Simulated, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("simulated runtime: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("simulated runtime: %s is not a directory", dir)
	}
	return &Simulated{dir: dir, opts: opts}, nil
}

// Name returns "simulated".
func (s *Simulated) Name() string { return "simulated" }

// Apply replaces the simulated components with those of d. A component in
// the fail set makes the whole deployment fail and leaves the previous
// components as they were (as a Greengrass rollback would).
func (s *Simulated) Apply(ctx context.Context, d mqttmsg.DeploymentMsg) (Outcome, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.logApply(d.DeploymentID); err != nil {
		return Outcome{}, err
	}
	cur, err := s.load()
	if err != nil {
		return Outcome{}, err
	}
	failing, err := s.failSet()
	if err != nil {
		return Outcome{}, err
	}
	next := simState{Version: 1, Components: make(map[string]simComponent, len(d.Components))}
	keys := make([]string, 0, len(d.Components))
	for k := range d.Components {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		spec := d.Components[k]
		if c, ok := cur.Components[k]; !ok || c.Version != spec.ComponentVersion {
			if err := s.step(ctx); err != nil {
				return Outcome{}, err
			}
		}
		if slices.Contains(failing, k) {
			return Outcome{
				Status:         mqttmsg.StatusFailed,
				DetailedStatus: mqttmsg.DetailFailedRollbackComplete,
				Stage:          "apply",
				Reason:         fmt.Sprintf("component %s failed to start", k),
			}, nil
		}
		next.Components[k] = simComponent{Version: spec.ComponentVersion, State: StateRunning}
	}
	for k := range cur.Components {
		if _, ok := next.Components[k]; !ok {
			if err := s.step(ctx); err != nil {
				return Outcome{}, err
			}
		}
	}
	if !simEqual(cur, next) {
		if err := s.save(next); err != nil {
			return Outcome{}, err
		}
	}
	return Succeeded(), nil
}

// Components lists the simulated components, sorted by name.
func (s *Simulated) Components(ctx context.Context) ([]mqttmsg.ComponentState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	out := make([]mqttmsg.ComponentState, 0, len(st.Components))
	for k, c := range st.Components {
		out = append(out, mqttmsg.ComponentState{Name: k, Version: c.Version, State: c.State})
	}
	slices.SortFunc(out, func(a, b mqttmsg.ComponentState) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Nucleus reports a running nucleus of version SimulatedVersion.
func (s *Simulated) Nucleus(ctx context.Context) (mqttmsg.NucleusState, error) {
	return mqttmsg.NucleusState{State: StateRunning, Version: SimulatedVersion}, nil
}

// logApply appends one line for this Apply call to SimApplyLogFile.
func (s *Simulated) logApply(deploymentID string) error {
	f, err := os.OpenFile(filepath.Join(s.dir, SimApplyLogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("simulated runtime: record the apply: %w", err)
	}
	_, err = fmt.Fprintf(f, "%s %s\n", time.Now().UTC().Format(time.RFC3339Nano), deploymentID)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("simulated runtime: record the apply: %w", err)
	}
	return nil
}

// step waits StepDelay, or returns early when ctx ends.
func (s *Simulated) step(ctx context.Context) error {
	if s.opts.StepDelay <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(s.opts.StepDelay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (s *Simulated) failSet() ([]string, error) {
	set := slices.Clone(s.opts.FailComponents)
	b, err := os.ReadFile(filepath.Join(s.dir, SimFailFile))
	if errors.Is(err, fs.ErrNotExist) {
		return set, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read simulated fail list: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			set = append(set, line)
		}
	}
	return set, nil
}

func (s *Simulated) load() (simState, error) {
	st := simState{Version: 1, Components: map[string]simComponent{}}
	b, err := os.ReadFile(filepath.Join(s.dir, SimStateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read simulated components: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("read simulated components from %s (delete it to start empty): %w", SimStateFile, err)
	}
	if st.Components == nil {
		st.Components = map[string]simComponent{}
	}
	return st, nil
}

func (s *Simulated) save(st simState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode simulated components: %w", err)
	}
	return writeFileAtomic(filepath.Join(s.dir, SimStateFile), append(b, '\n'), 0o600)
}

func simEqual(a, b simState) bool {
	if len(a.Components) != len(b.Components) {
		return false
	}
	for k, c := range a.Components {
		if b.Components[k] != c {
			return false
		}
	}
	return true
}
