package awsfake

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Deployment is a Greengrass V2 deployment the fake holds.
type Deployment struct {
	ID         string                     `json:"deploymentId"`
	JobID      string                     `json:"iotJobId"`
	Name       string                     `json:"deploymentName"`
	TargetArn  string                     `json:"targetArn"`
	Components map[string]json.RawMessage `json:"components"`
	Policies   json.RawMessage            `json:"deploymentPolicies,omitempty"`
	// JobConfig is the iotJobConfiguration as the caller sent it.
	JobConfig json.RawMessage   `json:"iotJobConfiguration,omitempty"`
	Tags      map[string]string `json:"tags,omitempty"`
	// JobTags are the tags of the deployment's IoT job (IoT TagResource).
	JobTags map[string]string `json:"jobTags,omitempty"`
	Status  string            `json:"deploymentStatus"` // ACTIVE | CANCELED
	Created time.Time         `json:"creationTimestamp"`
}

// execution is a job execution on one thing.
type execution struct {
	status  string
	details map[string]string
	queued  time.Time
	updated time.Time
}

var (
	targetARNRE   = regexp.MustCompile(`^arn:aws(-cn|-us-gov)?:iot:[^:]+:[0-9]+:(thing|thinggroup)/(.+)$`)
	clientTokenRE = regexp.MustCompile(`^[a-zA-Z0-9-]{1,64}$`)
	jobIDRE       = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)
	componentRE   = regexp.MustCompile(`^[^\s]{1,128}$`)
)

