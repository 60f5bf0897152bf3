package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// Plan answers POST /deploymentTasks?dryRun=true: it validates the task as
// Submit does, resolves the targets and says, per core, which template
// version it moves from and to, how its components change and whether it
// would fail. It writes nothing.
func (s *Service) Plan(ctx context.Context, in cdf.NewDeploymentTask) (cdf.DeploymentPlan, error) {
	version, err := s.check(ctx, in)
	if err != nil {
		return cdf.DeploymentPlan{}, err
	}
	to := cdf.TemplateRef{Name: in.Template.Name, Version: version}
	target, err := s.cfg.Templates.Version(ctx, to.Name, to.Version)
	if err != nil {
		return cdf.DeploymentPlan{}, fmt.Errorf("load template %s version %d: %w", to.Name, to.Version, err)
	}
	names, notes, err := s.resolveTargets(ctx, in.Targets)
	if err != nil {
		return cdf.DeploymentPlan{}, fmt.Errorf("resolve deployment targets: %w", err)
	}
	plan := cdf.DeploymentPlan{DryRun: true, Template: to, Cores: []cdf.CoreDeploymentPlan{}, Notes: notes}
	if len(names) == 0 {
		msg := "The deployment targets resolved to no core devices"
		if len(notes) > 0 {
			msg += " (" + strings.Join(notes, "; ") + ")"
		}
		plan.Notes = []string{msg}
	}
	froms := map[cdf.TemplateRef][]cdf.Component{} // loaded "from" versions
	for _, name := range names {
		cp, err := s.planCore(ctx, name, to, target.Components, froms)
		if err != nil {
			return cdf.DeploymentPlan{}, err
		}
		plan.Cores = append(plan.Cores, cp)
	}
	return plan, nil
}

// planCore plans one core: from is the template it last reported; with
// none, the components it reports installed stand in for it.
func (s *Service) planCore(ctx context.Context, name string, to cdf.TemplateRef, target []cdf.Component, froms map[cdf.TemplateRef][]cdf.Component) (cdf.CoreDeploymentPlan, error) {
	cp := cdf.CoreDeploymentPlan{CoreName: name, To: to}
	var core cdf.Core
	known := false
	if s.cfg.CoreView != nil {
		c, err := s.cfg.CoreView(ctx, name)
		switch {
		case err == nil:
			core, known = c, true
		case !errkind.Is(err, errkind.NotFound):
			return cp, fmt.Errorf("read core %s: %w", name, err)
		}
	}
	var current []cdf.Component
	if rep := core.Template.Reported; known && rep.Version > 0 && rep.Name != "" && rep.Name != "None" {
		from := cdf.TemplateRef{Name: rep.Name, Version: rep.Version}
		cp.From = &from
		comps, ok := froms[from]
		if !ok {
			t, err := s.cfg.Templates.Version(ctx, from.Name, from.Version)
			switch {
			case err == nil:
				comps = t.Components
			case errkind.Is(err, errkind.NotFound):
				comps = installed(core) // the version was deleted: compare with what runs
			default:
				return cp, fmt.Errorf("load template %s version %d: %w", from.Name, from.Version, err)
			}
			froms[from] = comps
		}
		current = comps
	} else if known {
		current = installed(core)
	}
	cp.Changes = ComponentChanges(current, target)

	if _, err := s.cfg.Provider.GetCoreDevice(ctx, name); err != nil {
		if !errkind.Is(err, errkind.NotFound) {
			return cp, fmt.Errorf("core device %s: %w", name, err)
		}
		cp.WouldFail = MsgNotRegistered + " (the core never enrolled: run ggagent install on it)"
		return cp, nil
	}
	if known && (core.Device == nil || core.Device.Connectivity != "ONLINE") {
		seen := "never seen"
		if core.Device != nil && core.Device.LastSeenAt != nil {
			seen = "last seen " + core.Device.LastSeenAt.UTC().Format("2006-01-02 15:04:05Z")
		}
		cp.WouldFail = fmt.Sprintf("core is offline (%s): the deployment fails unless it connects within %s", seen, s.cfg.DeploymentTimeout)
	}
	return cp, nil
}

