// Package installer is `ggagent install` and `ggagent uninstall`: it turns
// a fresh Linux device into a managed Greengrass core in ordered steps —
// preflight checks, enrollment (or the CDF certs.zip way), the nucleus zip,
// the ggc_user:ggc_group account, the nucleus installer, the ggagent
// systemd service, and a wait for the first acknowledged health report.
//
// Every step checks before it acts (Done), so it is idempotent on its own,
// and the install records which steps finished and what it added in the
// state directory's install.json, so a re-run resumes and `uninstall`
// removes exactly what the install added. A step that fails is never
// recorded as done.
//
// The systemd unit is packaging.AgentUnit, passed to kardianos/service as
// its SystemdScript template, so the installer and the packages install
// the same bytes. kardianos/service silently falls back to SysV init
// scripts when systemd is not PID 1; the installer refuses that.
//
// Imported by agent/cli only. It imports agent/identity, agent/statedir,
// packaging and shared/*; never broker code.
package installer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/agent/identity"
	"github.com/ggfleet/ggfleet/agent/statedir"
	"github.com/kardianos/service"
)

// Runtimes the installed agent manages (as `ggagent run --runtime`).
const (
	RuntimeGreengrass = "greengrass"
	RuntimeSimulated  = "simulated"
)

// Defaults of Options.
const (
	DefaultGreengrassRoot = "/greengrass/v2"
	DefaultWait           = 2 * time.Minute
	// MinFreeBytes is the free space preflight wants in the state
	// directory's and the Greengrass root's file systems.
	MinFreeBytes = 256 << 20
	// ServiceName is the systemd service of the agent.
	ServiceName = "ggagent"
	// ComponentUser and ComponentGroup run Greengrass components.
	ComponentUser  = "ggc_user"
	ComponentGroup = "ggc_group"
	// RecordFile is the install record in the state directory.
	RecordFile = "install.json"
	// InitConfigFile is the nucleus --init-config, in the state directory.
	InitConfigFile = "greengrass-init-config.yaml"
	// NucleusWorkDir holds the unzipped nucleus, in the state directory.
	NucleusWorkDir = "nucleus-installer"
)

// minClock is the earliest plausible time: a clock before it cannot check
// certificates.
var minClock = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// Options is what `ggagent install` was asked to do.
type Options struct {
	// BrokerURL is the broker's API root (--broker).
	BrokerURL string
	// Core and Token enroll the device (--core, --token; the token way).
	Core  string
	Token string
	// CASHA256 pins the broker's CA (--ca-sha256); KeyAlgorithm is the
	// device key's algorithm (--key-algorithm).
	CASHA256     string
	KeyAlgorithm string
	// CertsZip and InstallerConfig are the CDF way (--certs-zip,
	// --installer-config): the artifacts of a core provisioned with a
	// broker-made key, instead of Core and Token.
	CertsZip        string
	InstallerConfig string
	// Mode is the broker's mode for the CDF way ("local" or "aws"; default:
	// aws when the config's iotDataEndpoint is an amazonaws.com host).
	Mode string
	// StateDir is the agent's state directory (--state-dir).
	StateDir string
	// Runtime is RuntimeGreengrass or RuntimeSimulated (--runtime).
	Runtime string
	// GreengrassRoot is the nucleus root (--greengrass-root, default /greengrass/v2).
	GreengrassRoot string
	// NucleusZip is a path or http(s) URL of the nucleus zip
	// (--nucleus-zip); NucleusSHA256 its hex SHA-256 (--nucleus-sha256,
	// required for URLs).
	NucleusZip    string
	NucleusSHA256 string
	// NoService skips the systemd service and the wait (--no-service).
	NoService bool
	// Wait bounds the wait for the first acknowledged health report (--wait).
	Wait time.Duration
	// Executable is the absolute path of the ggagent the service runs
	// (default: this program).
	Executable string
}

// CDF reports whether the options choose the CDF way (certs.zip).
func (o Options) CDF() bool { return o.CertsZip != "" || o.InstallerConfig != "" }

// withDefaults fills zero fields.
func (o Options) withDefaults() Options {
	if o.StateDir == "" {
		o.StateDir = statedir.DefaultPath
	}
	if o.Runtime == "" {
		o.Runtime = RuntimeGreengrass
	}
	if o.GreengrassRoot == "" {
		o.GreengrassRoot = DefaultGreengrassRoot
	}
	if o.Wait == 0 {
		o.Wait = DefaultWait
	}
	return o
}

