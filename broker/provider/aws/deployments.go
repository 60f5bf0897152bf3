package aws

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/greengrassv2"
	ggtypes "github.com/aws/aws-sdk-go-v2/service/greengrassv2/types"
	"github.com/aws/aws-sdk-go-v2/service/iot"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
)

// Component is one component of a Greengrass deployment.
type Component struct {
	Version string
	// Merge is the configuration merge document (JSON text), "" for none.
	Merge string
	// Reset lists JSON pointers of configuration to reset.
	Reset []string
	// PosixUser runs the component as this user (runWith.posixUser), "" for the default.
	PosixUser string
}

// DeploymentSpec is one Greengrass V2 deployment to a thing group.
type DeploymentSpec struct {
	// TargetGroup is the thing group the deployment targets.
	TargetGroup string
	// Name is the deployment name (the template name and version).
	Name       string
	Components map[string]Component
	// Policies is the CDF/Greengrass deploymentPolicies object (JSON), or nil.
	Policies json.RawMessage
	// Tags are set on the deployment (and so on its IoT job).
	Tags map[string]string
	// ClientToken makes the call idempotent: the same token returns the
	// deployment already made (after a crash, a re-run makes no second one).
	ClientToken string
}

// Deployment is what CreateDeployment made.
type Deployment struct {
	ID    string // Greengrass deployment id
	JobID string // the IoT job that delivers it
}

// policies is the wire form of deploymentPolicies.
type policies struct {
	FailureHandlingPolicy string `json:"failureHandlingPolicy"`
	ComponentUpdatePolicy *struct {
		TimeoutInSeconds *int32 `json:"timeoutInSeconds"`
		Action           string `json:"action"`
	} `json:"componentUpdatePolicy"`
	ConfigurationValidationPolicy *struct {
		TimeoutInSeconds *int32 `json:"timeoutInSeconds"`
	} `json:"configurationValidationPolicy"`
}

// CreateDeployment makes a Greengrass V2 deployment to a thing group. A
// deployment to a group replaces the group's previous one, as in Greengrass.
func (p *Provider) CreateDeployment(ctx context.Context, spec DeploymentSpec) (Deployment, error) {
	if err := provider.CheckName("thing group name", spec.TargetGroup); err != nil {
		return Deployment{}, err
	}
	p.mu.Lock()
	base := p.arnBase
	p.mu.Unlock()
	if base == "" {
		out, err := p.iot.DescribeThingGroup(ctx, &iot.DescribeThingGroupInput{ThingGroupName: &spec.TargetGroup})
		if err != nil {
			return Deployment{}, mapErr(err, "describe thing group %q", spec.TargetGroup)
		}
		p.learnARN(out.ThingGroupArn)
		p.mu.Lock()
		base = p.arnBase
		p.mu.Unlock()
	}
	in := &greengrassv2.CreateDeploymentInput{
		TargetArn:      sdkaws.String(base + "thinggroup/" + spec.TargetGroup),
		DeploymentName: sdkaws.String(spec.Name),
		Components:     map[string]ggtypes.ComponentDeploymentSpecification{},
		Tags:           spec.Tags,
	}
	if spec.ClientToken != "" {
		in.ClientToken = sdkaws.String(spec.ClientToken)
	}
	for name, c := range spec.Components {
		cs := ggtypes.ComponentDeploymentSpecification{ComponentVersion: sdkaws.String(c.Version)}
		if c.Merge != "" || len(c.Reset) > 0 {
			cs.ConfigurationUpdate = &ggtypes.ComponentConfigurationUpdate{Reset: c.Reset}
			if c.Merge != "" {
				cs.ConfigurationUpdate.Merge = sdkaws.String(c.Merge)
			}
		}
		if c.PosixUser != "" {
			cs.RunWith = &ggtypes.ComponentRunWith{PosixUser: sdkaws.String(c.PosixUser)}
		}
		in.Components[name] = cs
	}
	if len(spec.Policies) > 0 && string(spec.Policies) != "null" {
		var pol policies
		if err := json.Unmarshal(spec.Policies, &pol); err != nil {
			return Deployment{}, errkind.Wrap(errkind.Invalid, err, "deploymentPolicies is not a valid object")
		}
		dp := &ggtypes.DeploymentPolicies{}
		if pol.FailureHandlingPolicy != "" {
			dp.FailureHandlingPolicy = ggtypes.DeploymentFailureHandlingPolicy(pol.FailureHandlingPolicy)
		}
		if c := pol.ComponentUpdatePolicy; c != nil {
			dp.ComponentUpdatePolicy = &ggtypes.DeploymentComponentUpdatePolicy{TimeoutInSeconds: c.TimeoutInSeconds,
				Action: ggtypes.DeploymentComponentUpdatePolicyAction(c.Action)}
		}
		if c := pol.ConfigurationValidationPolicy; c != nil {
			dp.ConfigurationValidationPolicy = &ggtypes.DeploymentConfigurationValidationPolicy{TimeoutInSeconds: c.TimeoutInSeconds}
		}
		in.DeploymentPolicies = dp
	}
	out, err := p.gg.CreateDeployment(ctx, in)
	if err != nil {
		return Deployment{}, mapErr(err, "create deployment %q to thing group %q", spec.Name, spec.TargetGroup)
	}
	return Deployment{ID: sdkaws.ToString(out.DeploymentId), JobID: sdkaws.ToString(out.IotJobId)}, nil
}

// Job execution statuses (AWS IoT JobExecutionStatus).
const (
	JobQueued     = "QUEUED"
	JobInProgress = "IN_PROGRESS"
	JobSucceeded  = "SUCCEEDED"
)

// JobFinal reports whether a job execution status is final.
func JobFinal(status string) bool {
	switch status {
	case "SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "REMOVED", "CANCELED":
		return true
	}
	return false
}

// JobExecution is the state of a job on one thing.
type JobExecution struct {
	Status  string
	Details map[string]string // statusDetails.detailsMap (Greengrass puts its detailed status there)
}

// DescribeJobExecution returns a job's execution on a thing, or
// errkind.NotFound when the thing has none (it joined the group later and
// the job has not reached it yet).
func (p *Provider) DescribeJobExecution(ctx context.Context, jobID, thing string) (JobExecution, error) {
	if err := provider.CheckName("thing name", thing); err != nil {
		return JobExecution{}, err
	}
	if jobID == "" || len(jobID) > 64 || strings.ContainsAny(jobID, "/ ") {
		return JobExecution{}, errkind.New(errkind.Invalid, "job id %q is not valid", jobID)
	}
	out, err := p.iot.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: &jobID, ThingName: &thing})
	if err != nil {
		return JobExecution{}, mapErr(err, "describe execution of job %s on %q", jobID, thing)
	}
	if out.Execution == nil {
		return JobExecution{}, fmt.Errorf("describe execution of job %s on %q: empty answer", jobID, thing)
	}
	je := JobExecution{Status: string(out.Execution.Status)}
	if out.Execution.StatusDetails != nil {
		je.Details = out.Execution.StatusDetails.DetailsMap
	}
	return je, nil
}
