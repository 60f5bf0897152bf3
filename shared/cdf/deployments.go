package cdf

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// DeploymentVersion is a template version in a deployment task request: a
// JSON number or a numeric string (CDF accepts both); 0 when absent, which
// means the latest version.
type DeploymentVersion int

// DeploymentVersionError is the error of a template.version that is not a
// whole number from 1; its message says what to send.
type DeploymentVersionError struct{ Value string }

func (e *DeploymentVersionError) Error() string {
	return "template.version must be a whole number from 1 (a JSON number or a numeric string), got " + e.Value
}

// UnmarshalJSON accepts a whole number, a string holding one, or null.
func (v *DeploymentVersion) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*v = 0
		return nil
	}
	raw := string(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return &DeploymentVersionError{Value: string(b)}
		}
		raw = strings.TrimSpace(s)
		if raw == "" {
			*v = 0
			return nil
		}
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 || n > 999999999 {
		return &DeploymentVersionError{Value: string(b)}
	}
	*v = DeploymentVersion(n)
	return nil
}

// NewDeploymentTemplate names the template (and optionally the version) of
// a deployment task request.
type NewDeploymentTemplate struct {
	Name    string            `json:"name"`
	Version DeploymentVersion `json:"version,omitempty"`
}

// DeploymentTargets are the cores a deployment task targets (spec §5.2);
// every source is unioned. AssetLibraryQuery is an Asset Library
// SearchRequest, passed on as given.
type DeploymentTargets struct {
	ThingNames             []string        `json:"thingNames,omitempty"`
	ThingGroupNames        []string        `json:"thingGroupNames,omitempty"`
	AssetLibraryDeviceIDs  []string        `json:"assetLibraryDeviceIds,omitempty"`
	AssetLibraryGroupPaths []string        `json:"assetLibraryGroupPaths,omitempty"`
	AssetLibraryQuery      json.RawMessage `json:"assetLibraryQuery,omitempty"`
}

// Empty reports whether no target source is given.
func (t DeploymentTargets) Empty() bool {
	q := bytes.TrimSpace(t.AssetLibraryQuery)
	return len(t.ThingNames) == 0 && len(t.ThingGroupNames) == 0 && len(t.AssetLibraryDeviceIDs) == 0 &&
		len(t.AssetLibraryGroupPaths) == 0 && (len(q) == 0 || bytes.Equal(q, []byte("null")))
}

// NewDeploymentTask is the body of POST /deploymentTasks.
type NewDeploymentTask struct {
	Template     NewDeploymentTemplate `json:"template"`
	Targets      DeploymentTargets     `json:"targets"`
	IotJobConfig json.RawMessage       `json:"iotJobConfig,omitempty"`
}

// CoreDeployment is one core of a deployment task. TaskID is a ggfleet
// addition, present in GET /cores/{name}/deployments.
type CoreDeployment struct {
	TaskID        string `json:"taskId,omitempty"`
	CoreName      string `json:"coreName"`
	TaskStatus    string `json:"taskStatus"`
	StatusMessage string `json:"statusMessage,omitempty"`
	CreatedAt     Time   `json:"createdAt"`
	UpdatedAt     Time   `json:"updatedAt"`
}

// DeploymentTask is the body of GET /deploymentTasks/{id}. The batch
// counters are present only on GET by id, once the targets are expanded.
type DeploymentTask struct {
	ID              string            `json:"id"`
	Template        TemplateRef       `json:"template"`
	Targets         DeploymentTargets `json:"targets"`
	IotJobConfig    json.RawMessage   `json:"iotJobConfig,omitempty"`
	Deployments     []CoreDeployment  `json:"deployments"`
	TaskStatus      string            `json:"taskStatus"`
	StatusMessage   string            `json:"statusMessage,omitempty"`
	CreatedAt       Time              `json:"createdAt"`
	UpdatedAt       Time              `json:"updatedAt"`
	BatchesComplete *int              `json:"batchesComplete,omitempty"`
	BatchesTotal    *int              `json:"batchesTotal,omitempty"`
}

// DeploymentTaskList is the body of GET /deploymentTasks. As in CDF, an
// empty list is {"pagination":{}} and pagination is always present.
type DeploymentTaskList struct {
	DeploymentTasks []DeploymentTask `json:"deploymentTasks,omitempty"`
	Pagination      *Pagination      `json:"pagination"`
}

// DeploymentTaskCoreList is the body of GET /deploymentTasks/{id}/cores.
type DeploymentTaskCoreList struct {
	Cores      []CoreDeployment `json:"cores"`
	Pagination *Pagination      `json:"pagination"`
}

// CoreDeploymentList is the body of GET /cores/{name}/deployments.
type CoreDeploymentList struct {
	Deployments []CoreDeployment `json:"deployments"`
	Pagination  *Pagination      `json:"pagination"`
}