// installed is what a core reports running, as template components
// (versions only).
func installed(c cdf.Core) []cdf.Component {
	if c.Device == nil {
		return nil
	}
	out := make([]cdf.Component, 0, len(c.Device.InstalledComponents))
	for _, ic := range c.Device.InstalledComponents {
		out = append(out, cdf.Component{Key: ic.Name, Version: ic.Version})
	}
	return out
}

// ComponentChanges lists, in component order, how to differs from from:
// components added, removed, upgraded, downgraded, or at the same version
// with a different configuration update or run-as user.
func ComponentChanges(from, to []cdf.Component) []cdf.ComponentChange {
	old := make(map[string]cdf.Component, len(from))
	for _, c := range from {
		old[c.Key] = c
	}
	changes := []cdf.ComponentChange{}
	seen := map[string]bool{}
	for _, c := range to {
		seen[c.Key] = true
		o, ok := old[c.Key]
		switch {
		case !ok:
			changes = append(changes, cdf.ComponentChange{Component: c.Key, Change: cdf.ChangeAdded, To: c.Version})
		case o.Version != c.Version:
			kind := cdf.ChangeUpgraded
			if CompareVersions(c.Version, o.Version) < 0 {
				kind = cdf.ChangeDowngraded
			}
			changes = append(changes, cdf.ComponentChange{Component: c.Key, Change: kind, From: o.Version, To: c.Version})
		case !sameConfig(o, c):
			changes = append(changes, cdf.ComponentChange{Component: c.Key, Change: cdf.ChangeConfigChanged, From: o.Version, To: c.Version})
		}
	}
	for _, c := range from {
		if !seen[c.Key] {
			changes = append(changes, cdf.ComponentChange{Component: c.Key, Change: cdf.ChangeRemoved, From: c.Version})
		}
	}
	sort.SliceStable(changes, func(i, j int) bool { return changes[i].Component < changes[j].Component })
	return changes
}

// sameConfig compares what a deployment sets besides the version: the
// configuration update (merge documents compared as JSON) and run-as user.
func sameConfig(a, b cdf.Component) bool {
	if !reflect.DeepEqual(a.RunWith, b.RunWith) && !(isZeroRunWith(a.RunWith) && isZeroRunWith(b.RunWith)) {
		return false
	}
	ca, cb := a.ConfigurationUpdate, b.ConfigurationUpdate
	if ca == nil {
		ca = &cdf.ConfigurationUpdate{}
	}
	if cb == nil {
		cb = &cdf.ConfigurationUpdate{}
	}
	return sameJSON(ca.Merge, cb.Merge) && strings.Join(ca.Reset, "\x00") == strings.Join(cb.Reset, "\x00")
}

func isZeroRunWith(r *cdf.RunWith) bool { return r == nil || *r == cdf.RunWith{} }

// sameJSON compares two merge documents by value (whitespace and key
// order do not count); documents that are not JSON compare as text.
func sameJSON(a, b string) bool {
	if a == b {
		return true
	}
	var va, vb any
	if json.Unmarshal([]byte(a), &va) != nil || json.Unmarshal([]byte(b), &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// CompareVersions orders component versions as semantic versions
// (1.10.0 > 1.9.2; a pre-release sorts before its release); parts that
// are not numbers compare as text. It returns -1, 0 or 1.
func CompareVersions(a, b string) int {
	coreA, preA, _ := strings.Cut(strings.SplitN(a, "+", 2)[0], "-")
	coreB, preB, _ := strings.Cut(strings.SplitN(b, "+", 2)[0], "-")
	if c := compareDotted(coreA, coreB); c != 0 {
		return c
	}
	switch {
	case preA == preB:
		return 0
	case preA == "":
		return 1
	case preB == "":
		return -1
	}
	return compareDotted(preA, preB)
}

func compareDotted(a, b string) int {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) || i < len(pb); i++ {
		var x, y string
		if i < len(pa) {
			x = pa[i]
		}
		if i < len(pb) {
			y = pb[i]
		}
		nx, errX := strconv.Atoi(x)
		ny, errY := strconv.Atoi(y)
		switch {
		case errX == nil && errY == nil:
			if nx != ny {
				return cmpInt(nx, ny)
			}
		case x != y:
			// a missing part is 0 when the other is numeric; otherwise text order
			if x == "" && errY == nil {
				return cmpInt(0, ny)
			}
			if y == "" && errX == nil {
				return cmpInt(nx, 0)
			}
			return strings.Compare(x, y)
		}
	}
	return 0
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
