// Package fleet computes the fleet summary (spec §2.6, §6): per template
// version, how many cores desire it, how many report it, and how the last
// deployment of the cores that desire it ended. CDF maintained counters
// from a DynamoDB stream; ggfleet counts the core records on the fly with a
// few GROUP BY queries, so the figures can never drift, and it counts each
// core's real last outcome (the spec's corrections table).
package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ggfleet/ggfleet/shared/cdf"
)

// NoTemplate is the pseudo-template of cores without a template, listed with version 0.
const NoTemplate = "None"

// DesiredCount is the number of cores with one desired template version and
// one deploymentStatus.
type DesiredCount struct {
	Name             string
	Version          int
	DeploymentStatus string
	Cores            int
}

// ReportedCount is the number of cores that report one template version.
type ReportedCount struct {
	Name    string
	Version int
	Cores   int
}

// TemplateVersion is one stored version of an existing template, with the
// template's latest version.
type TemplateVersion struct {
	Name    string
	Version int
	Latest  int
}

// Stats is what the summary is computed from.
type Stats struct {
	Desired   []DesiredCount
	Reported  []ReportedCount
	Templates []TemplateVersion
}

// Store reads the aggregates (read-only, a few queries, never one per core)
// and the fleet's core list.
type Store interface {
	FleetStats(ctx context.Context) (Stats, error)
	// ListCoreStates returns up to q.Count cores q selects, in name order
	// after q.After, whether more follow, and how many q selects in all.
	// The store decides ONLINE by lease, so that the filter and the rows
	// agree.
	ListCoreStates(ctx context.Context, q CoreQuery, lease Lease) (list []CoreState, more bool, matching int, err error)
}

// Config holds the Service's dependencies.
type Config struct {
	Store  Store
	Logger *slog.Logger
	Now    func() time.Time // default time.Now
}

// Service serves the fleet summary.
type Service struct {
	cfg Config
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg}
}

// Summary returns the fleet summary. Every version of every existing
// template appears (with zeros when unused), versions only cores refer to
// appear too (deleted templates have latestVersion 0), and "None"/"0"
// always appears.
func (s *Service) Summary(ctx context.Context) (cdf.FleetSummary, error) {
	st, err := s.cfg.Store.FleetStats(ctx)
	if err != nil {
		return cdf.FleetSummary{}, fmt.Errorf("read fleet figures: %w", err)
	}
	return Summarize(st), nil
}

// Summarize turns the aggregates into the summary (spec §6).
func Summarize(st Stats) cdf.FleetSummary {
	out := cdf.FleetSummary{Templates: map[string]cdf.FleetTemplate{}}
	version := func(name string, v int) (cdf.FleetTemplate, string) {
		t, ok := out.Templates[name]
		if !ok {
			t = cdf.FleetTemplate{Versions: map[string]cdf.FleetVersion{}}
		}
		key := strconv.Itoa(v)
		if _, ok := t.Versions[key]; !ok {
			t.Versions[key] = cdf.FleetVersion{}
		}
		out.Templates[name] = t
		return t, key
	}
	version(NoTemplate, 0)
	for _, tv := range st.Templates {
		t, _ := version(tv.Name, tv.Version)
		t.LatestVersion = tv.Latest
		out.Templates[tv.Name] = t
	}
	for _, d := range st.Desired {
		t, key := version(d.Name, d.Version)
		fv := t.Versions[key]
		fv.DesiredInUse += d.Cores
		switch {
		case d.DeploymentStatus == cdf.DeploymentStatusSuccessful:
			fv.LastDeploymentSuccess += d.Cores
		case d.DeploymentStatus == cdf.DeploymentStatusInProgress:
			fv.LastDeploymentInProgress += d.Cores
		case cdf.DeploymentFailed(d.DeploymentStatus):
			fv.LastDeploymentFailed += d.Cores
		}
		t.Versions[key] = fv
	}
	for _, r := range st.Reported {
		t, key := version(r.Name, r.Version)
		fv := t.Versions[key]
		fv.ReportedInUse += r.Cores
		t.Versions[key] = fv
	}
	return out
}