// Validate reports every problem with the options at once.
func (o Options) Validate() error {
	var probs []string
	if o.CDF() {
		if o.CertsZip == "" || o.InstallerConfig == "" {
			probs = append(probs, "the CDF way needs both --certs-zip and --installer-config")
		}
		if o.Token != "" {
			probs = append(probs, "--token and --certs-zip exclude each other: enroll with a token, or install the certs.zip of a core provisioned with a broker-made key")
		}
		if o.BrokerURL == "" {
			probs = append(probs, "--broker is required")
		}
		if o.Mode != "" && o.Mode != identity.ModeLocal && o.Mode != identity.ModeAWS {
			probs = append(probs, fmt.Sprintf("--mode %q: use %s or %s", o.Mode, identity.ModeLocal, identity.ModeAWS))
		}
	} else {
		eo := identity.EnrollOptions{BrokerURL: o.BrokerURL, Core: o.Core, Token: o.Token, CASHA256: o.CASHA256, KeyAlgorithm: o.KeyAlgorithm}
		if err := eo.Validate(); err != nil {
			probs = append(probs, err.Error())
		}
	}
	if o.Runtime != RuntimeGreengrass && o.Runtime != RuntimeSimulated {
		probs = append(probs, fmt.Sprintf("--runtime %q: use %s or %s", o.Runtime, RuntimeGreengrass, RuntimeSimulated))
	}
	if o.Runtime == RuntimeGreengrass {
		if o.NucleusZip == "" {
			probs = append(probs, "--nucleus-zip is required for the greengrass runtime: a path or URL of greengrass-nucleus-latest.zip (or use --runtime simulated)")
		} else if isURL(o.NucleusZip) && o.NucleusSHA256 == "" {
			probs = append(probs, "--nucleus-sha256 is required when --nucleus-zip is a URL")
		}
		if !filepath.IsAbs(o.GreengrassRoot) {
			probs = append(probs, fmt.Sprintf("--greengrass-root %q must be an absolute path", o.GreengrassRoot))
		}
	}
	if o.NucleusSHA256 != "" && !isHexSHA256(o.NucleusSHA256) {
		probs = append(probs, "--nucleus-sha256 must be 64 hex digits")
	}
	if o.Wait < 0 {
		probs = append(probs, "--wait must not be negative")
	}
	if o.Executable != "" && !filepath.IsAbs(o.Executable) {
		probs = append(probs, fmt.Sprintf("the service's program %q must be an absolute path", o.Executable))
	}
	if len(probs) > 0 {
		return errors.New(strings.Join(probs, "\n"))
	}
	return nil
}

// Env is what the steps act through. Production fills only Options and
// Out (and Logger); tests replace the rest.
type Env struct {
	Options Options
	// Root prefixes every host path the installer touches other than the
	// state directory (/run/systemd/system, the Greengrass root,
	// /etc/systemd/system, /etc/default); "" in production. When set, the
	// root check is skipped (test mode).
	Root string
	// Commander runs host programs (default ExecCommander).
	Commander Commander
	// Out receives the progress lines and the summary.
	Out io.Writer
	// Logger receives details (default: discarded).
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// FreeBytes reports the free space of a path's file system (default statfs).
	FreeBytes func(path string) (uint64, error)
	// Euid is the effective user id (default os.Geteuid).
	Euid func() int
	// NewService builds the service handle (default NewKardianosService).
	NewService func(service.Config) (Service, error)
	// HTTPClient downloads the nucleus zip and enrolls (default: 10-minute timeout).
	HTTPClient *http.Client
	// PollInterval is how often status.json is read while waiting (default 1s).
	PollInterval time.Duration

	dir *statedir.Dir
	rec *Record
}

func (e *Env) init() error {
	e.Options = e.Options.withDefaults()
	if e.Commander == nil {
		e.Commander = ExecCommander{}
	}
	if e.Out == nil {
		e.Out = io.Discard
	}
	if e.Logger == nil {
		e.Logger = slog.New(slog.DiscardHandler)
	}
	if e.Now == nil {
		e.Now = time.Now
	}
	if e.FreeBytes == nil {
		e.FreeBytes = freeBytes
	}
	if e.Euid == nil {
		e.Euid = os.Geteuid
	}
	if e.NewService == nil {
		e.NewService = NewKardianosService
	}
	if e.HTTPClient == nil {
		e.HTTPClient = &http.Client{Timeout: 10 * time.Minute}
	}
	if e.rec == nil {
		e.rec = &Record{Version: 1, Steps: map[string]time.Time{}}
	}
	if e.PollInterval == 0 {
		e.PollInterval = time.Second
	}
	if abs, err := filepath.Abs(e.Options.StateDir); err == nil {
		e.Options.StateDir = abs // the service's --state-dir must not depend on the working directory
	}
	if e.Options.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this program's path for the service: %w", err)
		}
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			e.Options.Executable = exe
		}
	}
	return nil
}

