package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/broker/patches"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
	"github.com/spf13/pflag"
)

// kindPatch is the patch task kind (its API collection).
const kindPatch = "patchTasks"

// patchTaskDoc is what `patch run` and `tasks show` print for a patch
// task with -o json|yaml: the task and its patches.
type patchTaskDoc struct {
	Task    patches.Task    `json:"task"`
	Patches []patches.Patch `json:"patches"`
}

// itemStatus maps a patch status to the task item vocabulary the
// progress display counts.
func itemStatus(s string) string {
	switch s {
	case patchmsg.PatchSuccess:
		return cdf.StatusSuccess
	case patchmsg.PatchFailed:
		return cdf.StatusFailure
	}
	return cdf.StatusInProgress
}

// fetchPatchTask reads a patch task and every patch of it as a taskView.
func fetchPatchTask(c *cmdCtx, id string) (taskView, error) {
	v := taskView{ID: id, Kind: kindPatch, Type: "Patch"}
	var t patches.Task
	if err := c.api.Do(c.ctx, http.MethodGet, "/patchTasks/"+url.PathEscape(id), nil, &t); err != nil {
		return v, err
	}
	var all []patches.Patch
	err := pages(c, "/patchTasks/"+url.PathEscape(id)+"/patches", "", func(raw json.RawMessage) (int, error) {
		var l struct {
			Patches []patches.Patch `json:"patches"`
		}
		err := json.Unmarshal(raw, &l)
		all = append(all, l.Patches...)
		return len(l.Patches), err
	})
	if err != nil {
		return v, err
	}
	switch t.Status {
	case patches.TaskSuccess:
		v.Status = cdf.StatusSuccess
	case patches.TaskFailed:
		v.Status = cdf.StatusFailure
	default:
		v.Status = cdf.StatusInProgress
	}
	v.CreatedAt, v.UpdatedAt = t.CreatedAt, t.UpdatedAt
	v.Items = []taskItem{}
	for _, p := range all {
		v.Items = append(v.Items, taskItem{Name: p.DeviceID, Status: itemStatus(p.PatchStatus), StatusMessage: p.StatusMessage})
	}
	v.raw = patchTaskDoc{Task: t, Patches: nonNil(all)}
	return v, nil
}

// patchTemplateDoc reads a template file; update keeps the name from the
// command line.
func patchTemplateDoc(file, name string) (map[string]any, error) {
	doc, err := readDocument(file)
	if err != nil {
		return nil, err
	}
	if name != "" {
		if n, ok := doc["name"].(string); ok && n != name {
			return nil, usagef("the file names patch template %q but the command names %q", n, name)
		}
		delete(doc, "name")
	}
	return doc, nil
}

func showPatchTemplate(c *cmdCtx, name string, version int) error {
	path := "/patchTemplates/" + url.PathEscape(name)
	if version > 0 {
		path += "?versionNo=" + strconv.Itoa(version)
	}
	var t patches.Template
	if err := c.api.Do(c.ctx, http.MethodGet, path, nil, &t); err != nil {
		return fmt.Errorf("show patch template %q: %w", name, err)
	}
	return emit(c, t, func(w io.Writer) { patchTemplateDetail(w, t) })
}

func patchTemplateDetail(w io.Writer, t patches.Template) {
	enabled := "no"
	if t.Enabled {
		enabled = "yes"
	}
	fields(w, [][2]string{{"Name", t.Name}, {"Version", itoa(t.VersionNo)}, {"Type", t.PatchType}, {"Enabled", enabled},
		{"Description", t.Description}, {"Playbook", t.PlaybookName}, {"Created", ts(t.CreatedAt)}, {"Updated", ts(t.UpdatedAt)}})
	if len(t.ExtraVars) > 0 {
		fmt.Fprintln(w)
		var rows [][]string
		for _, k := range sortedKeys(t.ExtraVars) {
			rows = append(rows, []string{k, t.ExtraVars[k]})
		}
		table(w, []string{"VAR", "DEFAULT"}, rows)
	}
	if len(t.Files) > 0 {
		fmt.Fprintln(w)
		var rows [][]string
		for _, f := range t.Files {
			rows = append(rows, []string{f.Path, f.Mode})
		}
		table(w, []string{"FILE", "MODE"}, rows)
	}
	if len(t.Steps) > 0 {
		fmt.Fprintln(w)
		var rows [][]string
		for _, s := range t.Steps {
			rows = append(rows, []string{s.Name, firstLine(s.Run)})
		}
		table(w, []string{"STEP", "RUN"}, rows)
	}
}

