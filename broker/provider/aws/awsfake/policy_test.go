package awsfake

import (
	"os"
	"path/filepath"
	"testing"
)

// readPolicy reads a policy document from testdata.
func readPolicy(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAllowed(t *testing.T) {
	agent := readPolicy(t, "agent-policy.json")
	broker := readPolicy(t, "broker-policy.json")
	deny := readPolicy(t, "deny-logs.json")
	core1 := PolicyVars{CommonName: "core-1", ClientID: "core-1-ggagent"}
	brokerVars := PolicyVars{CommonName: "ggfleet.broker", ClientID: "ggfleet-broker-r1"}
	tests := []struct {
		name     string
		docs     []string
		action   string
		resource string
		vars     PolicyVars
		want     bool
	}{
		{"agent connects with its own client id", []string{agent}, ActionConnect, arn("client/core-1-ggagent"), core1, true},
		{"agent with the nucleus's client id", []string{agent}, ActionConnect, arn("client/core-1"), core1, false},
		{"agent with another thing's client id", []string{agent}, ActionConnect, arn("client/core-2-ggagent"), core1, false},
		{"agent publishes on its own topic", []string{agent}, ActionPublish, arn("topic/ggfleet/things/core-1/health"), core1, true},
		{"agent publishes on another thing's topic", []string{agent}, ActionPublish, arn("topic/ggfleet/things/core-2/health"), core1, false},
		{"agent publishes on a longer thing name", []string{agent}, ActionPublish, arn("topic/ggfleet/things/core-10/health"), core1, false},
		{"agent subscribes to its own filter", []string{agent}, ActionSubscribe, arn("topicfilter/ggfleet/things/core-1/patches/+/start"), core1, true},
		{"agent subscribes to every thing", []string{agent}, ActionSubscribe, arn("topicfilter/ggfleet/things/+/health"), core1, false},
		{"agent receives its own", []string{agent}, ActionReceive, arn("topic/ggfleet/things/core-1/deployments"), core1, true},
		{"agent receives another's", []string{agent}, ActionReceive, arn("topic/ggfleet/things/core-2/deployments"), core1, false},
		{"no common name: variable unresolved", []string{agent}, ActionConnect, arn("client/-ggagent"), PolicyVars{ClientID: "-ggagent"}, false},
		{"no policy attached", nil, ActionConnect, arn("client/core-1-ggagent"), core1, false},
		{"publish action does not grant subscribe", []string{agent}, ActionSubscribe, arn("topic/ggfleet/things/core-1/health"), core1, false},
		{"broker connects as a replica", []string{broker}, ActionConnect, arn("client/ggfleet-broker-r1"), brokerVars, true},
		{"broker with an agent's client id", []string{broker}, ActionConnect, arn("client/core-1-ggagent"), brokerVars, false},
		{"broker shared subscription", []string{broker}, ActionSubscribe, arn("topicfilter/$share/ggfleet/ggfleet/things/+/health"), brokerVars, true},
		{"broker plain subscription to ggfleet", []string{broker}, ActionSubscribe, arn("topicfilter/ggfleet/things/+/health"), brokerVars, true},
		{"broker subscription outside ggfleet", []string{broker}, ActionSubscribe, arn("topicfilter/$aws/things/+/shadow/#"), brokerVars, false},
		{"broker publishes to a thing", []string{broker}, ActionPublish, arn("topic/ggfleet/things/core-1/patches/p1/start"), brokerVars, true},
		{"broker publishes outside ggfleet", []string{broker}, ActionPublish, arn("topic/$aws/things/core-1/jobs/notify"), brokerVars, false},
		{"explicit deny wins", []string{agent, deny}, ActionPublish, arn("topic/ggfleet/things/core-1/logs"), core1, false},
		{"deny does not touch other topics", []string{agent, deny}, ActionPublish, arn("topic/ggfleet/things/core-1/health"), core1, true},
		{"malformed document allows nothing", []string{`{"Statement": 5}`}, ActionConnect, arn("client/x"), core1, false},
		{"thing name variable", []string{`{"Statement":{"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"}}`},
			ActionConnect, arn("client/core-1"), PolicyVars{CommonName: "core-1", ThingName: "core-1", ClientID: "core-1"}, true},
		{"thing name variable without an attached thing", []string{`{"Statement":{"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"}}`},
			ActionConnect, arn("client/core-1"), PolicyVars{CommonName: "core-1", ClientID: "core-1"}, false},
		{"action wildcard and ? wildcard", []string{`{"Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"arn:aws:iot:*:*:topic/a/?"}]}`},
			ActionPublish, arn("topic/a/b"), core1, true},
		{"? matches exactly one character", []string{`{"Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"arn:aws:iot:*:*:topic/a/?"}]}`},
			ActionPublish, arn("topic/a/bc"), core1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Allowed(tt.docs, tt.action, tt.resource, tt.vars); got != tt.want {
				t.Fatalf("Allowed(%s %s) = %v, want %v", tt.action, tt.resource, got, tt.want)
			}
		})
	}
}

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"", "", true},
		{"*", "", true},
		{"*", "a/b/c", true},
		{"a*c", "abbbc", true},
		{"a*c", "abbb", false},
		{"a*b*c", "a-b-x-c", true},
		{"a+b", "a+b", true},
		{"a+b", "axb", false},
		{"a#", "a/b", false},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
	}
	for _, tt := range tests {
		if got := globMatch(tt.pattern, tt.s); got != tt.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}
