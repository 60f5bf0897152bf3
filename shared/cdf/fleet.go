package cdf

// FleetSummary is the body of GET /fleet/summary (spec §2.6, §6): per
// template name, its latest version and per-version figures. Versions are
// keyed by the version number as a string; the pseudo-template "None" with
// version "0" counts cores without a template.
type FleetSummary struct {
	Templates map[string]FleetTemplate `json:"templates"`
}

// FleetTemplate is one template of the fleet summary. LatestVersion is 0
// for "None" and for deleted templates.
type FleetTemplate struct {
	LatestVersion int                     `json:"latestVersion"`
	Versions      map[string]FleetVersion `json:"versions"`
}

// FleetVersion counts the cores of one template version: DesiredInUse and
// ReportedInUse by the core's desired and reported template, the three
// LastDeployment figures among the cores that desire this version, by the
// outcome of their last deployment.
type FleetVersion struct {
	DesiredInUse             int `json:"desiredInUse"`
	ReportedInUse            int `json:"reportedInUse"`
	LastDeploymentSuccess    int `json:"lastDeploymentSuccess"`
	LastDeploymentFailed     int `json:"lastDeploymentFailed"`
	LastDeploymentInProgress int `json:"lastDeploymentInProgress"`
}

// FleetCore is one core of GET /fleet/cores (a ggfleet addition): the list
// view of a core with what its agent last said, so that a fleet can be
// filtered by health and connectivity without reading every core.
// Status and Connectivity mean what they mean in a core's device block
// (spec §7): Status is the agent's last reported status, UNKNOWN before
// its first report.
type FleetCore struct {
	Name                      string       `json:"name"`
	Status                    string       `json:"status"`
	Connectivity              string       `json:"connectivity"`
	LastSeenAt                *Time        `json:"lastSeenAt,omitempty"`
	LastStatusUpdateTimestamp *Time        `json:"lastStatusUpdateTimestamp,omitempty"`
	CoreVersion               string       `json:"coreVersion,omitempty"`
	AgentVersion              string       `json:"agentVersion,omitempty"`
	Template                  CoreTemplate `json:"template"`
}

// FleetCoreList is the body of GET /fleet/cores. Matching counts every core
// the filters select, on all pages.
type FleetCoreList struct {
	Cores      []FleetCore `json:"cores"`
	Matching   int         `json:"matching"`
	Pagination *Pagination `json:"pagination,omitempty"`
}