// firstLine is s up to its first newline, with … when more follows.
func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

func patchTemplateCommands() []subcommand {
	return []subcommand{
		{name: "patch templates create", args: "-f FILE", summary: "Create a patch template from a YAML or JSON file (name, steps, files, extraVars, ...)",
			setup: func(fs *pflag.FlagSet) runFunc {
				file := fs.StringP("file", "f", "", "YAML or JSON file with the template (- for stdin)")
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 0, "no arguments (the name is in the file)"); err != nil {
						return err
					}
					doc, err := patchTemplateDoc(*file, "")
					if err != nil {
						return err
					}
					name, _ := doc["name"].(string)
					if name == "" {
						return usagef("%s names no template: add name: ...", *file)
					}
					if err := c.api.Do(c.ctx, http.MethodPost, "/patchTemplates", doc, nil); err != nil {
						return fmt.Errorf("create patch template %q: %w", name, err)
					}
					return showPatchTemplate(c, name, 0)
				}
			}},
		{name: "patch templates update", args: "NAME -f FILE", summary: "Make a new version of a patch template from the fields in a YAML or JSON file",
			setup: func(fs *pflag.FlagSet) runFunc {
				file := fs.StringP("file", "f", "", "YAML or JSON file with the fields to change (- for stdin)")
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 1, "the patch template NAME"); err != nil {
						return err
					}
					doc, err := patchTemplateDoc(*file, args[0])
					if err != nil {
						return err
					}
					if err := c.api.Do(c.ctx, http.MethodPatch, "/patchTemplates/"+url.PathEscape(args[0]), doc, nil); err != nil {
						return fmt.Errorf("update patch template %q: %w", args[0], err)
					}
					return showPatchTemplate(c, args[0], 0)
				}
			}},
		{name: "patch templates list", args: "", summary: "List patch templates (latest versions)",
			setup: func(fs *pflag.FlagSet) runFunc {
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 0, "no arguments"); err != nil {
						return err
					}
					var all []patches.Template
					err := pages(c, "/patchTemplates", "", func(raw json.RawMessage) (int, error) {
						var l struct {
							Templates []patches.Template `json:"templates"`
						}
						err := json.Unmarshal(raw, &l)
						all = append(all, l.Templates...)
						return len(l.Templates), err
					})
					if err != nil {
						return fmt.Errorf("list patch templates: %w", err)
					}
					return emit(c, map[string]any{"templates": nonNil(all)}, func(w io.Writer) {
						var rows [][]string
						for _, t := range all {
							enabled := "no"
							if t.Enabled {
								enabled = "yes"
							}
							rows = append(rows, []string{t.Name, itoa(t.VersionNo), t.PatchType, enabled, strconv.Itoa(len(t.Steps)), ts(t.UpdatedAt)})
						}
						table(w, []string{"NAME", "VERSION", "TYPE", "ENABLED", "STEPS", "UPDATED"}, rows)
					})
				}
			}},
		{name: "patch templates show", args: "NAME [--version N]", summary: "Show a patch template (the latest version, or --version)",
			setup: func(fs *pflag.FlagSet) runFunc {
				version := fs.Int("version", 0, "show this version instead of the latest")
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 1, "the patch template NAME"); err != nil {
						return err
					}
					return showPatchTemplate(c, args[0], *version)
				}
			}},
		{name: "patch templates delete", args: "NAME", summary: "Delete a patch template and all its versions",
			setup: deleteByName("patch template", "the patch template NAME", "/patchTemplates/")},
		{name: "patch templates upload", args: "NAME ARTIFACT FILE", summary: "Upload a file as a template's artifact (files[].source.artifact)",
			setup: func(fs *pflag.FlagSet) runFunc {
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 3, "the patch template NAME, the ARTIFACT name and the FILE"); err != nil {
						return err
					}
					data, err := os.ReadFile(args[2])
					if err != nil {
						return usagef("%v", err)
					}
					var a patches.Artifact
					path := "/patchTemplates/" + url.PathEscape(args[0]) + "/artifacts/" + url.PathEscape(args[1])
					if err := c.api.DoRaw(c.ctx, http.MethodPut, path, "application/octet-stream", bytes.NewReader(data), &a); err != nil {
						return fmt.Errorf("upload artifact %q of patch template %q: %w", args[1], args[0], err)
					}
					return emit(c, a, func(w io.Writer) {
						fields(w, [][2]string{{"Template", a.TemplateName}, {"Artifact", a.Name}, {"Bytes", strconv.FormatInt(a.Bytes, 10)}, {"SHA-256", a.SHA256}})
					})
				}
			}},
	}
}

