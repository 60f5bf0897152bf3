// Package mqttmsg is the MQTT contract between the broker and its agents:
// topic names, the rule that a device may only use its own topics, and the
// versioned JSON messages. Every payload carries "version": 1 and fields are
// only ever added, so old agents and new brokers keep understanding each
// other. stdlib only: the agent links it too.
package mqttmsg

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Version is the message version this package writes.
const Version = 1

// Prefix is the root of every ggfleet topic.
const Prefix = "ggfleet/things/"

// Topic suffixes under ggfleet/things/{thing}/.
const (
	Connection       = "connection"         // agent → broker, retained; also the last will
	Health           = "health"             // agent → broker, QoS 1
	Deployments      = "deployments"        // broker → agent, retained, QoS 1
	DeploymentStatus = "deployments/status" // agent → broker, QoS 1
	Hello            = "agent/hello"        // agent → broker on every connect
)

// Connectivity states.
const (
	Online  = "ONLINE"
	Offline = "OFFLINE"
)

// Health statuses, as Greengrass reports them.
const (
	Healthy   = "HEALTHY"
	Unhealthy = "UNHEALTHY"
)

// Deployment statuses and detailed statuses (spec §5.4).
const (
	StatusInProgress = "IN_PROGRESS"
	StatusSucceeded  = "SUCCEEDED"
	StatusFailed     = "FAILED"

	DetailSuccessful                 = "SUCCESSFUL"
	DetailFailedNoStateChange        = "FAILED_NO_STATE_CHANGE"
	DetailFailedRollbackNotRequested = "FAILED_ROLLBACK_NOT_REQUESTED"
	DetailFailedRollbackComplete     = "FAILED_ROLLBACK_COMPLETE"
	DetailRejected                   = "REJECTED"
)

// Topic returns ggfleet/things/{thing}/{suffix}.
func Topic(thing, suffix string) string { return Prefix + thing + "/" + suffix }

// ParseTopic splits a concrete topic into its thing and suffix.
func ParseTopic(topic string) (thing, suffix string, ok bool) {
	rest, found := strings.CutPrefix(topic, Prefix)
	if !found {
		return "", "", false
	}
	thing, suffix, found = strings.Cut(rest, "/")
	if !found || thing == "" || suffix == "" || strings.ContainsAny(thing, "+#") {
		return "", "", false
	}
	return thing, suffix, true
}

// Owns reports whether a device named thing may publish to, or subscribe
// with, topic (a topic name or a filter): only under ggfleet/things/{thing}/,
// with the thing segment spelled out (no wildcard standing for it).
func Owns(thing, topic string) bool {
	if thing == "" || strings.ContainsAny(thing, "+#/") {
		return false
	}
	rest, found := strings.CutPrefix(topic, Prefix+thing+"/")
	return found && rest != ""
}

// ConnectionMsg is the retained connection state (and the last will).
type ConnectionMsg struct {
	Version   int       `json:"version"`
	State     string    `json:"state"`
	Timestamp time.Time `json:"timestamp"`
}

// NucleusState is the Greengrass nucleus as the agent sees it.
type NucleusState struct {
	State   string `json:"state"`
	Version string `json:"version,omitempty"`
}

// ComponentState is one component on the core.
type ComponentState struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	State   string `json:"state"`
}

// EffectiveDeployment is a deployment the core has applied or is applying.
type EffectiveDeployment struct {
	DeploymentID    string `json:"deploymentId"`
	TemplateName    string `json:"templateName,omitempty"`
	TemplateVersion int    `json:"templateVersion,omitempty"`
	Status          string `json:"status"`
}

// SystemStats are the host's resource figures.
type SystemStats struct {
	CPUPercent    float64 `json:"cpuPercent"`
	MemUsedBytes  uint64  `json:"memUsedBytes"`
	MemTotalBytes uint64  `json:"memTotalBytes"`
	DiskFreeBytes uint64  `json:"diskFreeBytes"`
}

