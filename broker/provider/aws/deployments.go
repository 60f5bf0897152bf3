package aws

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/greengrassv2"
	ggtypes "github.com/aws/aws-sdk-go-v2/service/greengrassv2/types"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	iottypes "github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/templates"
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
	// JobConfig is the deployment's iotJobConfiguration, or nil for
	// Greengrass's defaults.
	JobConfig *templates.JobConfig
	// Tags are set on the Greengrass deployment.
	Tags map[string]string
	// JobTags are set on the IoT job that delivers it (Greengrass does not
	// copy the deployment's tags there): CDF finds a job's deployment task
	// by its tag.
	JobTags map[string]string
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
	in.IotJobConfiguration = jobConfiguration(spec.JobConfig)
	out, err := p.gg.CreateDeployment(ctx, in)
	if err != nil {
		return Deployment{}, mapErr(err, "create deployment %q to thing group %q", spec.Name, spec.TargetGroup)
	}
	dep := Deployment{ID: sdkaws.ToString(out.DeploymentId), JobID: sdkaws.ToString(out.IotJobId)}
	if len(spec.JobTags) > 0 {
		if err := p.tagJob(ctx, sdkaws.ToString(out.IotJobArn), spec.JobTags); err != nil {
			return Deployment{}, fmt.Errorf("deployment %s: %w", dep.ID, err)
		}
	}
	return dep, nil
}

// tagJob sets tags on an IoT job (TagResource is idempotent: a re-run after
// a crash sets the same values again).
func (p *Provider) tagJob(ctx context.Context, jobARN string, tags map[string]string) error {
	if jobARN == "" {
		return errkind.New(errkind.Unavailable, "Greengrass returned no IoT job ARN to tag")
	}
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	list := make([]iottypes.Tag, len(keys))
	for i, k := range keys {
		list[i] = iottypes.Tag{Key: sdkaws.String(k), Value: sdkaws.String(tags[k])}
	}
	if _, err := p.iot.TagResource(ctx, &iot.TagResourceInput{ResourceArn: &jobARN, Tags: list}); err != nil {
		return mapErr(err, "tag IoT job %s", jobARN)
	}
	return nil
}

// jobConfiguration is the SDK form of a job configuration (nil for none).
func jobConfiguration(jc *templates.JobConfig) *ggtypes.DeploymentIoTJobConfiguration {
	if jc == nil {
		return nil
	}
	out := &ggtypes.DeploymentIoTJobConfiguration{}
	if r := jc.JobExecutionsRolloutConfig; r != nil {
		out.JobExecutionsRolloutConfig = &ggtypes.IoTJobExecutionsRolloutConfig{MaximumPerMinute: r.MaximumPerMinute}
		if e := r.ExponentialRate; e != nil {
			rate := &ggtypes.IoTJobExponentialRolloutRate{BaseRatePerMinute: e.BaseRatePerMinute, IncrementFactor: e.IncrementFactor}
			if c := e.RateIncreaseCriteria; c != nil {
				rate.RateIncreaseCriteria = &ggtypes.IoTJobRateIncreaseCriteria{
					NumberOfNotifiedThings: c.NumberOfNotifiedThings, NumberOfSucceededThings: c.NumberOfSucceededThings}
			}
			out.JobExecutionsRolloutConfig.ExponentialRate = rate
		}
	}
	if a := jc.AbortConfig; a != nil {
		out.AbortConfig = &ggtypes.IoTJobAbortConfig{CriteriaList: make([]ggtypes.IoTJobAbortCriteria, len(a.CriteriaList))}
		for i, c := range a.CriteriaList {
			out.AbortConfig.CriteriaList[i] = ggtypes.IoTJobAbortCriteria{
				FailureType:               ggtypes.IoTJobExecutionFailureType(c.FailureType),
				Action:                    ggtypes.IoTJobAbortAction(c.Action),
				ThresholdPercentage:       sdkaws.ToFloat64(c.ThresholdPercentage),
				MinNumberOfExecutedThings: c.MinNumberOfExecutedThings,
			}
		}
	}
	if t := jc.TimeoutConfig; t != nil {
		out.TimeoutConfig = &ggtypes.IoTJobTimeoutConfig{InProgressTimeoutInMinutes: t.InProgressTimeoutInMinutes}
	}
	return out
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