// sshTarget builds an SSH target profile from flags.
func sshTarget(device, core, target, authMethod, credRef, hostKey, policy string) (patchmsg.Target, error) {
	user, addr, err := parseSSHTarget(target)
	if err != nil {
		return patchmsg.Target{}, usagef("%v", err)
	}
	host, portText, _ := strings.Cut(addr, "]:")
	host = strings.TrimPrefix(host, "[")
	if !strings.HasPrefix(addr, "[") {
		i := strings.LastIndexByte(addr, ':')
		host, portText = addr[:i], addr[i+1:]
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return patchmsg.Target{}, usagef("--ssh %q: the port is not a number", target)
	}
	if credRef == "" {
		return patchmsg.Target{}, usagef("--credential-ref is required: where the core finds the key or password (e.g. core:%s-key); secrets never go to the broker", device)
	}
	return patchmsg.Target{DeviceID: device, CoreName: core, Connection: patchmsg.Connection{
		Type: patchmsg.ConnSSH, Host: host, Port: port, Username: user,
		Auth:    &patchmsg.Auth{Method: authMethod, CredentialRef: credRef},
		HostKey: hostKey, HostKeyPolicy: policy,
	}}, nil
}

func patchTargetCommands() []subcommand {
	return []subcommand{
		{name: "patch targets set", args: "DEVICE --core CORE --ssh user@host[:port] --credential-ref REF | -f FILE", summary: "Create or replace how a core reaches a client device (its target profile)",
			setup: func(fs *pflag.FlagSet) runFunc {
				file := fs.StringP("file", "f", "", "YAML or JSON file with the whole profile (ssh or serial)")
				core := fs.String("core", "", "the core that reaches the device")
				target := fs.String("ssh", "", "SSH: user@host[:port]")
				auth := fs.String("auth", "privateKey", "SSH auth method: privateKey or password")
				cred := fs.String("credential-ref", "", "where the core finds the secret, e.g. core:plc-07-key (never the secret itself)")
				hostKey := fs.String("host-key", "", "the device's host key (\"ssh-ed25519 AAAA...\"), for strict checking")
				policy := fs.String("host-key-policy", "", "strict (needs --host-key), tofu, or insecure (tests only); default strict with --host-key, else tofu")
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 1, "the DEVICE id"); err != nil {
						return err
					}
					var body any
					switch {
					case *file != "" && (*target != "" || *core != ""):
						return usagef("give -f FILE or --core/--ssh, not both")
					case *file != "":
						doc, err := readDocument(*file)
						if err != nil {
							return err
						}
						if id, ok := doc["deviceId"].(string); ok && id != args[0] {
							return usagef("the file names device %q but the command names %q", id, args[0])
						}
						doc["deviceId"] = args[0]
						body = doc
					default:
						if *core == "" || *target == "" {
							return usagef("--core and --ssh are required (or -f FILE for a serial or full profile)")
						}
						p := *policy
						if p == "" {
							p = patchmsg.HostKeyTOFU
							if *hostKey != "" {
								p = patchmsg.HostKeyStrict
							}
						}
						t, err := sshTarget(args[0], *core, *target, *auth, *cred, *hostKey, p)
						if err != nil {
							return err
						}
						body = t
					}
					var t patches.Target
					if err := c.api.Do(c.ctx, http.MethodPut, "/targets/"+url.PathEscape(args[0]), body, &t); err != nil {
						return fmt.Errorf("set target %q: %w", args[0], err)
					}
					return emit(c, t, func(w io.Writer) { targetDetail(w, t) })
				}
			}},
		{name: "patch targets list", args: "[--core CORE]", summary: "List target profiles",
			setup: func(fs *pflag.FlagSet) runFunc {
				core := fs.String("core", "", "only the devices this core reaches")
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 0, "no arguments"); err != nil {
						return err
					}
					q := url.Values{}
					if *core != "" {
						q.Set("coreName", *core)
					}
					var all []patches.Target
					err := pages(c, "/targets", q.Encode(), func(raw json.RawMessage) (int, error) {
						var l struct {
							Targets []patches.Target `json:"targets"`
						}
						err := json.Unmarshal(raw, &l)
						all = append(all, l.Targets...)
						return len(l.Targets), err
					})
					if err != nil {
						return fmt.Errorf("list targets: %w", err)
					}
					return emit(c, map[string]any{"targets": nonNil(all)}, func(w io.Writer) {
						var rows [][]string
						for _, t := range all {
							probe := ""
							if t.LastProbe != nil {
								probe = t.LastProbe.Status
							}
							rows = append(rows, []string{t.DeviceID, t.CoreName, t.Connection.Type, connectionAddr(t.Connection), probe})
						}
						table(w, []string{"DEVICE", "CORE", "TYPE", "ADDRESS", "LAST PROBE"}, rows)
					})
				}
			}},
		{name: "patch targets show", args: "DEVICE", summary: "Show a target profile and its last probe",
			setup: func(fs *pflag.FlagSet) runFunc {
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 1, "the DEVICE id"); err != nil {
						return err
					}
					var t patches.Target
					if err := c.api.Do(c.ctx, http.MethodGet, "/targets/"+url.PathEscape(args[0]), nil, &t); err != nil {
						return fmt.Errorf("show target %q: %w", args[0], err)
					}
					return emit(c, t, func(w io.Writer) { targetDetail(w, t) })
				}
			}},
		{name: "patch targets delete", args: "DEVICE", summary: "Delete a target profile",
			setup: deleteByName("target", "the DEVICE id", "/targets/")},
		{name: "patch targets probe", args: "DEVICE [--no-wait]", summary: "Ask the core to reach the device (log in, uname -a, host key) and wait for the answer",
			setup: func(fs *pflag.FlagSet) runFunc {
				noWait := fs.Bool("no-wait", false, "print the probe id and return at once")
				timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the core's answer")
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 1, "the DEVICE id"); err != nil {
						return err
					}
					var p patches.Probe
					path := "/targets/" + url.PathEscape(args[0])
					if err := c.api.Do(c.ctx, http.MethodPost, path+"/probe", map[string]any{}, &p); err != nil {
						return fmt.Errorf("probe target %q: %w", args[0], err)
					}
					if *noWait {
						return emit(c, p, func(w io.Writer) { fmt.Fprintln(w, p.ProbeID) })
					}
					deadline := time.Now().Add(*timeout)
					for {
						var t patches.Target
						if err := c.api.Do(c.ctx, http.MethodGet, path, nil, &t); err != nil {
							if c.ctx.Err() != nil {
								return &interruptedError{msg: "stopped waiting; the probe goes on: ggfleet patch targets show " + args[0]}
							}
							return fmt.Errorf("read target %q: %w", args[0], err)
						}
						if lp := t.LastProbe; lp != nil && lp.ProbeID == p.ProbeID && lp.Status != "requested" {
							if err := emit(c, lp, func(w io.Writer) { probeDetail(w, *lp) }); err != nil {
								return err
							}
							if !lp.OK {
								return fmt.Errorf("probe of %s failed: %s", args[0], lp.Error)
							}
							return nil
						}
						if time.Now().After(deadline) {
							return fmt.Errorf("the core %s did not answer probe %s within %s: is it online? (ggfleet cores show %s)", t.CoreName, p.ProbeID, *timeout, t.CoreName)
						}
						select {
						case <-c.ctx.Done():
							return &interruptedError{msg: "stopped waiting; the probe goes on: ggfleet patch targets show " + args[0]}
						case <-time.After(pollInterval):
						}
					}
				}
			}},
	}
}