// host is the path p on the host, under Root.
func (e *Env) host(p string) string {
	if e.Root == "" {
		return p
	}
	return filepath.Join(e.Root, p)
}

// Record is install.json: which steps finished and what the install added,
// so a re-run resumes and uninstall undoes only what was added.
type Record struct {
	Version int `json:"version"`
	// Options are the options of the last install, without the token.
	Options Options `json:"options"`
	// Steps maps a finished step's name to when it finished.
	Steps map[string]time.Time `json:"steps"`
	// Added is what the install created (and uninstall may remove).
	Added Added `json:"added"`
}

// Added lists what an install created.
type Added struct {
	Group          bool `json:"group,omitempty"`          // ggc_group
	User           bool `json:"user,omitempty"`           // ggc_user
	GreengrassRoot bool `json:"greengrassRoot,omitempty"` // the Greengrass root did not exist before
	Nucleus        bool `json:"nucleus,omitempty"`        // the nucleus installer ran (greengrass.service)
	NucleusWorkDir bool `json:"nucleusWorkDir,omitempty"`
	Service        bool `json:"service,omitempty"`  // the ggagent unit
	Defaults       bool `json:"defaults,omitempty"` // /etc/default/ggagent
}

func (e *Env) loadRecord() error {
	e.rec = &Record{Version: 1, Steps: map[string]time.Time{}}
	if e.dir == nil {
		return nil
	}
	err := e.dir.ReadJSON(RecordFile, e.rec)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if e.rec.Steps == nil {
		e.rec.Steps = map[string]time.Time{}
	}
	return nil
}

func (e *Env) saveRecord() error {
	if e.dir == nil {
		return errors.New("install record: no state directory")
	}
	e.rec.Version = 1
	opts := e.Options
	opts.Token = "" // never stored
	e.rec.Options = opts
	return e.dir.WriteJSON(RecordFile, e.rec)
}

// Step is one stage of the install.
type Step struct {
	// Name is the step's id in install.json.
	Name string
	// Title is its progress line, e.g. "create user ggc_user:ggc_group".
	Title string
	// Describe says what Run would do (for --dry-run).
	Describe func(e *Env) string
	// Done reports whether the step's result is already in place; it
	// changes nothing.
	Done func(ctx context.Context, e *Env) (bool, error)
	// Run does the step; it is safe to repeat.
	Run func(ctx context.Context, e *Env) error
	// Undo removes what Run added, as recorded in Env's Record (nil: nothing to undo).
	Undo func(ctx context.Context, e *Env) error
}

// Plan is the ordered steps for the options.
func Plan(o Options) []Step {
	o = o.withDefaults()
	steps := []Step{preflightStep()}
	if o.CDF() {
		steps = append(steps, importStep())
	} else {
		steps = append(steps, enrollStep())
	}
	if o.Runtime == RuntimeGreengrass {
		steps = append(steps, nucleusZipStep(), userStep(), nucleusStep())
	}
	if !o.NoService {
		steps = append(steps, serviceStep(), waitStep())
	}
	return append(steps, summaryStep())
}

// Install runs the plan, printing a progress line per step. It stops at the
// first failing step, which is not recorded as done; re-running resumes.
func Install(ctx context.Context, e *Env) error {
	if err := e.init(); err != nil {
		return err
	}
	if err := e.Options.Validate(); err != nil {
		return err
	}
	steps := Plan(e.Options)
	for i, s := range steps {
		fmt.Fprintf(e.Out, "[%d/%d] %s … ", i+1, len(steps), s.Title)
		done, err := s.Done(ctx, e)
		if err != nil {
			fmt.Fprintln(e.Out, "FAILED")
			return fmt.Errorf("%s: %w", s.Title, err)
		}
		if done {
			fmt.Fprintln(e.Out, "done (already present)")
		} else {
			if err := s.Run(ctx, e); err != nil {
				fmt.Fprintln(e.Out, "FAILED")
				return fmt.Errorf("%s: %w", s.Title, err)
			}
			fmt.Fprintln(e.Out, "done")
		}
		if e.dir != nil {
			e.rec.Steps[s.Name] = e.Now().UTC().Truncate(time.Second)
			if err := e.saveRecord(); err != nil {
				return fmt.Errorf("%s: %w", s.Title, err)
			}
		}
	}
	return nil
}

