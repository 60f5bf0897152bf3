// Package cdf holds the wire types of the CDF greengrass2-provisioning REST API
// and ggfleet's additions to it. Field names here are the compatibility
// contract with CDF clients (see ../shared/spec): change them only by adding.
package cdf

import "encoding/json"

// MediaType is the CDF versioned JSON media type, accepted and produced by every JSON endpoint.
const MediaType = "application/vnd.aws-cdf-v1.0+json"

// Task and item statuses, shared by core, device and deployment tasks.
const (
	StatusWaiting    = "Waiting"
	StatusInProgress = "InProgress"
	StatusSuccess    = "Success"
	StatusFailure    = "Failure"
)

// Values of a core's template.reported.deploymentStatus: the outcome of the
// core's last deployment of its desired template. CDF writes None, Failure
// (could not start) and Greengrass's failure values; ggfleet also writes
// IN_PROGRESS while a deployment runs and SUCCESSFUL when it succeeded, so
// the fleet summary counts each core's real last outcome.
const (
	DeploymentStatusNone       = "None"
	DeploymentStatusInProgress = "IN_PROGRESS"
	DeploymentStatusSuccessful = "SUCCESSFUL"
	DeploymentStatusFailure    = "Failure"
	// Greengrass detailed failure values, as agents report them.
	DeploymentStatusFailedNoStateChange        = "FAILED_NO_STATE_CHANGE"
	DeploymentStatusFailedRollbackNotRequested = "FAILED_ROLLBACK_NOT_REQUESTED"
	DeploymentStatusFailedRollbackComplete     = "FAILED_ROLLBACK_COMPLETE"
	DeploymentStatusRejected                   = "REJECTED"
)

// DeploymentFailed reports whether a deploymentStatus value is a failure.
func DeploymentFailed(status string) bool {
	switch status {
	case "", DeploymentStatusNone, DeploymentStatusInProgress, DeploymentStatusSuccessful:
		return false
	}
	return true
}

// Task types of core and device tasks.
const (
	TaskCreate = "Create"
	TaskDelete = "Delete"
)

// ErrorBody is the body of every 4xx/5xx response.
type ErrorBody struct {
	Message string `json:"message"`
}

// Pagination is the CDF pagination block. Count echoes the request's raw
// count string; LastEvaluated is present only when more results exist.
type Pagination struct {
	Count         string         `json:"count,omitempty"`
	LastEvaluated map[string]any `json:"lastEvaluated,omitempty"`
}

// ConfigurationUpdate is a component's configuration merge/reset.
type ConfigurationUpdate struct {
	Merge string   `json:"merge,omitempty"`
	Reset []string `json:"reset,omitempty"`
}

// RunWith sets the POSIX user a component runs as.
type RunWith struct {
	PosixUser string `json:"posixUser,omitempty"`
}

// Component is one component of a template. Version is a string on the wire;
// a JSON number is rejected.
type Component struct {
	Key                 string               `json:"key"`
	Version             string               `json:"version"`
	ConfigurationUpdate *ConfigurationUpdate `json:"configurationUpdate,omitempty"`
	RunWith             *RunWith             `json:"runWith,omitempty"`
}

// EditableTemplate is the body of POST /templates and PUT /templates/{name}.
// JobConfig and DeploymentPolicies are stored as given.
type EditableTemplate struct {
	Name               string          `json:"name"`
	Components         []Component     `json:"components"`
	JobConfig          json.RawMessage `json:"jobConfig,omitempty"`
	DeploymentPolicies json.RawMessage `json:"deploymentPolicies,omitempty"`
}

// Template is one version of a component template as returned by the API.
// Components is nil (omitted) in list responses.
type Template struct {
	Name               string          `json:"name"`
	Version            int             `json:"version"`
	Components         []Component     `json:"components,omitempty"`
	JobConfig          json.RawMessage `json:"jobConfig,omitempty"`
	DeploymentPolicies json.RawMessage `json:"deploymentPolicies,omitempty"`
	CreatedAt          Time            `json:"createdAt"`
	UpdatedAt          Time            `json:"updatedAt"`
}

// TemplateList is the body of GET /templates and GET /templates/{n}/versions.
type TemplateList struct {
	Templates  []Template  `json:"templates"`
	Pagination *Pagination `json:"pagination,omitempty"`
}