// Job execution statuses the fake uses.
var jobFinal = []string{"SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "REMOVED", "CANCELED"}

// Deployments returns the deployments made so far, oldest first.
func (f *Fake) Deployments() []Deployment {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Deployment, 0, len(f.deployments))
	for _, d := range f.deployments {
		c := *d
		c.JobTags = maps.Clone(d.JobTags) // TagResource may add to the fake's own map later
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out
}

// FinishJobExecutions sets the status of the thing's queued or in-progress
// job executions, as the nucleus does when it applies a deployment
// (SUCCEEDED, FAILED, REJECTED; detailed status in the details map), and
// returns how many it changed.
func (f *Fake) FinishJobExecutions(thing, status string) (int, error) {
	if status == "" {
		status = "SUCCEEDED"
	}
	if !slices.Contains([]string{"IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT"}, status) {
		return 0, fmt.Errorf("job execution status %q: use IN_PROGRESS, SUCCEEDED, FAILED, REJECTED or TIMED_OUT", status)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.materialize(thing)
	n := 0
	for jobID, execs := range f.jobs {
		e := execs[thing]
		if e == nil || slices.Contains(jobFinal, e.status) {
			continue
		}
		e.status, e.updated = status, time.Now()
		switch status {
		case "FAILED":
			e.details = map[string]string{"detailed-deployment-status": "FAILED_NO_STATE_CHANGE", "deployment-failure-cause": "injected by the fake"}
		case "SUCCEEDED":
			e.details = map[string]string{"detailed-deployment-status": "SUCCESSFUL"}
			f.install(thing, jobID)
		}
		n++
	}
	return n, nil
}

// install makes a core device's installed components those of the
// deployment whose job just succeeded on it, as its nucleus reports them.
// Callers hold f.mu.
func (f *Fake) install(thing, jobID string) {
	c := f.gg[thing]
	if c == nil {
		return
	}
	for _, d := range f.deployments {
		if d.JobID != jobID {
			continue
		}
		var list []InstalledComponent
		for _, name := range sortedKeys(boolKeys(d.Components)) {
			var spec struct {
				ComponentVersion string `json:"componentVersion"`
			}
			_ = json.Unmarshal(d.Components[name], &spec) // checked by createDeployment
			list = append(list, InstalledComponent{Name: name, Version: spec.ComponentVersion})
		}
		c.installed, c.updated = list, time.Now()
	}
}

func boolKeys[V any](m map[string]V) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// materialize gives thing a QUEUED execution of every active deployment
// to a group it is now a member of: Greengrass group deployments are
// continuous, so things added later get the job too. Callers hold f.mu.
func (f *Fake) materialize(thing string) {
	now := time.Now()
	for _, d := range f.deployments {
		m := targetARNRE.FindStringSubmatch(d.TargetArn)
		if d.Status != "ACTIVE" || m == nil || m[2] != "thinggroup" {
			continue
		}
		if g := f.iot.groups[m[3]]; g == nil || !g.members[thing] {
			continue
		}
		if f.jobs[d.JobID][thing] == nil {
			f.jobs[d.JobID][thing] = &execution{status: "QUEUED", queued: now, updated: now}
		}
	}
}

func (f *Fake) routeDeployments(iotH, ggH func(pattern, op string, fn handlerFunc)) {
	iotH("GET /thing-groups/{thingGroupName}", "DescribeThingGroup", f.describeThingGroup)
	iotH("GET /things/{thingName}/jobs/{jobId}", "DescribeJobExecution", f.describeJobExecution)
	ggH("POST /greengrass/v2/deployments", "CreateDeployment", f.createDeployment)
	iotH("POST /tags", "TagResource", f.tagResource)
}

// jobARNRE matches an IoT job ARN.
var jobARNRE = regexp.MustCompile(`^arn:aws(-cn|-us-gov)?:iot:[^:]+:[0-9]+:job/([a-zA-Z0-9_-]{1,64})$`)

// tagResource is IoT TagResource. The fake tags IoT jobs (the resources
// the broker tags this way); other ARNs are refused with a message saying so.
func (f *Fake) tagResource(r *http.Request) (int, any, *apiError) {
	var in struct {
		ResourceArn *string `json:"resourceArn"`
		Tags        []struct {
			Key   *string `json:"Key"`
			Value *string `json:"Value"`
		} `json:"tags"`
	}
	if err := decodeBody(r, &in); err != nil {
		return 0, nil, err
	}
	if in.ResourceArn == nil || in.Tags == nil {
		return 0, nil, invalid("resourceArn and tags are required")
	}
	if len(in.Tags) > 50 {
		return 0, nil, invalid("1 validation error detected: Value at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50")
	}
	for _, t := range in.Tags {
		if t.Key == nil || len(*t.Key) < 1 || len(*t.Key) > 128 || strings.HasPrefix(*t.Key, "aws:") {
			return 0, nil, invalid("tags[].Key is required, 1 to 128 characters, and may not start with aws:")
		}
		if t.Value != nil && len(*t.Value) > 256 {
			return 0, nil, invalid("tags[].Value may have at most 256 characters")
		}
	}
	m := jobARNRE.FindStringSubmatch(*in.ResourceArn)
	if m == nil {
		return 0, nil, invalid("the fake tags IoT jobs only; resourceArn '%s' is not a job ARN (arn:aws:iot:<region>:<account>:job/<jobId>)", *in.ResourceArn)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range f.deployments {
		if d.JobID != m[2] {
			continue
		}
		if d.JobTags == nil {
			d.JobTags = map[string]string{}
		}
		for _, t := range in.Tags {
			v := ""
			if t.Value != nil {
				v = *t.Value
			}
			d.JobTags[*t.Key] = v
		}
		return http.StatusOK, map[string]any{}, nil
	}
	return 0, nil, notFound("Job %s not found", m[2])
}

// effectiveStatus is a job execution status as Greengrass's
// EffectiveDeploymentExecutionStatus.
func effectiveStatus(jobStatus string) string {
	if jobStatus == "REMOVED" {
		return "CANCELED"
	}
	return jobStatus
}

func (f *Fake) listEffectiveDeployments(r *http.Request) (int, any, *apiError) {
	n, err := coreName(r)
	if err != nil {
		return 0, nil, err
	}
	size, token, err := listQuery(r)
	if err != nil {
		return 0, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gg[n] == nil {
		return 0, nil, ggNotFound(n)
	}
	f.materialize(n)
	var mine []*Deployment
	for _, d := range f.deployments {
		if f.jobs[d.JobID][n] != nil {
			mine = append(mine, d)
		}
	}
	// Newest first.
	sort.Slice(mine, func(i, j int) bool {
		if !mine[i].Created.Equal(mine[j].Created) {
			return mine[i].Created.After(mine[j].Created)
		}
		return mine[i].ID < mine[j].ID
	})
	idx := make([]string, len(mine))
	for i := range mine {
		idx[i] = strconv.Itoa(i)
	}
	items, next, perr := page(idx, token, size, 50, 100)
	if perr != nil {
		return 0, nil, validation("%s", perr.Message)
	}
	out := []map[string]any{}
	for _, i := range items {
		k, _ := strconv.Atoi(i)
		d := mine[k]
		e := f.jobs[d.JobID][n]
		item := map[string]any{"deploymentId": d.ID, "deploymentName": d.Name, "iotJobId": d.JobID, "iotJobArn": arn("job/" + d.JobID),
			"targetArn": d.TargetArn, "coreDeviceExecutionStatus": effectiveStatus(e.status),
			"creationTimestamp": epoch(d.Created), "modifiedTimestamp": epoch(e.updated)}
		if cause := e.details["deployment-failure-cause"]; cause != "" {
			item["reason"] = cause
		}
		if ds := e.details["detailed-deployment-status"]; ds != "" {
			item["statusDetails"] = map[string]any{"detailedExecutionStatus": ds}
		}
		out = append(out, item)
	}
	return http.StatusOK, map[string]any{"effectiveDeployments": out, "nextToken": nilIfEmpty(next)}, nil
}

func (f *Fake) describeThingGroup(r *http.Request) (int, any, *apiError) {
	name := r.PathValue("thingGroupName")
	if err := checkThingName("thingGroupName", name); err != nil {
		return 0, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.iot.groups[name]
	if g == nil {
		return 0, nil, notFound("Thing Group %s does not exist", name)
	}
	return http.StatusOK, map[string]any{"thingGroupName": g.name, "thingGroupId": g.id, "thingGroupArn": arn("thinggroup/" + g.name),
		"version": 1, "thingGroupProperties": map[string]any{"thingGroupDescription": g.desc}}, nil
}

func (f *Fake) describeJobExecution(r *http.Request) (int, any, *apiError) {
	thing, jobID := r.PathValue("thingName"), r.PathValue("jobId")
	if err := checkThingName("thingName", thing); err != nil {
		return 0, nil, err
	}
	if !jobIDRE.MatchString(jobID) {
		return 0, nil, invalid("1 validation error detected: Value '%s' at 'jobId' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+ and have length between 1 and 64", jobID)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.materialize(thing)
	e := f.jobs[jobID][thing]
	if e == nil {
		return 0, nil, notFound("Job execution for job %s on thing %s not found", jobID, thing)
	}
	ex := map[string]any{"jobId": jobID, "status": e.status, "thingArn": arn("thing/" + thing),
		"queuedAt": epoch(e.queued), "lastUpdatedAt": epoch(e.updated), "executionNumber": 1, "versionNumber": 1}
	if len(e.details) > 0 {
		ex["statusDetails"] = map[string]any{"detailsMap": e.details}
	}
	return http.StatusOK, map[string]any{"execution": ex}, nil
}

func (f *Fake) createDeployment(r *http.Request) (int, any, *apiError) {
	var in struct {
		TargetArn           string                     `json:"targetArn"`
		DeploymentName      string                     `json:"deploymentName"`
		Components          map[string]json.RawMessage `json:"components"`
		DeploymentPolicies  json.RawMessage            `json:"deploymentPolicies"`
		IotJobConfiguration json.RawMessage            `json:"iotJobConfiguration"`
		ParentTargetArn     string                     `json:"parentTargetArn"`
		Tags                map[string]string          `json:"tags"`
		ClientToken         string                     `json:"clientToken"`
	}
	if err := decodeBody(r, &in); err != nil {
		err.Code = "ValidationException"
		return 0, nil, err
	}
	m := targetARNRE.FindStringSubmatch(in.TargetArn)
	if m == nil {
		return 0, nil, validation("targetArn '%s' must be the ARN of a thing or thing group (arn:aws:iot:<region>:<account>:thinggroup/<name>)", in.TargetArn)
	}
	if in.ClientToken != "" && !clientTokenRE.MatchString(in.ClientToken) {
		return 0, nil, validation("clientToken must match ^[a-zA-Z0-9-]+$ and have length between 1 and 64")
	}
	if len(in.Tags) > 200 {
		return 0, nil, validation("tags may have at most 200 entries")
	}
	for name, raw := range in.Components {
		if !componentRE.MatchString(name) {
			return 0, nil, validation("component name '%s' is not valid", name)
		}
		var c struct {
			ComponentVersion    string `json:"componentVersion"`
			ConfigurationUpdate *struct {
				Merge *string  `json:"merge"`
				Reset []string `json:"reset"`
			} `json:"configurationUpdate"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return 0, nil, validation("components.%s is not valid: %v", name, err)
		}
		if c.ComponentVersion == "" || len(c.ComponentVersion) > 64 {
			return 0, nil, validation("components.%s.componentVersion is required and must have length between 1 and 64", name)
		}
		if cu := c.ConfigurationUpdate; cu != nil && cu.Merge != nil {
			var obj map[string]any
			if json.Unmarshal([]byte(*cu.Merge), &obj) != nil {
				return 0, nil, validation("components.%s.configurationUpdate.merge must be a JSON object serialized as a string", name)
			}
		}
	}
	if len(in.DeploymentPolicies) > 0 {
		var p struct {
			FailureHandlingPolicy string `json:"failureHandlingPolicy"`
			ComponentUpdatePolicy *struct {
				Action string `json:"action"`
			} `json:"componentUpdatePolicy"`
		}
		if err := json.Unmarshal(in.DeploymentPolicies, &p); err != nil {
			return 0, nil, validation("deploymentPolicies is not valid: %v", err)
		}
		if p.FailureHandlingPolicy != "" && p.FailureHandlingPolicy != "ROLLBACK" && p.FailureHandlingPolicy != "DO_NOTHING" {
			return 0, nil, validation("deploymentPolicies.failureHandlingPolicy '%s' must be ROLLBACK or DO_NOTHING", p.FailureHandlingPolicy)
		}
		if c := p.ComponentUpdatePolicy; c != nil && c.Action != "" && c.Action != "NOTIFY_COMPONENTS" && c.Action != "SKIP_NOTIFY_COMPONENTS" {
			return 0, nil, validation("deploymentPolicies.componentUpdatePolicy.action '%s' must be NOTIFY_COMPONENTS or SKIP_NOTIFY_COMPONENTS", c.Action)
		}
	}
	if err := checkJobConfiguration(in.IotJobConfiguration); err != nil {
		return 0, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if id, ok := f.deployTokens[in.ClientToken]; ok && in.ClientToken != "" {
		d := f.deployments[id]
		return http.StatusCreated, map[string]any{"deploymentId": d.ID, "iotJobId": d.JobID, "iotJobArn": arn("job/" + d.JobID)}, nil
	}
	var targets []string
	switch m[2] {
	case "thing":
		if f.iot.things[m[3]] == nil {
			return 0, nil, errorf(http.StatusNotFound, "ResourceNotFoundException", "Thing %s not found", m[3])
		}
		targets = []string{m[3]}
	default:
		g := f.iot.groups[m[3]]
		if g == nil {
			return 0, nil, errorf(http.StatusNotFound, "ResourceNotFoundException", "Thing group %s not found", m[3])
		}
		targets = sortedKeys(g.members)
	}
	now := time.Now()
	d := &Deployment{ID: newID(), JobID: newID(), Name: in.DeploymentName, TargetArn: in.TargetArn, Components: in.Components,
		Policies: in.DeploymentPolicies, JobConfig: in.IotJobConfiguration, Tags: in.Tags, Status: "ACTIVE", Created: now}
	// A new deployment to a target replaces the previous one: its pending
	// executions are canceled.
	for _, old := range f.deployments {
		if old.TargetArn == d.TargetArn && old.Status == "ACTIVE" {
			old.Status = "CANCELED"
			for _, e := range f.jobs[old.JobID] {
				if !slices.Contains(jobFinal, e.status) {
					e.status, e.updated = "CANCELED", now
				}
			}
		}
	}
	execs := map[string]*execution{}
	for _, t := range targets {
		execs[t] = &execution{status: "QUEUED", queued: now, updated: now}
	}
	f.deployments[d.ID] = d
	f.jobs[d.JobID] = execs
	if in.ClientToken != "" {
		f.deployTokens[in.ClientToken] = d.ID
	}
	return http.StatusCreated, map[string]any{"deploymentId": d.ID, "iotJobId": d.JobID, "iotJobArn": arn("job/" + d.JobID)}, nil
}
