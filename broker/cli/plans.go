package cli

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"

	"github.com/ggfleet/ggfleet/shared/cdf"
)

// dryRun posts body to path with ?dryRun=true and decodes the plan into
// out; the broker writes nothing.
func dryRun(c *cmdCtx, path string, body, out any) error {
	return c.api.Do(c.ctx, http.MethodPost, path+"?dryRun=true", body, out)
}

// deploymentPlanTable shows a deployment plan: one row per component
// change (a core without changes gets one row saying so), then the cores
// that would fail and the targets that resolved to nothing.
func deploymentPlanTable(w io.Writer, p cdf.DeploymentPlan) {
	failing := 0
	for _, cp := range p.Cores {
		if cp.WouldFail != "" {
			failing++
		}
	}
	fmt.Fprintf(w, "Plan: deploy %s to %d core(s), %d would fail. Nothing was changed.\n\n", templateRef(p.Template.Name, p.Template.Version), len(p.Cores), failing)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "CORE\tFROM\tTO\tCOMPONENT\tCHANGE\tVERSION")
	for _, cp := range p.Cores {
		from := "-"
		if cp.From != nil {
			from = templateRef(cp.From.Name, cp.From.Version)
		}
		to := templateRef(cp.To.Name, cp.To.Version)
		if len(cp.Changes) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", cp.CoreName, from, to, "-", "none", "-")
			continue
		}
		for i, ch := range cp.Changes {
			name, f, t := cp.CoreName, from, to
			if i > 0 {
				name, f, t = "", "", ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", name, f, t, ch.Component, ch.Change, versionChange(ch))
		}
	}
	_ = tw.Flush()
	if failing > 0 {
		fmt.Fprintln(w, "\nWould fail:")
		for _, cp := range p.Cores {
			if cp.WouldFail != "" {
				fmt.Fprintf(w, "  %s: %s\n", cp.CoreName, cp.WouldFail)
			}
		}
	}
	if len(p.Notes) > 0 {
		fmt.Fprintf(w, "\nNotes:\n  %s\n", strings.Join(p.Notes, "\n  "))
	}
}

// versionChange is "1.0.0 -> 1.1.0", "-> 1.0.0" (added), "1.0.0 ->" (removed).
func versionChange(ch cdf.ComponentChange) string {
	switch {
	case ch.From == ch.To:
		return ch.To
	case ch.From == "":
		return "-> " + ch.To
	case ch.To == "":
		return ch.From + " ->"
	}
	return ch.From + " -> " + ch.To
}

// itemPlanTable shows the plan of a core or device task.
func itemPlanTable(w io.Writer, what, typ string, items []cdf.ItemPlan) {
	n := map[string]int{}
	for _, it := range items {
		n[it.Action]++
	}
	var parts []string
	for _, a := range []string{cdf.PlanCreate, cdf.PlanExists, cdf.PlanDelete, cdf.PlanNotFound} {
		if n[a] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n[a], a))
		}
	}
	fmt.Fprintf(w, "Plan: %s task on %d %s: %s. Nothing was changed.\n\n", typ, len(items), what, strings.Join(parts, ", "))
	var rows [][]string
	for _, it := range items {
		rows = append(rows, []string{it.Name, it.Action, it.Message})
	}
	table(w, []string{"NAME", "ACTION", "NOTE"}, rows)
}
