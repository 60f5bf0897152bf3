package cli

import (
	"fmt"
	"io"

	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/spf13/pflag"
)

func deployCommands() []subcommand {
	cmds := []subcommand{
		{name: "deploy", args: "--template NAME [--version N] --core NAME... [--group G...] [--plan]", summary: "Deploy a component template to cores and wait for their reports",
			setup: func(fs *pflag.FlagSet) runFunc {
				tmpl := fs.String("template", "", "component template to deploy (required)")
				version := fs.Int("version", 0, "template version (default: the latest)")
				cores := fs.StringSlice("core", nil, "core (thing) name to deploy to (repeatable, or comma-separated)")
				groups := fs.StringSlice("group", nil, "thing group whose cores to deploy to (repeatable)")
				noWait := fs.Bool("no-wait", false, "print the task id and return at once")
				plan := fs.Bool("plan", false, "show, per core, the template version it moves from and to, the component changes and whether it would fail; change nothing")
				return func(c *cmdCtx, args []string) error {
					all := append(append([]string{}, *cores...), args...)
					if *tmpl == "" {
						return usagef("--template is required")
					}
					if len(all) == 0 && len(*groups) == 0 {
						return usagef("name the targets: --core NAME or --group GROUP")
					}
					task := cdf.NewDeploymentTask{
						Template: cdf.NewDeploymentTemplate{Name: *tmpl, Version: cdf.DeploymentVersion(*version)},
						Targets:  cdf.DeploymentTargets{ThingNames: all, ThingGroupNames: *groups},
					}
					if *plan {
						var p cdf.DeploymentPlan
						if err := dryRun(c, "/deploymentTasks", task, &p); err != nil {
							return fmt.Errorf("plan deployment of template %q: %w", *tmpl, err)
						}
						return emit(c, p, func(w io.Writer) { deploymentPlanTable(w, p) })
					}
					id, err := createTask(c, "/deploymentTasks", task)
					if err != nil {
						return fmt.Errorf("deploy template %q: %w", *tmpl, err)
					}
					return submitted(c, kindDeployment, id, *noWait)
				}
			}},
	}
	return append(cmds, taskCommands()...)
}
