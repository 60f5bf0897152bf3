package cli

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/spf13/pflag"
)

// defaultCoreVersion is the Greengrass nucleus version asked for when
// --core-version is not given.
const defaultCoreVersion = "2.12.0"

// csvCore is one row of a cores CSV file.
type csvCore struct{ Name, Template string }

// parseCoresCSV reads rows of name[,provisioningTemplate]. A first row
// whose first cell is "name" is a header; blank lines and lines starting
// with # are skipped. Names must be unique.
func parseCoresCSV(r io.Reader) ([]csvCore, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.Comment = '#'
	cr.TrimLeadingSpace = true
	var out []csvCore
	seen := map[string]int{}
	for row := 1; ; row++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("CSV: %w", err)
		}
		line, _ := cr.FieldPos(0)
		if len(rec) > 2 {
			return nil, fmt.Errorf("CSV line %d: %d columns; use name[,provisioningTemplate]", line, len(rec))
		}
		name := strings.TrimSpace(rec[0])
		if row == 1 && strings.EqualFold(name, "name") {
			continue // the header
		}
		if name == "" {
			return nil, fmt.Errorf("CSV line %d: the name is empty", line)
		}
		if prev, ok := seen[name]; ok {
			return nil, fmt.Errorf("CSV line %d: core %q is already on line %d", line, name, prev)
		}
		seen[name] = line
		c := csvCore{Name: name}
		if len(rec) == 2 {
			c.Template = strings.TrimSpace(rec[1])
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("CSV: no cores (expected rows of name[,provisioningTemplate])")
	}
	return out, nil
}

