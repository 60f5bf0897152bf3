package templates_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/templates"
)

func TestParseDeploymentPolicies(t *testing.T) {
	for _, raw := range []string{``, `null`, `{}`, `{"failureHandlingPolicy":"DO_NOTHING"}`,
		`{"failureHandlingPolicy":"ROLLBACK","componentUpdatePolicy":{"timeoutInSeconds":60,"action":"NOTIFY_COMPONENTS"},"configurationValidationPolicy":{"timeoutInSeconds":30}}`,
	} {
		if _, err := templates.ParseDeploymentPolicies(json.RawMessage(raw)); err != nil {
			t.Errorf("%s: %v", raw, err)
		}
	}
	for _, tc := range []struct{ raw, want string }{
		{`[1]`, "deploymentPolicies is not valid: it must be a JSON object"},
		{`{"failureHandlingPolicy":"SOMETIMES"}`, "deploymentPolicies.failureHandlingPolicy must be one of ROLLBACK, DO_NOTHING"},
		{`{"componentUpdatePolicy":{"action":"WAIT"}}`, "deploymentPolicies.componentUpdatePolicy.action must be one of NOTIFY_COMPONENTS, SKIP_NOTIFY_COMPONENTS"},
		{`{"componentUpdatePolicy":{"timeoutInSeconds":0}}`, "componentUpdatePolicy.timeoutInSeconds must be at least 1"},
		{`{"configurationValidationPolicy":{"timeoutInSeconds":-5}}`, "configurationValidationPolicy.timeoutInSeconds must be at least 1"},
		{`{"configurationValidationPolicy":{"timeoutInSeconds":"30"}}`, "timeoutInSeconds must be a whole number"},
		{`{"failurePolicy":"ROLLBACK"}`, `unknown field "failurePolicy" is not a member`},
	} {
		_, err := templates.ParseDeploymentPolicies(json.RawMessage(tc.raw))
		if !errkind.Is(err, errkind.Invalid) || !strings.Contains(errkind.Message(err), tc.want) {
			t.Errorf("%s: got %v, want Invalid containing %q", tc.raw, err, tc.want)
		}
	}
}
