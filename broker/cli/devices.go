package cli

import (
	"fmt"
	"io"
	"net/url"
	"os"

	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/spf13/pflag"
)

// deviceTaskCommands create and delete client devices of a core.
func deviceTaskCommands() []subcommand {
	return []subcommand{
		{name: "devices create", args: "--core CORE --template PT NAME... | --csv FILE [--plan]", summary: "Provision client devices of a registered core and wait for the outcome",
			setup: func(fs *pflag.FlagSet) runFunc {
				core := fs.String("core", "", "the core the devices belong to (required; it must have enrolled)")
				tmpl := fs.String("template", "", "provisioning template for the devices (CSV rows may name their own)")
				csvFile := fs.String("csv", "", "CSV file of name[,provisioningTemplate] rows")
				params := fs.StringToString("param", nil, "provisioning parameter KEY=VALUE for every device (repeatable); ThingName defaults to the device's name")
				noWait := fs.Bool("no-wait", false, "print the task id and return at once")
				plan := fs.Bool("plan", false, "show which devices would be created and which already exist; change nothing")
				return func(c *cmdCtx, args []string) error {
					if *core == "" {
						return usagef("--core is required: the core the client devices belong to")
					}
					var rows []csvCore
					switch {
					case *csvFile != "" && len(args) > 0:
						return usagef("give device names or --csv, not both")
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
						return usagef("name the client devices to create, or give --csv FILE")
					default:
						for _, n := range args {
							rows = append(rows, csvCore{Name: n})
						}
					}
					task := cdf.NewDeviceTask{Type: cdf.TaskCreate}
					for _, r := range rows {
						pt := r.Template
						if pt == "" {
							pt = *tmpl
						}
						if pt == "" {
							return usagef("device %q has no provisioning template: pass --template", r.Name)
						}
						task.Devices = append(task.Devices, cdf.NewDevice{Name: r.Name, ProvisioningTemplate: pt, ProvisioningParameters: coreParams(r.Name, *params)})
					}
					return runDeviceTask(c, *core, task, *plan, *noWait)
				}
			}},
		{name: "devices delete", args: "--core CORE NAME... [--deprovision] [--plan]", summary: "Delete client devices of a core (and with --deprovision their things and certificates) and wait",
			setup: func(fs *pflag.FlagSet) runFunc {
				core := fs.String("core", "", "the core the devices belong to (required)")
				deprov := fs.Bool("deprovision", false, "also remove the things, certificates and policies from the provider")
				noWait := fs.Bool("no-wait", false, "print the task id and return at once")
				plan := fs.Bool("plan", false, "show which devices would be deleted and which do not exist; change nothing")
				return func(c *cmdCtx, args []string) error {
					if *core == "" {
						return usagef("--core is required: the core the client devices belong to")
					}
					if len(args) == 0 {
						return usagef("name the client devices to delete")
					}
					task := cdf.NewDeviceTask{Type: cdf.TaskDelete, Options: &cdf.DeviceTaskOptions{DeprovisionClientDevices: *deprov}}
					for _, n := range args {
						// The API asks for a provisioning template on Delete too; any value will do.
						task.Devices = append(task.Devices, cdf.NewDevice{Name: n, ProvisioningTemplate: "UNUSED"})
					}
					return runDeviceTask(c, *core, task, *plan, *noWait)
				}
			}},
	}
}

// runDeviceTask plans or submits a device task of core.
func runDeviceTask(c *cmdCtx, core string, task cdf.NewDeviceTask, plan, noWait bool) error {
	path := "/cores/" + url.PathEscape(core) + "/deviceTasks"
	if plan {
		var p cdf.DeviceTaskPlan
		if err := dryRun(c, path, task, &p); err != nil {
			return fmt.Errorf("plan %s device task on core %q: %w", task.Type, core, err)
		}
		return emit(c, p, func(w io.Writer) { itemPlanTable(w, "client device(s) of core "+p.CoreName, p.Type, p.Devices) })
	}
	id, err := createTask(c, path, task)
	if err != nil {
		return fmt.Errorf("%s client devices of core %q: %w", map[string]string{cdf.TaskCreate: "create", cdf.TaskDelete: "delete"}[task.Type], core, err)
	}
	return submitted(c, kindDevice, id, noWait)
}