func connectionAddr(c patchmsg.Connection) string {
	if c.Type == patchmsg.ConnSerial {
		return c.SerialPort
	}
	if c.Host == "" {
		return ""
	}
	addr := c.Host
	if c.Port != 0 {
		addr = fmt.Sprintf("%s:%d", c.Host, c.Port)
	}
	if c.Username != "" {
		addr = c.Username + "@" + addr
	}
	return addr
}

func targetDetail(w io.Writer, t patches.Target) {
	kv := [][2]string{{"Device", t.DeviceID}, {"Core", t.CoreName}, {"Type", t.Connection.Type}, {"Address", connectionAddr(t.Connection)}}
	if t.Connection.Type == patchmsg.ConnSSH {
		kv = append(kv, [2]string{"Host key policy", t.Connection.HostKeyPolicy})
		if a := t.Connection.Auth; a != nil {
			kv = append(kv, [2]string{"Auth", a.Method + " (" + a.CredentialRef + ")"})
		}
	}
	kv = append(kv, [2]string{"Updated", ts(t.UpdatedAt)})
	fields(w, kv)
	if t.LastProbe != nil {
		fmt.Fprintln(w, "\nLast probe:")
		probeDetail(w, *t.LastProbe)
	}
}

func probeDetail(w io.Writer, p patches.Probe) {
	ok := "no"
	if p.OK {
		ok = "yes"
	}
	fields(w, [][2]string{{"Probe", p.ProbeID}, {"Status", p.Status}, {"OK", ok}, {"Uname", strings.TrimSpace(p.Uname)},
		{"Host key", p.HostKeyFingerprint}, {"Error", p.Error}, {"Requested", ts(p.RequestedAt)}, {"Received", tsp(p.ReceivedAt)}})
}