func coreCommands() []subcommand {
	return []subcommand{
		{name: "cores create", args: "--template PT NAME... | --csv FILE [--plan]", summary: "Provision Greengrass cores and wait for the outcome",
			setup: func(fs *pflag.FlagSet) runFunc {
				tmpl := fs.String("template", "", "provisioning template for the cores (CSV rows may name their own)")
				coreVersion := fs.String("core-version", defaultCoreVersion, "Greengrass nucleus version")
				gen := fs.String("config-generator", "", "installer config generator, e.g. MANUAL_INSTALL")
				csvFile := fs.String("csv", "", "CSV file of name[,provisioningTemplate] rows")
				params := fs.StringToString("param", nil, "provisioning parameter KEY=VALUE for every core (repeatable); ThingName defaults to the core's name")
				noWait := fs.Bool("no-wait", false, "print the task id and return at once")
				plan := fs.Bool("plan", false, "show which cores would be created and which already exist; change nothing")
				return func(c *cmdCtx, args []string) error {
					var rows []csvCore
					switch {
					case *csvFile != "" && len(args) > 0:
						return usagef("give core names or --csv, not both")
					case *csvFile != "":
						f, err := os.Open(*csvFile)
						if err != nil {
							return usagef("--csv: %v", err)
						}
						defer f.Close()
						if rows, err = parseCoresCSV(f); err != nil {
							return usagef("%s: %v", *csvFile, err)
						}
					case len(args) == 0:
						return usagef("name the cores to create, or give --csv FILE")
					default:
						for _, n := range args {
							rows = append(rows, csvCore{Name: n})
						}
					}
					task := cdf.NewCoreTask{Type: cdf.TaskCreate, CoreVersion: *coreVersion}
					for _, r := range rows {
						pt := r.Template
						if pt == "" {
							pt = *tmpl
						}
						if pt == "" {
							return usagef("core %q has no provisioning template: pass --template", r.Name)
						}
						task.Cores = append(task.Cores, cdf.NewCore{Name: r.Name, ProvisioningTemplate: pt,
							ProvisioningParameters: coreParams(r.Name, *params), ConfigFileGenerator: *gen})
					}
					if *plan {
						return planCoreTask(c, task)
					}
					id, err := createTask(c, "/coreTasks", task)
					if err != nil {
						return fmt.Errorf("create cores: %w", err)
					}
					return submitted(c, kindCore, id, *noWait)
				}
			}},
		{name: "cores delete", args: "NAME... [--deprovision] [--plan]", summary: "Delete cores (and with --deprovision their things and certificates) and wait",
			setup: func(fs *pflag.FlagSet) runFunc {
				deprov := fs.Bool("deprovision", false, "also remove the things, certificates and policies from the provider")
				deprovDevices := fs.Bool("deprovision-client-devices", false, "also deprovision the cores' client devices")
				coreVersion := fs.String("core-version", defaultCoreVersion, "Greengrass nucleus version (the API asks for it)")
				noWait := fs.Bool("no-wait", false, "print the task id and return at once")
				plan := fs.Bool("plan", false, "show which cores would be deleted and which do not exist; change nothing")
				return func(c *cmdCtx, args []string) error {
					if len(args) == 0 {
						return usagef("name the cores to delete")
					}
					task := cdf.NewCoreTask{Type: cdf.TaskDelete, CoreVersion: *coreVersion,
						Options: &cdf.CoreTaskOptions{DeprovisionCores: *deprov, DeprovisionClientDevices: *deprovDevices}}
					for _, n := range args {
						// The API asks for a provisioning template on Delete too; any value will do.
						task.Cores = append(task.Cores, cdf.NewCore{Name: n, ProvisioningTemplate: "UNUSED"})
					}
					if *plan {
						return planCoreTask(c, task)
					}
					id, err := createTask(c, "/coreTasks", task)
					if err != nil {
						return fmt.Errorf("delete cores: %w", err)
					}
					return submitted(c, kindCore, id, *noWait)
				}
			}},
		{name: "cores list", args: "[--template NAME [--version N]] [--failed-only]", summary: "List cores with their desired and reported templates",
			setup: func(fs *pflag.FlagSet) runFunc {
				tmpl := fs.String("template", "", "only cores whose desired template is NAME")
				version := fs.Int("version", 0, "with --template: only this template version")
				failed := fs.Bool("failed-only", false, "only cores whose last deployment failed")
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 0, "no arguments"); err != nil {
						return err
					}
					q := url.Values{}
					if *tmpl != "" {
						q.Set("templateName", *tmpl)
					}
					if *version > 0 {
						if *tmpl == "" {
							return usagef("--version needs --template")
						}
						q.Set("templateVersion", fmt.Sprint(*version))
					}
					if *failed {
						q.Set("failedOnly", "true")
					}
					var all []cdf.Core
					err := pages(c, "/cores", q.Encode(), func(raw json.RawMessage) (int, error) {
						var l cdf.CoreList
						err := json.Unmarshal(raw, &l)
						all = append(all, l.Cores...)
						return len(l.Cores), err
					})
					if err != nil {
						return fmt.Errorf("list cores: %w", err)
					}
					return emit(c, cdf.CoreList{Cores: nonNil(all)}, func(w io.Writer) { coreTable(w, all) })
				}
			}},
		{name: "cores show", args: "NAME", summary: "Show a core: templates, device status, connectivity, installed components",
			setup: func(fs *pflag.FlagSet) runFunc {
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 1, "the core NAME"); err != nil {
						return err
					}
					var core cdf.Core
					if err := c.api.Do(c.ctx, http.MethodGet, "/cores/"+url.PathEscape(args[0]), nil, &core); err != nil {
						return fmt.Errorf("show core %q: %w", args[0], err)
					}
					return emit(c, core, func(w io.Writer) { coreDetail(w, core) })
				}
			}},
		{name: "cores enroll-token", args: "NAME [--expires 24h]", summary: "Make a one-time token that lets `ggagent enroll` enroll the core",
			setup: func(fs *pflag.FlagSet) runFunc {
				expires := fs.Duration("expires", 0, "token lifetime (default: the broker's)")
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 1, "the core NAME"); err != nil {
						return err
					}
					body := map[string]any{}
					if *expires > 0 {
						body["expiresInSeconds"] = int64(expires.Round(time.Second) / time.Second)
					}
					var tok struct {
						Token     string   `json:"token"`
						CoreName  string   `json:"coreName"`
						ExpiresAt cdf.Time `json:"expiresAt"`
					}
					if err := c.api.Do(c.ctx, http.MethodPost, "/cores/"+url.PathEscape(args[0])+"/enrollmentTokens", body, &tok); err != nil {
						return fmt.Errorf("create enrollment token for core %q: %w", args[0], err)
					}
					return emit(c, tok, func(w io.Writer) {
						fmt.Fprintln(w, tok.Token)
						fmt.Fprintf(c.stderr, "one-time token for core %s, valid until %s; on the device: ggagent enroll --broker-url %s --core %s --token <token>\n",
							tok.CoreName, ts(tok.ExpiresAt), c.api.BaseURL(), tok.CoreName)
					})
				}
			}},
		{name: "devices list", args: "[--core NAME]", summary: "List client devices",
			setup: func(fs *pflag.FlagSet) runFunc {
				core := fs.String("core", "", "only the client devices of this core")
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 0, "no arguments"); err != nil {
						return err
					}
					q := url.Values{}
					if *core != "" {
						q.Set("coreName", *core)
					}
					var all []cdf.ClientDevice
					err := pages(c, "/devices", q.Encode(), func(raw json.RawMessage) (int, error) {
						var l cdf.ClientDeviceList
						err := json.Unmarshal(raw, &l)
						all = append(all, l.Devices...)
						return len(l.Devices), err
					})
					if err != nil {
						return fmt.Errorf("list devices: %w", err)
					}
					return emit(c, cdf.ClientDeviceList{Devices: nonNil(all)}, func(w io.Writer) {
						var rows [][]string
						for _, d := range all {
							rows = append(rows, []string{d.Name, d.CoreName, ts(d.CreatedAt)})
						}
						table(w, []string{"NAME", "CORE", "CREATED"}, rows)
					})
				}
			}},
		{name: "devices show", args: "NAME", summary: "Show a client device",
			setup: func(fs *pflag.FlagSet) runFunc {
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 1, "the device NAME"); err != nil {
						return err
					}
					var d cdf.ClientDevice
					if err := c.api.Do(c.ctx, http.MethodGet, "/devices/"+url.PathEscape(args[0]), nil, &d); err != nil {
						return fmt.Errorf("show device %q: %w", args[0], err)
					}
					return emit(c, d, func(w io.Writer) {
						fields(w, [][2]string{{"Name", d.Name}, {"Core", d.CoreName}, {"Created", ts(d.CreatedAt)}, {"Updated", ts(d.UpdatedAt)}})
						artifactTable(w, d.Artifacts)
					})
				}
			}},
	}
}