// HealthMsg is the periodic health report.
type HealthMsg struct {
	Version              int                   `json:"version"`
	ThingName            string                `json:"thingName"`
	Timestamp            time.Time             `json:"timestamp"`
	IntervalSeconds      int                   `json:"intervalSeconds"`
	Status               string                `json:"status"`
	Nucleus              NucleusState          `json:"nucleus"`
	Components           []ComponentState      `json:"components"`
	EffectiveDeployments []EffectiveDeployment `json:"effectiveDeployments"`
	Platform             string                `json:"platform"`
	Architecture         string                `json:"architecture"`
	AgentVersion         string                `json:"agentVersion"`
	UptimeSeconds        int64                 `json:"uptimeSeconds"`
	System               SystemStats           `json:"system"`
	CertificateNotAfter  time.Time             `json:"certificateNotAfter"`
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

// ComponentSpec is one component of a desired deployment.
type ComponentSpec struct {
	ComponentVersion    string               `json:"componentVersion"`
	ConfigurationUpdate *ConfigurationUpdate `json:"configurationUpdate,omitempty"`
	RunWith             *RunWith             `json:"runWith,omitempty"`
}

// DeploymentMsg is the desired deployment document, retained per core.
type DeploymentMsg struct {
	Version            int                      `json:"version"`
	DeploymentID       string                   `json:"deploymentId"`
	TaskID             string                   `json:"taskId"`
	TemplateName       string                   `json:"templateName"`
	TemplateVersion    int                      `json:"templateVersion"`
	Components         map[string]ComponentSpec `json:"components"`
	DeploymentPolicies json.RawMessage          `json:"deploymentPolicies,omitempty"`
	CreatedAt          time.Time                `json:"createdAt"`
}

// DeploymentStatusMsg is what the agent reports about a deployment.
type DeploymentStatusMsg struct {
	Version        int       `json:"version"`
	DeploymentID   string    `json:"deploymentId"`
	TaskID         string    `json:"taskId"`
	Status         string    `json:"status"`
	DetailedStatus string    `json:"detailedStatus,omitempty"`
	Stage          string    `json:"stage,omitempty"`
	Reason         string    `json:"reason,omitempty"`
	Timestamp      time.Time `json:"timestamp"`
}

// PatchState is a patch the agent knows about, reported in hello.
type PatchState struct {
	PatchID string `json:"patchId"`
	Attempt int    `json:"attempt"`
	State   string `json:"state"`
}

// HelloMsg is sent by the agent on every connect.
type HelloMsg struct {
	Version      int          `json:"version"`
	AgentVersion string       `json:"agentVersion"`
	Capabilities []string     `json:"capabilities"`
	Patches      []PatchState `json:"patches"`
}

// MaxPayload is the largest message either side accepts.
const MaxPayload = 256 << 10

// Decode parses a message and checks its version and required fields.
// Unknown fields are ignored (newer senders may add them).
func Decode[T ConnectionMsg | HealthMsg | DeploymentMsg | DeploymentStatusMsg | HelloMsg](payload []byte) (T, error) {
	var m T
	if len(payload) > MaxPayload {
		return m, fmt.Errorf("message of %d bytes is over the %d-byte limit", len(payload), MaxPayload)
	}
	if err := json.Unmarshal(payload, &m); err != nil {
		return m, fmt.Errorf("decode %T: %w", m, err)
	}
	if err := validate(any(&m)); err != nil {
		return m, fmt.Errorf("invalid %T: %w", m, err)
	}
	return m, nil
}

func validate(m any) error {
	var errs []error
	check := func(ok bool, msg string) {
		if !ok {
			errs = append(errs, errors.New(msg))
		}
	}
	switch v := m.(type) {
	case *ConnectionMsg:
		check(v.Version >= 1, "version must be 1 or more")
		check(v.State == Online || v.State == Offline, "state must be ONLINE or OFFLINE")
	case *HealthMsg:
		check(v.Version >= 1, "version must be 1 or more")
		check(v.Status == Healthy || v.Status == Unhealthy, "status must be HEALTHY or UNHEALTHY")
		check(v.IntervalSeconds >= 0 && v.IntervalSeconds <= 86400, "intervalSeconds must be from 0 to 86400")
		check(len(v.Components) <= 1000, "at most 1000 components")
	case *DeploymentMsg:
		check(v.Version >= 1, "version must be 1 or more")
		check(v.DeploymentID != "", "deploymentId is required")
		check(v.TemplateName != "", "templateName is required")
	case *DeploymentStatusMsg:
		check(v.Version >= 1, "version must be 1 or more")
		check(v.DeploymentID != "", "deploymentId is required")
		check(v.Status == StatusInProgress || v.Status == StatusSucceeded || v.Status == StatusFailed,
			"status must be IN_PROGRESS, SUCCEEDED or FAILED")
	case *HelloMsg:
		check(v.Version >= 1, "version must be 1 or more")
	}
	return errors.Join(errs...)
}