func patchRunCommands() []subcommand {
	return []subcommand{
		{name: "patch run", args: "--template NAME --device ID... [--var K=V] [--no-wait]", summary: "Patch client devices with a template and wait, showing progress",
			setup: func(fs *pflag.FlagSet) runFunc {
				tmpl := fs.String("template", "", "patch template (required)")
				devices := fs.StringSlice("device", nil, "client device id (repeatable, or comma-separated); each needs a target profile")
				vars := fs.StringToString("var", nil, "extra variable KEY=VALUE for every patch (repeatable); overrides the template's")
				patchType := fs.String("patch-type", "agentless", "patchType stored on each patch (informational)")
				maxConc := fs.Int("max-concurrency", 0, "patches running at once (default: the broker's, 10)")
				maxFail := fs.Int("max-failures", 0, "stop the task after this many failed patches (0: never)")
				deadline := fs.Duration("deadline", 0, "fail the task's unfinished patches after this long (0: none)")
				noWait := fs.Bool("no-wait", false, "print the task id and return at once")
				return func(c *cmdCtx, args []string) error {
					all := append(append([]string{}, *devices...), args...)
					if *tmpl == "" {
						return usagef("--template is required")
					}
					if len(all) == 0 {
						return usagef("name the devices to patch: --device ID")
					}
					task := patches.NewTask{}
					for _, d := range all {
						task.Patches = append(task.Patches, patches.NewPatch{DeviceID: d, PatchTemplateName: *tmpl, PatchType: *patchType, ExtraVars: *vars})
					}
					if *maxConc > 0 || *maxFail > 0 || *deadline > 0 {
						task.Options = &patches.TaskOptions{MaxConcurrency: *maxConc, MaxFailures: *maxFail, DeadlineSeconds: int(deadline.Round(time.Second) / time.Second)}
					}
					id, err := createTask(c, "/patchTasks", task)
					if err != nil {
						return fmt.Errorf("create patch task: %w", err)
					}
					return submitted(c, kindPatch, id, *noWait)
				}
			}},
		{name: "patch show", args: "PATCH_ID", summary: "Show a patch with its steps",
			setup: func(fs *pflag.FlagSet) runFunc {
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 1, "the PATCH_ID"); err != nil {
						return err
					}
					var p patches.Patch
					if err := c.api.Do(c.ctx, http.MethodGet, "/patches/"+url.PathEscape(args[0]), nil, &p); err != nil {
						return fmt.Errorf("show patch %q: %w", args[0], err)
					}
					return emit(c, p, func(w io.Writer) { patchDetail(w, p) })
				}
			}},
		{name: "patch retry", args: "PATCH_ID", summary: "Run a failed patch again (a new attempt)",
			setup: func(fs *pflag.FlagSet) runFunc {
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 1, "the PATCH_ID"); err != nil {
						return err
					}
					if err := c.api.Do(c.ctx, http.MethodPatch, "/patches/"+url.PathEscape(args[0]), map[string]string{"patchStatus": patchmsg.PatchRetry}, nil); err != nil {
						return fmt.Errorf("retry patch %q: %w", args[0], err)
					}
					return emit(c, map[string]string{"retried": args[0]}, func(w io.Writer) {
						fmt.Fprintf(w, "patch %s queued again; follow it with: ggfleet patch show %s\n", args[0], args[0])
					})
				}
			}},
		{name: "patch cancel", args: "PATCH_ID", summary: "Cancel a queued or running patch",
			setup: func(fs *pflag.FlagSet) runFunc {
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 1, "the PATCH_ID"); err != nil {
						return err
					}
					var p patches.Patch
					if err := c.api.Do(c.ctx, http.MethodPost, "/patches/"+url.PathEscape(args[0])+"/cancel", map[string]any{}, &p); err != nil {
						return fmt.Errorf("cancel patch %q: %w", args[0], err)
					}
					return emit(c, p, func(w io.Writer) { patchDetail(w, p) })
				}
			}},
		{name: "patch logs", args: "PATCH_ID [--step NAME] [--stream stdout|stderr] [--attempt N]", summary: "Print the stored output of a patch",
			setup: func(fs *pflag.FlagSet) runFunc {
				step := fs.String("step", "", "only this step")
				stream := fs.String("stream", "", "only stdout or stderr")
				attempt := fs.Int("attempt", 0, "this attempt (default: the current one)")
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 1, "the PATCH_ID"); err != nil {
						return err
					}
					q := url.Values{}
					if *step != "" {
						q.Set("step", *step)
					}
					if *stream != "" {
						q.Set("stream", *stream)
					}
					if *attempt > 0 {
						q.Set("attempt", strconv.Itoa(*attempt))
					}
					path := "/patches/" + url.PathEscape(args[0]) + "/logs"
					if enc := q.Encode(); enc != "" {
						path += "?" + enc
					}
					if err := c.api.Do(c.ctx, http.MethodGet, path, nil, c.stdout); err != nil {
						return fmt.Errorf("logs of patch %q: %w", args[0], err)
					}
					return nil
				}
			}},
	}
}