// DryRun prints every step with what it would do, and what is already in
// place, and changes nothing. Preflight problems are listed, not fatal.
func DryRun(ctx context.Context, e *Env) error {
	if err := e.init(); err != nil {
		return err
	}
	if err := e.Options.Validate(); err != nil {
		return err
	}
	if dir, err := statedir.OpenExisting(e.Options.StateDir); err == nil {
		e.dir = dir
	}
	if err := e.loadRecord(); err != nil {
		return err
	}
	steps := Plan(e.Options)
	fmt.Fprintln(e.Out, "Dry run: nothing will be changed. ggagent install would:")
	for i, s := range steps {
		state := ""
		if s.Name == "preflight" {
			if probs := preflightProblems(ctx, e); len(probs) > 0 {
				state = "   would FAIL:\n     - " + strings.Join(probs, "\n     - ")
			}
		} else {
			if done, err := s.Done(ctx, e); err == nil && done {
				state = "   (already done: would be skipped)"
			}
		}
		fmt.Fprintf(e.Out, "[%d/%d] %s\n   %s\n", i+1, len(steps), s.Title, s.Describe(e))
		if state != "" {
			fmt.Fprintln(e.Out, state)
		}
	}
	return nil
}

// Uninstall undoes what the recorded install added, newest step first: the
// ggagent service, the nucleus and its service, the users, the unzipped
// nucleus. It keeps the state directory (the identity) unless purge, and
// says what it kept.
func Uninstall(ctx context.Context, e *Env, purge bool) error {
	if err := e.init(); err != nil {
		return err
	}
	dir, err := statedir.OpenExisting(e.Options.StateDir)
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(e.Out, "Nothing to uninstall: the state directory %s does not exist.\n", e.Options.StateDir)
		return nil
	}
	if err != nil {
		return err
	}
	e.dir = dir
	if err := e.loadRecord(); err != nil {
		return err
	}
	if len(e.rec.Steps) == 0 && e.rec.Added == (Added{}) {
		fmt.Fprintf(e.Out, "No install is recorded in %s: nothing of an install to remove.\n", dir.File(RecordFile))
	} else {
		// Undo with the options the install used (paths, runtime).
		saved := e.rec.Options
		saved.Executable = e.Options.Executable
		e.Options = saved.withDefaults()
		steps := Plan(e.Options)
		var errs []error
		for i := len(steps) - 1; i >= 0; i-- {
			s := steps[i]
			if s.Undo == nil {
				continue
			}
			fmt.Fprintf(e.Out, "undo: %s … ", s.Title)
			if err := s.Undo(ctx, e); err != nil {
				fmt.Fprintln(e.Out, "FAILED")
				errs = append(errs, fmt.Errorf("undo %s: %w", s.Title, err))
				continue
			}
			delete(e.rec.Steps, s.Name)
			fmt.Fprintln(e.Out, "done")
		}
		if err := e.saveRecord(); err != nil {
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
	}
	if purge {
		if err := os.RemoveAll(dir.Path()); err != nil {
			return fmt.Errorf("purge the state directory: %w", err)
		}
		fmt.Fprintf(e.Out, "Removed the state directory %s (the device identity is gone: enroll again with a new token).\n", dir.Path())
		keptProgram(e)
		return nil
	}
	if err := dir.Remove(RecordFile); err != nil {
		return err
	}
	fmt.Fprintf(e.Out, "Kept the state directory %s with the device identity (key and certificate): a new install reuses it without a token. Remove it with --purge.\n", dir.Path())
	keptProgram(e)
	return nil
}

// keptProgram says that uninstall leaves the ggagent program itself: the
// package manager owns a packaged one, and a copy install.sh placed is the
// operator's to delete.
func keptProgram(e *Env) {
	exe := e.Options.Executable
	if exe == "" {
		if p, err := os.Executable(); err == nil {
			exe = p
		}
	}
	if exe == "" {
		return
	}
	fmt.Fprintf(e.Out, "Kept the ggagent program %s: a package removes it (dpkg -r ggagent, rpm -e ggagent); a copy install.sh placed goes with rm %s.\n", exe, exe)
}

// markAdded records at once that the install created something, so an
// uninstall after a later failure still removes it.
func (e *Env) markAdded(f func(*Added)) error {
	f(&e.rec.Added)
	return e.saveRecord()
}

// openStateDir opens (creating) the state directory and loads the record.
func (e *Env) openStateDir() error {
	if e.dir != nil {
		return nil
	}
	dir, err := statedir.Open(e.Options.StateDir)
	if err != nil {
		return err
	}
	e.dir = dir
	return e.loadRecord()
}
