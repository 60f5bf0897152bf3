package patch

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/ggfleet/ggfleet/patcher"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

// Step and file defaults.
const (
	defaultStepTimeout      = 300 * time.Second
	defaultReconnectTimeout = 300 * time.Second
	defaultMaxOutput        = 16 << 10
	// maxOutputCap keeps a step-finished event under the MQTT payload limit.
	maxOutputCap = 32 << 10
	maxRetries   = 100
)

// plan is a checked job with every template rendered: what execute does.
type plan struct {
	job            patchmsg.Job
	workdir        string
	defaultWorkdir bool
	// become is the template default, used for workdir and file placement.
	become bool
	// user is the login user on the device ("" if unknown); root needs no sudo.
	user  string
	files []planFile
	steps []planStep
	// credRef is the target's credential reference ("" if none).
	credRef string
	// data is what templates see (for sources rendered after download).
	data *tmplData
}

type planFile struct {
	path   string
	mode   os.FileMode
	owner  string
	data   []byte // inline source (rendered if template)
	url    string
	sha256 string // expected digest of the source
	render bool   // render a downloaded source as a template
	pull   bool   // the device downloads it itself
}

type planStep struct {
	index            int
	name             string
	script           string
	env              map[string]string
	dir              string
	become           bool
	timeout          time.Duration
	expect           []int
	retries          int
	retryDelay       time.Duration
	continueOnError  bool
	expectDisconnect bool
	reconnectTimeout time.Duration
	onInterrupt      string
	capture          string
	maxOutput        int
}

var safeID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
var ownerRE = regexp.MustCompile(`^[A-Za-z0-9._-]+(:[A-Za-z0-9._-]+)?$`)

// check validates a job against this core and builds its plan. On failure
// it returns the rejection reason (BAD_JOB, UNKNOWN_TARGET,
// CREDENTIAL_MISSING) and what is wrong.
func (r *Runner) check(job patchmsg.Job) (*plan, string, error) {
	if !safeID.MatchString(job.PatchID) {
		return nil, patchmsg.RejectBadJob, fmt.Errorf("patchId %q must be 1-128 letters, digits, '.', '_' or '-'", job.PatchID)
	}
	if job.Schema != "" && job.Schema != patchmsg.JobSchema {
		return nil, patchmsg.RejectBadJob, fmt.Errorf("schema %q is not %q", job.Schema, patchmsg.JobSchema)
	}
	t := job.Target
	if t.DeviceID == "" || t.Connection.Type == "" {
		return nil, patchmsg.RejectUnknownTarget, fmt.Errorf("the job carries no connection profile for device %q", job.DeviceID)
	}
	if t.DeviceID != job.DeviceID {
		return nil, patchmsg.RejectBadJob, fmt.Errorf("target deviceId %q differs from the job's %q", t.DeviceID, job.DeviceID)
	}
	if r.cfg.CoreName != "" && t.CoreName != "" && t.CoreName != r.cfg.CoreName {
		return nil, patchmsg.RejectUnknownTarget, fmt.Errorf("device %q is reached through core %q, not this core (%q)", t.DeviceID, t.CoreName, r.cfg.CoreName)
	}
	if err := checkTarget(t); err != nil {
		return nil, patchmsg.RejectBadJob, err
	}
	ref := credRef(t)
	if ref != "" && !r.creds.Exists(ref) {
		name, _ := patchmsg.CredentialName(ref)
		return nil, patchmsg.RejectCredentialMissing, fmt.Errorf("credential %q is not stored on core %q: run `ggagent credentials set %s --from-file FILE` there", ref, r.cfg.CoreName, name)
	}
	p, err := buildPlan(job, r.cfg.CoreName)
	if err != nil {
		return nil, patchmsg.RejectBadJob, err
	}
	p.credRef = ref
	return p, "", nil
}

