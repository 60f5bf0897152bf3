package fleet

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/health"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// The fleet's core list (GET /fleet/cores, a ggfleet addition) answers the
// operator's first question about a big fleet — which cores are offline or
// unhealthy — in one paged query, where the CDF core list has no device
// block and GET /cores/{name} is one request per core.

// Statuses a core can be listed and filtered by: the agent's last reported
// status, or UNKNOWN before its first report.
var statuses = []string{mqttmsg.Healthy, mqttmsg.Unhealthy, health.StatusUnknown}

// MaxNameFilter bounds CoreQuery.NameContains (a thing name is at most 128).
const MaxNameFilter = 128

// CoreQuery selects and pages the fleet's core list. Empty fields select
// everything.
type CoreQuery struct {
	NameContains    string // part of the name, any case
	TemplateName    string // the desired template
	TemplateVersion int    // with TemplateName: this desired version; 0 any
	Status          string // HEALTHY, UNHEALTHY or UNKNOWN
	Connectivity    string // ONLINE or OFFLINE
	After           string // the last name of the previous page
	Count           int    // page size, at least 1
}

// Lease is how a core is judged ONLINE (the health package's rule): its
// connection is up and it was heard from no longer than Factor × its
// reported interval before Now (DefaultInterval when it reported none).
type Lease struct {
	Now             time.Time
	Factor          int
	DefaultInterval time.Duration
}

// CoreState is one core of the list as the store reads it. Status is
// UNKNOWN before the first health report; times are zero when unknown.
type CoreState struct {
	Name             string
	DesiredName      string
	DesiredVersion   int
	ReportedName     string
	ReportedVersion  int
	DeploymentStatus string
	Status           string
	Online           bool
	LastSeenAt       time.Time
	ReportedAt       time.Time
	CoreVersion      string
	AgentVersion     string
}

// Cores lists the fleet's cores q selects, a page at a time, with the
// number selected in all. A filter value that cannot match anything is
// errkind.Invalid, saying what would.
func (s *Service) Cores(ctx context.Context, q CoreQuery) (cdf.FleetCoreList, error) {
	if err := q.check(); err != nil {
		return cdf.FleetCoreList{}, err
	}
	lease := Lease{Now: s.cfg.Now(), Factor: health.LeaseFactor, DefaultInterval: health.DefaultInterval}
	list, more, matching, err := s.cfg.Store.ListCoreStates(ctx, q, lease)
	if err != nil {
		return cdf.FleetCoreList{}, fmt.Errorf("list the fleet's cores: %w", err)
	}
	out := cdf.FleetCoreList{Cores: make([]cdf.FleetCore, 0, len(list)), Matching: matching}
	for _, c := range list {
		out.Cores = append(out.Cores, c.wire())
	}
	if more && len(list) > 0 {
		out.Pagination = &cdf.Pagination{LastEvaluated: map[string]any{"thingName": list[len(list)-1].Name}}
	}
	return out, nil
}

func (q CoreQuery) check() error {
	switch {
	case q.Status != "" && !slices.Contains(statuses, q.Status):
		return errkind.New(errkind.Invalid, "status must be one of %s, got %q", strings.Join(statuses, ", "), q.Status)
	case q.Connectivity != "" && q.Connectivity != mqttmsg.Online && q.Connectivity != mqttmsg.Offline:
		return errkind.New(errkind.Invalid, "connectivity must be %s or %s, got %q", mqttmsg.Online, mqttmsg.Offline, q.Connectivity)
	case q.TemplateVersion < 0:
		return errkind.New(errkind.Invalid, "templateVersion must be a positive whole number, got %d", q.TemplateVersion)
	case q.TemplateVersion > 0 && q.TemplateName == "":
		return errkind.New(errkind.Invalid, "templateVersion needs templateName")
	case len(q.NameContains) > MaxNameFilter:
		return errkind.New(errkind.Invalid, "nameContains must be at most %d characters, got %d", MaxNameFilter, len(q.NameContains))
	case q.Count < 1:
		return errkind.New(errkind.Invalid, "count must be at least 1, got %d", q.Count)
	}
	return nil
}

func (c CoreState) wire() cdf.FleetCore {
	out := cdf.FleetCore{
		Name:                      c.Name,
		Status:                    c.Status,
		Connectivity:              mqttmsg.Offline,
		LastSeenAt:                cdf.TimePtr(c.LastSeenAt),
		LastStatusUpdateTimestamp: cdf.TimePtr(c.ReportedAt),
		CoreVersion:               c.CoreVersion,
		AgentVersion:              c.AgentVersion,
		Template: cdf.CoreTemplate{
			Desired:  cdf.TemplateRef{Name: c.DesiredName, Version: c.DesiredVersion},
			Reported: cdf.ReportedTemplate{Name: c.ReportedName, Version: c.ReportedVersion, DeploymentStatus: c.DeploymentStatus},
		},
	}
	if c.Online {
		out.Connectivity = mqttmsg.Online
	}
	return out
}