// CertInfo is the subject and lifetime of a certificate the broker creates.
// KeyAlgorithm ("EC-P256" | "RSA-2048") is a ggfleet addition.
type CertInfo struct {
	CommonName         string `json:"commonName,omitempty"`
	Organization       string `json:"organization,omitempty"`
	OrganizationalUnit string `json:"organizationalUnit,omitempty"`
	Locality           string `json:"locality,omitempty"`
	StateName          string `json:"stateName,omitempty"`
	Country            string `json:"country,omitempty"`
	EmailAddress       string `json:"emailAddress,omitempty"`
	DaysExpiry         int    `json:"daysExpiry,omitempty"`
	KeyAlgorithm       string `json:"keyAlgorithm,omitempty"`
}

// CdfProvisioningParameters are the CDF-specific inputs of provisioning.
type CdfProvisioningParameters struct {
	CaID              string    `json:"caId,omitempty"`
	CertInfo          *CertInfo `json:"certInfo,omitempty"`
	CertificatePem    string    `json:"certificatePem,omitempty"`
	CertificateStatus string    `json:"certificateStatus,omitempty"`
	AcmpcaCaArn       string    `json:"acmpcaCaArn,omitempty"`
	AcmpcaCaAlias     string    `json:"acmpcaCaAlias,omitempty"`
	AwsiotCaArn       string    `json:"awsiotCaArn,omitempty"`
	AwsiotCaAlias     string    `json:"awsiotCaAlias,omitempty"`
	Csr               string    `json:"csr,omitempty"`
}

// NewCore is one core of a core task request.
type NewCore struct {
	Name                      string                     `json:"name"`
	ProvisioningTemplate      string                     `json:"provisioningTemplate"`
	ProvisioningParameters    map[string]string          `json:"provisioningParameters,omitempty"`
	CdfProvisioningParameters *CdfProvisioningParameters `json:"cdfProvisioningParameters,omitempty"`
	ConfigFileGenerator       string                     `json:"configFileGenerator,omitempty"`
}

// CoreTaskOptions are the options of a core Delete task.
type CoreTaskOptions struct {
	DeprovisionCores         bool `json:"deprovisionCores"`
	DeprovisionClientDevices bool `json:"deprovisionClientDevices"`
}

// NewCoreTask is the body of POST /coreTasks.
type NewCoreTask struct {
	Type        string           `json:"type"`
	CoreVersion string           `json:"coreVersion"`
	Cores       []NewCore        `json:"cores"`
	Options     *CoreTaskOptions `json:"options,omitempty"`
}

// TaskItem is one core or device of a core/device task.
type TaskItem struct {
	Name          string `json:"name"`
	CoreName      string `json:"coreName,omitempty"`
	TaskStatus    string `json:"taskStatus"`
	StatusMessage string `json:"statusMessage,omitempty"`
	CreatedAt     Time   `json:"createdAt"`
	UpdatedAt     Time   `json:"updatedAt"`
}

// CoreTask is the body of GET /coreTasks/{id}.
type CoreTask struct {
	ID            string           `json:"id"`
	CoreVersion   string           `json:"coreVersion"`
	Cores         []TaskItem       `json:"cores"`
	Options       *CoreTaskOptions `json:"options,omitempty"`
	TaskStatus    string           `json:"taskStatus"`
	StatusMessage string           `json:"statusMessage,omitempty"`
	CreatedAt     Time             `json:"createdAt"`
	UpdatedAt     Time             `json:"updatedAt"`
	Type          string           `json:"type"`
}

// CoreTaskList is the body of GET /coreTasks.
type CoreTaskList struct {
	Tasks      []CoreTask  `json:"tasks"`
	Pagination *Pagination `json:"pagination,omitempty"`
}

// Artifact locates a generated file (certs.zip, installerConfig.yml).
type Artifact struct {
	Bucket    string `json:"bucket"`
	Key       string `json:"key"`
	CreatedAt Time   `json:"createdAt"`
}

// TemplateRef names a template version.
type TemplateRef struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
}

// ReportedTemplate is the template a core last reported, with the outcome of its last deployment.
type ReportedTemplate struct {
	Name                    string `json:"name"`
	Version                 int    `json:"version"`
	DeploymentStatus        string `json:"deploymentStatus"`
	DeploymentStatusMessage string `json:"deploymentStatusMessage,omitempty"`
}

// CoreTemplate is a core's desired and reported template.
type CoreTemplate struct {
	Desired  TemplateRef      `json:"desired"`
	Reported ReportedTemplate `json:"reported"`
}

