// Command fakecli stands in for greengrass-cli and systemctl in the nucleus
// package's tests. It keeps its state next to its own executable, appends
// every invocation to argv.log (one JSON array a line, the program's base
// name first), and answers the subcommands the Greengrass runtime uses in the
// formats the real tools print:
//
//	greengrass-cli deployment create --merge k=v … [--update-config JSON] [--runWith k:posixUser=u] [--remove k] [--failure-handling-policy P]
//	greengrass-cli deployment status -i ID   (IN_PROGRESS on the first call, final on the next)
//	greengrass-cli component list
//	systemctl is-active UNIT                 (the word in file systemctl-state, default "active")
//
// A component key listed in the file "fail" makes a deployment that merges
// it fail and leaves the components as they were. The file "nucleus-down"
// makes every greengrass-cli call fail as when the nucleus is not running.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

type component struct {
	Version string `json:"version"`
	State   string `json:"state"`
}

type deployment struct {
	ID      string            `json:"id"`
	Merge   map[string]string `json:"merge"`
	Remove  []string          `json:"remove"`
	Config  json.RawMessage   `json:"config,omitempty"`
	RunWith []string          `json:"runWith,omitempty"`
	Policy  string            `json:"policy,omitempty"`
	Status  string            `json:"status"`
	Cause   string            `json:"cause,omitempty"`
	Polls   int               `json:"polls"`
}

type state struct {
	Components  map[string]component `json:"components"`
	Deployments []*deployment        `json:"deployments"`
}

var dir string

func main() {
	exe, err := os.Executable()
	if err != nil {
		fatal(err)
	}
	dir = filepath.Dir(exe)
	prog := filepath.Base(os.Args[0])
	record(prog, os.Args[1:])
	switch prog {
	case "systemctl":
		systemctl(os.Args[1:])
	default:
		greengrassCLI(os.Args[1:])
	}
}

func record(prog string, args []string) {
	b, err := json.Marshal(append([]string{prog}, args...))
	if err != nil {
		fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "argv.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(append(b, '\n')); err != nil {
		fatal(err)
	}
}

func systemctl(args []string) {
	if len(args) != 2 || args[0] != "is-active" {
		fatal(fmt.Errorf("fake systemctl: unsupported arguments %q", args))
	}
	st := "active"
	if b, err := os.ReadFile(filepath.Join(dir, "systemctl-state")); err == nil {
		st = strings.TrimSpace(string(b))
	}
	fmt.Println(st)
	if st != "active" {
		os.Exit(3)
	}
}

func greengrassCLI(args []string) {
	if _, err := os.Stat(filepath.Join(dir, "nucleus-down")); err == nil {
		fmt.Fprintln(os.Stderr, "SEVERE: Unable to connect to the nucleus: /greengrass/v2/ipc.socket: Connection refused")
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "INFO: Connection established with event stream RPC server")
	st := load()
	switch {
	case len(args) >= 2 && args[0] == "deployment" && args[1] == "create":
		create(st, args[2:])
	case len(args) == 4 && args[0] == "deployment" && args[1] == "status" && (args[2] == "-i" || args[2] == "--deploymentId"):
		status(st, args[3])
	case len(args) == 2 && args[0] == "component" && args[1] == "list":
		list(st)
	default:
		fatal(fmt.Errorf("fake greengrass-cli: unsupported arguments %q", args))
	}
	save(st)
}

func create(st *state, args []string) {
	d := &deployment{ID: fmt.Sprintf("fake-%d", len(st.Deployments)+1), Merge: map[string]string{}, Status: "IN_PROGRESS"}
	for i := 0; i < len(args); i++ {
		flag := args[i]
		if i+1 >= len(args) {
			fatal(fmt.Errorf("fake greengrass-cli: %s needs a value", flag))
		}
		i++
		val := args[i]
		switch flag {
		case "--merge", "-m":
			k, v, ok := strings.Cut(val, "=")
			if !ok {
				fatal(fmt.Errorf("fake greengrass-cli: --merge %q is not <component>=<version>", val))
			}
			d.Merge[k] = v
		case "--remove":
			d.Remove = append(d.Remove, val)
		case "--update-config", "-c":
			if !json.Valid([]byte(val)) {
				fatal(fmt.Errorf("Update configuration parameter is not a properly formatted JSON file or a JSON string"))
			}
			d.Config = json.RawMessage(val)
		case "--runWith":
			if !strings.Contains(val, ":posixUser=") {
				fatal(fmt.Errorf("--runWith must be in the following format <component>:posixUser=<user>[:<group>]"))
			}
			d.RunWith = append(d.RunWith, val)
		case "--failure-handling-policy", "-fp":
			d.Policy = val
		default:
			fatal(fmt.Errorf("fake greengrass-cli: unknown option %s", flag))
		}
	}
	st.Deployments = append(st.Deployments, d)
	fmt.Println("Local deployment submitted! Deployment Id: " + d.ID)
}

func status(st *state, id string) {
	i := slices.IndexFunc(st.Deployments, func(d *deployment) bool { return d.ID == id })
	if i < 0 {
		fatal(fmt.Errorf("fake greengrass-cli: no deployment %s", id))
	}
	d := st.Deployments[i]
	if d.Status == "IN_PROGRESS" {
		d.Polls++
		if d.Polls > 1 {
			finish(st, d)
		}
	}
	fmt.Printf("Deployment ID: %s\nCreated on: 29-11-2026 12:00:00 UTC\nStatus: %s\n", d.ID, d.Status)
	if d.Cause != "" {
		fmt.Printf("Deployment Error Stack: DEPLOYMENT_FAILURE, COMPONENT_UPDATE_ERROR\nDeployment Failure Cause: %s\n", d.Cause)
	}
}

func finish(st *state, d *deployment) {
	failing := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(dir, "fail")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			failing[l] = true
		}
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range d.Merge {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range keys {
		if failing[k] {
			d.Status = "FAILED_ROLLBACK_COMPLETE"
			d.Cause = fmt.Sprintf("component %s failed to start", k)
			return
		}
	}
	for _, k := range keys {
		st.Components[k] = component{Version: d.Merge[k], State: "RUNNING"}
	}
	for _, k := range d.Remove {
		delete(st.Components, k)
	}
	d.Status = "SUCCESSFUL"
}

func list(st *state) {
	fmt.Println("Components currently running in Greengrass:")
	keys := make([]string, 0, len(st.Components))
	for k := range st.Components {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		c := st.Components[k]
		fmt.Printf("Component Name: %s\n    Version: %s\n    State: %s\n    Configuration: null\n", k, c.Version, c.State)
	}
}

func load() *state {
	st := &state{Components: map[string]component{
		"aws.greengrass.Nucleus": {Version: "2.12.0", State: "FINISHED"},
		"aws.greengrass.Cli":     {Version: "2.12.0", State: "RUNNING"},
		"DeploymentService":      {Version: "0.0.0", State: "RUNNING"},
	}}
	b, err := os.ReadFile(filepath.Join(dir, "fakecli-state.json"))
	if os.IsNotExist(err) {
		return st
	}
	if err != nil {
		fatal(err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		fatal(err)
	}
	return st
}

func save(st *state) {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "fakecli-state.json"), b, 0o644); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