// planCoreTask shows what a core task would do, changing nothing.
func planCoreTask(c *cmdCtx, task cdf.NewCoreTask) error {
	var p cdf.CoreTaskPlan
	if err := dryRun(c, "/coreTasks", task, &p); err != nil {
		return fmt.Errorf("plan %s core task: %w", task.Type, err)
	}
	return emit(c, p, func(w io.Writer) { itemPlanTable(w, "core(s)", p.Type, p.Cores) })
}

// coreParams is the provisioning parameters of one core: the common ones,
// with ThingName set to the core's name unless given.
func coreParams(name string, common map[string]string) map[string]string {
	p := map[string]string{"ThingName": name}
	for k, v := range common {
		p[k] = v
	}
	return p
}

func templateRef(name string, version int) string {
	if name == "" {
		return ""
	}
	if version == 0 {
		return name
	}
	return fmt.Sprintf("%s@%d", name, version)
}

func coreTable(w io.Writer, cores []cdf.Core) {
	var rows [][]string
	for _, c := range cores {
		t := c.Template
		rows = append(rows, []string{c.Name, templateRef(t.Desired.Name, t.Desired.Version),
			templateRef(t.Reported.Name, t.Reported.Version), t.Reported.DeploymentStatus})
	}
	table(w, []string{"NAME", "DESIRED", "REPORTED", "DEPLOYMENT"}, rows)
}

func coreDetail(w io.Writer, c cdf.Core) {
	t := c.Template
	kv := [][2]string{{"Name", c.Name}, {"Desired template", templateRef(t.Desired.Name, t.Desired.Version)},
		{"Reported template", templateRef(t.Reported.Name, t.Reported.Version)},
		{"Deployment", t.Reported.DeploymentStatus}, {"Deployment message", t.Reported.DeploymentStatusMessage},
		{"Created", ts(c.CreatedAt)}, {"Updated", ts(c.UpdatedAt)}}
	if d := c.Device; d != nil {
		kv = append(kv, [][2]string{{"Device status", d.Status}, {"Connectivity", d.Connectivity}, {"Last seen", tsp(d.LastSeenAt)},
			{"Nucleus", d.CoreVersion}, {"Platform", strings.Trim(d.Platform+"/"+d.Architecture, "/")}}...)
	}
	fields(w, kv)
	if c.Device != nil && len(c.Device.InstalledComponents) > 0 {
		fmt.Fprintln(w)
		var rows [][]string
		for _, ic := range c.Device.InstalledComponents {
			rows = append(rows, []string{ic.Name, ic.Version})
		}
		table(w, []string{"INSTALLED COMPONENT", "VERSION"}, rows)
	}
	artifactTable(w, c.Artifacts)
}

func artifactTable(w io.Writer, arts map[string]cdf.Artifact) {
	if len(arts) == 0 {
		return
	}
	fmt.Fprintln(w)
	var rows [][]string
	for _, k := range sortedKeys(arts) {
		rows = append(rows, []string{k, arts[k].Bucket + "/" + arts[k].Key})
	}
	table(w, []string{"ARTIFACT", "LOCATION"}, rows)
}
