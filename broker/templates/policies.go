package templates

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// DeploymentPolicies is a template's deploymentPolicies, in the shape of
// Greengrass V2's DeploymentPolicies (spec §2.1). It is checked at save so
// a value Greengrass would refuse is a 400 then, not a failed deployment.
type DeploymentPolicies struct {
	FailureHandlingPolicy string `json:"failureHandlingPolicy,omitempty"`
	ComponentUpdatePolicy *struct {
		TimeoutInSeconds *int32 `json:"timeoutInSeconds,omitempty"`
		Action           string `json:"action,omitempty"`
	} `json:"componentUpdatePolicy,omitempty"`
	ConfigurationValidationPolicy *struct {
		TimeoutInSeconds *int32 `json:"timeoutInSeconds,omitempty"`
	} `json:"configurationValidationPolicy,omitempty"`
}

// Enum values of DeploymentPolicies.
var (
	failureHandlingPolicies = []string{"ROLLBACK", "DO_NOTHING"}
	componentUpdateActions  = []string{"NOTIFY_COMPONENTS", "SKIP_NOTIFY_COMPONENTS"}
)

// ParseDeploymentPolicies decodes and validates deploymentPolicies; absent
// (empty or null) is nil, no error.
func ParseDeploymentPolicies(raw json.RawMessage) (*DeploymentPolicies, error) {
	if isAbsent(raw) {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var p DeploymentPolicies
	if err := dec.Decode(&p); err != nil {
		return nil, errkind.New(errkind.Invalid, "deploymentPolicies is not valid: %s (it has failureHandlingPolicy, componentUpdatePolicy and configurationValidationPolicy)", decodeProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errkind.New(errkind.Invalid, "deploymentPolicies must be a single JSON object")
	}
	if v := p.FailureHandlingPolicy; v != "" && !slices.Contains(failureHandlingPolicies, v) {
		return nil, errkind.New(errkind.Invalid, "deploymentPolicies.failureHandlingPolicy must be one of %s, got %q", strings.Join(failureHandlingPolicies, ", "), v)
	}
	if c := p.ComponentUpdatePolicy; c != nil {
		if c.Action != "" && !slices.Contains(componentUpdateActions, c.Action) {
			return nil, errkind.New(errkind.Invalid, "deploymentPolicies.componentUpdatePolicy.action must be one of %s, got %q", strings.Join(componentUpdateActions, ", "), c.Action)
		}
		if c.TimeoutInSeconds != nil && *c.TimeoutInSeconds < 1 {
			return nil, errkind.New(errkind.Invalid, "deploymentPolicies.componentUpdatePolicy.timeoutInSeconds must be at least 1, got %d", *c.TimeoutInSeconds)
		}
	}
	if c := p.ConfigurationValidationPolicy; c != nil && c.TimeoutInSeconds != nil && *c.TimeoutInSeconds < 1 {
		return nil, errkind.New(errkind.Invalid, "deploymentPolicies.configurationValidationPolicy.timeoutInSeconds must be at least 1, got %d", *c.TimeoutInSeconds)
	}
	return &p, nil
}