func patchDetail(w io.Writer, p patches.Patch) {
	fields(w, [][2]string{{"Patch", p.PatchID}, {"Task", p.TaskID}, {"Device", p.DeviceID}, {"Core", p.CoreName},
		{"Template", templateRef(p.PatchTemplateName, p.PatchTemplateVersion)}, {"Status", p.PatchStatus}, {"Message", p.StatusMessage},
		{"Attempt", itoa(p.Attempt)}, {"Created", ts(p.CreatedAt)}, {"Updated", ts(p.UpdatedAt)}})
	if len(p.Steps) > 0 {
		fmt.Fprintln(w)
		var rows [][]string
		for _, s := range p.Steps {
			exit := ""
			if s.ExitCode != nil {
				exit = strconv.Itoa(*s.ExitCode)
			}
			rows = append(rows, []string{s.Name, s.Status, exit, (time.Duration(s.DurationMs) * time.Millisecond).String(), s.Error})
		}
		table(w, []string{"STEP", "STATUS", "EXIT", "DURATION", "ERROR"}, rows)
	}
}

func patchCommands() []subcommand {
	var all []subcommand
	all = append(all, patchTemplateCommands()...)
	all = append(all, patchTargetCommands()...)
	all = append(all, patchRunCommands()...)
	return all
}