// InstalledComponent is a component running on a core.
type InstalledComponent struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// EffectiveDeployment is a deployment as the core reports it.
type EffectiveDeployment struct {
	DeploymentID              string `json:"deploymentId,omitempty"`
	DeploymentName            string `json:"deploymentName,omitempty"`
	IotJobID                  string `json:"iotJobId,omitempty"`
	IotJobArn                 string `json:"iotJobArn,omitempty"`
	Description               string `json:"description,omitempty"`
	TargetArn                 string `json:"targetArn,omitempty"`
	CoreDeviceExecutionStatus string `json:"coreDeviceExecutionStatus,omitempty"`
	Reason                    string `json:"reason,omitempty"`
	CreatedAt                 *Time  `json:"createdAt,omitempty"`
	UpdatedAt                 *Time  `json:"updatedAt,omitempty"`
}

// Device is the live Greengrass view of a core (GET /cores/{name} only).
// Connectivity and LastSeenAt are ggfleet additions.
type Device struct {
	InstalledComponents       []InstalledComponent  `json:"installedComponents"`
	EffectiveDeployments      []EffectiveDeployment `json:"effectiveDeployments"`
	CoreVersion               string                `json:"coreVersion,omitempty"`
	Platform                  string                `json:"platform,omitempty"`
	Architecture              string                `json:"architecture,omitempty"`
	Status                    string                `json:"status"`
	LastStatusUpdateTimestamp *Time                 `json:"lastStatusUpdateTimestamp,omitempty"`
	Tags                      map[string]string     `json:"tags,omitempty"`
	Connectivity              string                `json:"connectivity,omitempty"`
	LastSeenAt                *Time                 `json:"lastSeenAt,omitempty"`
}

// Core is a core device record. Artifacts and Device are present on GET by name only.
type Core struct {
	Name      string              `json:"name"`
	Artifacts map[string]Artifact `json:"artifacts,omitempty"`
	Device    *Device             `json:"device,omitempty"`
	Template  CoreTemplate        `json:"template"`
	CreatedAt Time                `json:"createdAt"`
	UpdatedAt Time                `json:"updatedAt"`
}

// CoreList is the body of GET /cores.
type CoreList struct {
	Cores      []Core      `json:"cores"`
	Pagination *Pagination `json:"pagination,omitempty"`
}

// NewDevice is one client device of a device task request.
type NewDevice struct {
	Name                      string                     `json:"name"`
	ProvisioningTemplate      string                     `json:"provisioningTemplate"`
	ProvisioningParameters    map[string]string          `json:"provisioningParameters,omitempty"`
	CdfProvisioningParameters *CdfProvisioningParameters `json:"cdfProvisioningParameters,omitempty"`
}

// DeviceTaskOptions are the options of a device Delete task.
type DeviceTaskOptions struct {
	DeprovisionClientDevices bool `json:"deprovisionClientDevices"`
}

// NewDeviceTask is the body of POST /cores/{coreName}/deviceTasks. CoreName in
// the body is ignored; the path wins.
type NewDeviceTask struct {
	Type     string             `json:"type"`
	CoreName string             `json:"coreName,omitempty"`
	Devices  []NewDevice        `json:"devices"`
	Options  *DeviceTaskOptions `json:"options,omitempty"`
}

// DeviceTask is the body of GET /deviceTasks/{id}.
type DeviceTask struct {
	ID            string             `json:"id"`
	CoreName      string             `json:"coreName"`
	Devices       []TaskItem         `json:"devices"`
	Options       *DeviceTaskOptions `json:"options,omitempty"`
	TaskStatus    string             `json:"taskStatus"`
	StatusMessage string             `json:"statusMessage,omitempty"`
	CreatedAt     Time               `json:"createdAt"`
	UpdatedAt     Time               `json:"updatedAt"`
	Type          string             `json:"type"`
}

// DeviceTaskList is the body of GET /deviceTasks (ggfleet addition).
type DeviceTaskList struct {
	Tasks      []DeviceTask `json:"tasks"`
	Pagination *Pagination  `json:"pagination,omitempty"`
}

// ClientDevice is a client device record.
type ClientDevice struct {
	Name      string              `json:"name"`
	CoreName  string              `json:"coreName"`
	Artifacts map[string]Artifact `json:"artifacts,omitempty"`
	CreatedAt Time                `json:"createdAt"`
	UpdatedAt Time                `json:"updatedAt"`
}

// ClientDeviceList is the body of GET /devices (ggfleet addition).
type ClientDeviceList struct {
	Devices    []ClientDevice `json:"devices"`
	Pagination *Pagination    `json:"pagination,omitempty"`
}
