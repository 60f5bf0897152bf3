package cdf

// Component change kinds of a deployment plan.
const (
	ChangeAdded         = "added"
	ChangeRemoved       = "removed"
	ChangeUpgraded      = "upgraded"
	ChangeDowngraded    = "downgraded"
	ChangeConfigChanged = "configChanged"
)

// Plan actions of a core or device task item.
const (
	PlanCreate   = "create"   // a Create task would make it
	PlanExists   = "exists"   // a Create task finds it already there (its item re-checks it)
	PlanDelete   = "delete"   // a Delete task would remove it
	PlanNotFound = "notFound" // a Delete task finds nothing to remove
)

// ComponentChange is how one component differs between the template a
// core runs and the one a deployment would give it (ggfleet addition).
type ComponentChange struct {
	Component string `json:"component"`
	Change    string `json:"change"` // added | removed | upgraded | downgraded | configChanged
	From      string `json:"from,omitempty"`
	To        string `json:"to,omitempty"`
}

// CoreDeploymentPlan is what a deployment would do to one core: the
// template version it moves from (nil when it reported none) and to, the
// component changes, and why it would fail, if it would.
type CoreDeploymentPlan struct {
	CoreName  string            `json:"coreName"`
	From      *TemplateRef      `json:"from"`
	To        TemplateRef       `json:"to"`
	Changes   []ComponentChange `json:"changes"`
	WouldFail string            `json:"wouldFail,omitempty"`
}

// DeploymentPlan is the body of POST /deploymentTasks?dryRun=true: the
// resolved targets and what would change; nothing is written. Notes say
// which targets resolved to nothing.
type DeploymentPlan struct {
	DryRun   bool                 `json:"dryRun"`
	Template TemplateRef          `json:"template"`
	Cores    []CoreDeploymentPlan `json:"cores"`
	Notes    []string             `json:"notes,omitempty"`
}

// ItemPlan is what a core or device task would do to one core or device.
type ItemPlan struct {
	Name    string `json:"name"`
	Action  string `json:"action"` // create | exists | delete | notFound
	Message string `json:"message,omitempty"`
}

// CoreTaskPlan is the body of POST /coreTasks?dryRun=true.
type CoreTaskPlan struct {
	DryRun bool       `json:"dryRun"`
	Type   string     `json:"type"`
	Cores  []ItemPlan `json:"cores"`
}

// DeviceTaskPlan is the body of POST /cores/{name}/deviceTasks?dryRun=true.
type DeviceTaskPlan struct {
	DryRun   bool       `json:"dryRun"`
	Type     string     `json:"type"`
	CoreName string     `json:"coreName"`
	Devices  []ItemPlan `json:"devices"`
}