// checkTarget is Target.Validate plus what this agent's transports need.
func checkTarget(t patchmsg.Target) error {
	if err := t.Validate(); err != nil {
		return fmt.Errorf("target profile: %w", err)
	}
	c := t.Connection
	if c.Type == patchmsg.ConnSerial {
		if (c.DataBits != 0 && c.DataBits != 8) || (c.Parity != "" && c.Parity != "none") || (c.StopBits != 0 && c.StopBits != 1) {
			return errors.New("target profile: only 8 data bits, no parity, 1 stop bit (8N1) is supported on serial consoles")
		}
		if c.Login != nil {
			for name, p := range map[string]string{"loginPrompt": c.Login.LoginPrompt, "passwordPrompt": c.Login.PasswordPrompt, "shellPrompt": c.Login.ShellPrompt} {
				if _, err := regexp.Compile(p); err != nil {
					return fmt.Errorf("target profile: connection.login.%s is not a valid regular expression: %v", name, err)
				}
			}
		}
	}
	if c.Type == patchmsg.ConnSSH && (c.HostKeyPolicy == "" || c.HostKeyPolicy == patchmsg.HostKeyStrict) {
		if _, err := parseHostKey(c.HostKey); err != nil {
			return fmt.Errorf("target profile: connection.hostKey: %w", err)
		}
	}
	return nil
}

// credRef is the target's credential reference, if any.
func credRef(t patchmsg.Target) string {
	switch t.Connection.Type {
	case patchmsg.ConnSSH:
		if t.Connection.Auth != nil {
			return t.Connection.Auth.CredentialRef
		}
	case patchmsg.ConnSerial:
		if t.Connection.Login != nil {
			return t.Connection.Login.CredentialRef
		}
	}
	return ""
}

// loginUser is the user the transport logs in as.
func loginUser(t patchmsg.Target) string {
	switch t.Connection.Type {
	case patchmsg.ConnSSH:
		return t.Connection.Username
	case patchmsg.ConnSerial:
		if t.Connection.Login != nil && t.Connection.Login.Username != "" {
			return t.Connection.Login.Username
		}
	}
	return ""
}

// tmplData is what templates see: .Vars, .Patch.ID, .Patch.Attempt,
// .Device.ID, .Core.Name, .WorkDir.
type tmplData struct {
	Vars  map[string]string
	Patch struct {
		ID      string
		Attempt int
	}
	Device  struct{ ID string }
	Core    struct{ Name string }
	WorkDir string
}

var tmplFuncs = template.FuncMap{"shq": patcher.ShellQuote}

func render(name, text string, data *tmplData) (string, error) {
	if !strings.Contains(text, "{{") {
		return text, nil
	}
	t, err := template.New(name).Funcs(tmplFuncs).Option("missingkey=error").Parse(text)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return b.String(), nil
}

// varEnvName is PATCH_VAR_<NAME>: upper case, anything but letters, digits
// and '_' becomes '_'.
func varEnvName(name string) string {
	b := []byte(strings.ToUpper(name))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	return "PATCH_VAR_" + string(b)
}

var shellRE = regexp.MustCompile(`^/?[A-Za-z0-9._/+-]+$`)

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// buildPlan checks the template and renders paths, inline files and step
// scripts. It does no I/O.
func buildPlan(job patchmsg.Job, coreName string) (*plan, error) {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	tp := job.Template
	p := &plan{job: job, become: tp.Defaults.Become, user: loginUser(job.Target)}

	p.workdir = tp.Defaults.Workdir
	if p.workdir == "" {
		p.workdir = "/tmp/ggpatch-" + job.PatchID + "-" + strconv.Itoa(job.Attempt)
		p.defaultWorkdir = true
	} else if !path.IsAbs(p.workdir) {
		add("defaults.workdir %q must be an absolute path", p.workdir)
	}

	vars := map[string]string{}
	for k, v := range job.Vars {
		if tp.VarsEncoding == "base64" {
			v = base64.StdEncoding.EncodeToString([]byte(v))
		}
		vars[k] = v
	}
	if tp.VarsEncoding != "" && tp.VarsEncoding != "base64" {
		add("template.varsEncoding %q: only \"base64\" is known", tp.VarsEncoding)
	}
	data := &tmplData{Vars: vars, WorkDir: p.workdir}
	data.Patch.ID, data.Patch.Attempt = job.PatchID, job.Attempt
	data.Device.ID, data.Core.Name = job.DeviceID, coreName
	p.data = data

	for i, f := range tp.Files {
		where := fmt.Sprintf("files[%d]", i)
		pf := planFile{sha256: strings.ToLower(f.SHA256), owner: f.Owner, pull: f.Transfer == "pull"}
		if f.Transfer != "" && f.Transfer != "push" && f.Transfer != "pull" {
			add("%s.transfer %q must be push or pull", where, f.Transfer)
		}
		pth, err := render(where+".path", f.Path, data)
		if err != nil {
			add("%v", err)
		} else if !path.IsAbs(pth) || path.Clean(pth) != pth || pth == "/" {
			add("%s.path %q must be a clean absolute file path", where, pth)
		}
		pf.path = pth
		pf.mode = 0o644
		if f.Mode != "" {
			m, err := strconv.ParseUint(f.Mode, 8, 32)
			if err != nil || m > 0o7777 {
				add("%s.mode %q must be octal permission bits such as \"0644\"", where, f.Mode)
			}
			pf.mode = os.FileMode(m)
		}
		if f.Owner != "" && !ownerRE.MatchString(f.Owner) {
			add("%s.owner %q must look like user or user:group", where, f.Owner)
		}
		if pf.sha256 != "" {
			if b, err := hex.DecodeString(pf.sha256); err != nil || len(b) != sha256.Size {
				add("%s.sha256 must be 64 hex digits", where)
			}
		}
		n := 0
		for _, s := range []string{f.Source.Inline, f.Source.URL, f.Source.Artifact} {
			if s != "" {
				n++
			}
		}
		switch {
		case n != 1 && !(n == 2 && f.Source.Artifact != "" && f.Source.URL != ""):
			add("%s.source must have exactly one of inline, url or artifact", where)
		case f.Source.Inline != "":
			if pf.pull {
				add("%s: transfer pull needs a url source", where)
			}
			raw, err := base64.StdEncoding.DecodeString(f.Source.Inline)
			if err != nil {
				add("%s.source.inline is not valid base64: %v", where, err)
				break
			}
			if pf.sha256 != "" && !f.Template {
				if sum := sha256.Sum256(raw); hex.EncodeToString(sum[:]) != pf.sha256 {
					add("%s: inline content has sha256 %x, not the declared %s", where, sum, pf.sha256)
				}
			}
			if f.Template {
				s, err := render(where, string(raw), data)
				if err != nil {
					add("%v", err)
				}
				raw = []byte(s)
			}
			pf.data = raw
			sum := sha256.Sum256(raw)
			pf.sha256 = hex.EncodeToString(sum[:])
		default:
			// An artifact reaches the agent as a URL the broker filled in.
			if f.Source.URL == "" {
				add("%s: artifact %q was not resolved to a url by the broker", where, f.Source.Artifact)
				break
			}
			u, err := url.Parse(f.Source.URL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				add("%s.source.url must be an http(s) URL", where)
			}
			if pf.sha256 == "" {
				add("%s.sha256 is required for a url or artifact source", where)
			}
			if f.Template && pf.pull {
				add("%s: a template cannot be pulled by the device (the agent renders templates)", where)
			}
			pf.url, pf.render = f.Source.URL, f.Template
		}
		p.files = append(p.files, pf)
	}

	names := map[string]bool{}
	baseEnv := map[string]string{
		"PATCH_ID": job.PatchID, "PATCH_ATTEMPT": strconv.Itoa(job.Attempt),
		"PATCH_DEVICE_ID": job.DeviceID, "PATCH_WORKDIR": p.workdir,
	}
	for k, v := range vars {
		baseEnv[varEnvName(k)] = v
	}
	for i, s := range tp.Steps {
		where := fmt.Sprintf("steps[%d]", i)
		if s.Name == "" {
			add("%s.name is required", where)
		} else if names[s.Name] {
			add("%s.name %q is used twice; step names must be unique", where, s.Name)
		}
		names[s.Name] = true
		if strings.TrimSpace(s.Run) == "" {
			add("%s.run is empty", where)
		}
		script, err := render(where+".run", s.Run, data)
		if err != nil {
			add("%v", err)
		}
		ps := planStep{index: i, name: s.Name, script: script, dir: p.workdir, become: tp.Defaults.Become,
			retries: s.Retries, retryDelay: time.Duration(s.RetryDelaySeconds) * time.Second,
			continueOnError: s.ContinueOnError, expectDisconnect: s.ExpectDisconnect,
			onInterrupt: s.OnInterrupt, capture: s.CaptureOutput}
		shell := s.Shell
		if shell == "" {
			shell = tp.Defaults.Shell
		}
		switch {
		case shell == "" || shell == "sh" || shell == "/bin/sh":
		case shellRE.MatchString(shell):
			ps.script = "exec " + patcher.ShellQuote(shell) + " -c " + patcher.ShellQuote(script)
		default:
			add("%s.shell %q must be a program path", where, shell)
		}
		if s.Workdir != "" {
			if !path.IsAbs(s.Workdir) {
				add("%s.workdir %q must be an absolute path", where, s.Workdir)
			}
			ps.dir = s.Workdir
		}
		if s.Become != nil {
			ps.become = *s.Become
		}
		ps.timeout = defaultStepTimeout
		if tp.Defaults.TimeoutSeconds > 0 {
			ps.timeout = time.Duration(tp.Defaults.TimeoutSeconds) * time.Second
		}
		if s.TimeoutSeconds > 0 {
			ps.timeout = time.Duration(s.TimeoutSeconds) * time.Second
		}
		if s.TimeoutSeconds < 0 || s.RetryDelaySeconds < 0 || s.ReconnectTimeoutSeconds < 0 {
			add("%s: timeouts and delays must not be negative", where)
		}
		if s.Retries < 0 || s.Retries > maxRetries {
			add("%s.retries must be from 0 to %d", where, maxRetries)
		}
		ps.expect = s.ExpectExitCodes
		if len(ps.expect) == 0 {
			ps.expect = []int{0}
		}
		for _, c := range ps.expect {
			if c < 0 || c > 255 {
				add("%s.expectExitCodes: %d is not an exit code (0-255)", where, c)
			}
		}
		ps.reconnectTimeout = defaultReconnectTimeout
		if s.ReconnectTimeoutSeconds > 0 {
			ps.reconnectTimeout = time.Duration(s.ReconnectTimeoutSeconds) * time.Second
		}
		switch s.OnInterrupt {
		case "", patchmsg.OnInterruptFail, patchmsg.OnInterruptRerun:
		default:
			add("%s.onInterrupt %q must be fail or rerun", where, s.OnInterrupt)
		}
		switch s.CaptureOutput {
		case "", "tail", "full", "none":
		default:
			add("%s.captureOutput %q must be tail, full or none", where, s.CaptureOutput)
		}
		ps.maxOutput = defaultMaxOutput
		if job.Report.MaxOutputBytes > 0 {
			ps.maxOutput = job.Report.MaxOutputBytes
		}
		if s.MaxOutputBytes > 0 {
			ps.maxOutput = s.MaxOutputBytes
		}
		if s.MaxOutputBytes < 0 {
			add("%s.maxOutputBytes must not be negative", where)
		}
		ps.maxOutput = min(ps.maxOutput, maxOutputCap)
		if s.CaptureOutput == "none" {
			ps.maxOutput = 0
		}
		ps.env = map[string]string{}
		for k, v := range baseEnv {
			ps.env[k] = v
		}
		for k, v := range s.Env {
			if !envNameRE.MatchString(k) {
				add("%s.env: %q is not an environment variable name", where, k)
			}
			ps.env[k] = v
		}
		p.steps = append(p.steps, ps)
	}
	if job.Report.Logs != "" && job.Report.Logs != "stream" && job.Report.Logs != "none" {
		add("report.logs %q must be stream or none", job.Report.Logs)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}
