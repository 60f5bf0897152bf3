package templates_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/templates"
)

func TestParseJobConfig(t *testing.T) {
	valid := []string{
		``, `null`, `{}`,
		`{"timeoutConfig":{"inProgressTimeoutInMinutes":10080}}`,
		`{"jobExecutionsRolloutConfig":{"maximumPerMinute":1000,"exponentialRate":{"baseRatePerMinute":5,"incrementFactor":1.5,"rateIncreaseCriteria":{"numberOfSucceededThings":10}}}}`,
		`{"abortConfig":{"criteriaList":[{"failureType":"ALL","action":"CANCEL","thresholdPercentage":10.55,"minNumberOfExecutedThings":3}]}}`,
	}
	for _, raw := range valid {
		if _, err := templates.ParseJobConfig("jobConfig", json.RawMessage(raw)); err != nil {
			t.Errorf("%s: %v", raw, err)
		}
	}
	invalid := []struct{ raw, want string }{
		{`[1]`, "jobConfig is not a valid job configuration: it must be a JSON object"},
		{`{"timeoutConfig":{"inProgressTimeoutInMinutes":0}}`, "jobConfig.timeoutConfig.inProgressTimeoutInMinutes must be from 1 to 10080"},
		{`{"timeoutConfig":{"inProgressTimeoutInMinutes":10081}}`, "must be from 1 to 10080"},
		{`{"timeoutConfig":{"inProgressTimeoutInMinutes":"5"}}`, "timeoutConfig.inProgressTimeoutInMinutes must be a whole number, not string"},
		{`{"timeout":{}}`, `unknown field "timeout" is not a member`},
		{`{"jobExecutionsRolloutConfig":{"maximumPerMinute":1001}}`, "jobExecutionsRolloutConfig.maximumPerMinute must be from 1 to 1000"},
		{`{"jobExecutionsRolloutConfig":{"exponentialRate":{"incrementFactor":2,"rateIncreaseCriteria":{"numberOfNotifiedThings":1}}}}`, "exponentialRate.baseRatePerMinute is required"},
		{`{"jobExecutionsRolloutConfig":{"exponentialRate":{"baseRatePerMinute":5,"incrementFactor":1.55,"rateIncreaseCriteria":{"numberOfNotifiedThings":1}}}}`, "incrementFactor must be from 1.1 to 5.0 with at most one decimal"},
		{`{"jobExecutionsRolloutConfig":{"exponentialRate":{"baseRatePerMinute":5,"incrementFactor":1.0,"rateIncreaseCriteria":{"numberOfNotifiedThings":1}}}}`, "incrementFactor must be from 1.1"},
		{`{"jobExecutionsRolloutConfig":{"exponentialRate":{"baseRatePerMinute":5,"incrementFactor":2}}}`, "rateIncreaseCriteria is required"},
		{`{"jobExecutionsRolloutConfig":{"exponentialRate":{"baseRatePerMinute":5,"incrementFactor":2,"rateIncreaseCriteria":{}}}}`, "exactly one of numberOfNotifiedThings and numberOfSucceededThings"},
		{`{"abortConfig":{}}`, "jobConfig.abortConfig.criteriaList is required"},
		{`{"abortConfig":{"criteriaList":[{"failureType":"BROKEN","action":"CANCEL","thresholdPercentage":10,"minNumberOfExecutedThings":1}]}}`, "criteriaList[0].failureType must be one of FAILED, REJECTED, TIMED_OUT, ALL"},
		{`{"abortConfig":{"criteriaList":[{"failureType":"FAILED","action":"STOP","thresholdPercentage":10,"minNumberOfExecutedThings":1}]}}`, "criteriaList[0].action must be CANCEL"},
		{`{"abortConfig":{"criteriaList":[{"failureType":"FAILED","action":"CANCEL","thresholdPercentage":100.5,"minNumberOfExecutedThings":1}]}}`, "thresholdPercentage must be above 0 and at most 100"},
		{`{"abortConfig":{"criteriaList":[{"failureType":"FAILED","action":"CANCEL","thresholdPercentage":10}]}}`, "minNumberOfExecutedThings is required"},
		{`{} {}`, "jobConfig must be a single JSON object"},
	}
	for _, tc := range invalid {
		_, err := templates.ParseJobConfig("jobConfig", json.RawMessage(tc.raw))
		if !errkind.Is(err, errkind.Invalid) || !strings.Contains(errkind.Message(err), tc.want) {
			t.Errorf("%s: got %v, want Invalid containing %q", tc.raw, err, tc.want)
		}
	}
}

func TestMergeJobConfig(t *testing.T) {
	parse := func(raw string) *templates.JobConfig {
		t.Helper()
		jc, err := templates.ParseJobConfig("x", json.RawMessage(raw))
		if err != nil {
			t.Fatal(err)
		}
		return jc
	}
	tpl := `{"timeoutConfig":{"inProgressTimeoutInMinutes":30},"jobExecutionsRolloutConfig":{"maximumPerMinute":50}}`
	task := `{"jobExecutionsRolloutConfig":{"maximumPerMinute":5},"abortConfig":{"criteriaList":[{"failureType":"FAILED","action":"CANCEL","thresholdPercentage":20,"minNumberOfExecutedThings":2}]}}`
	for _, tc := range []struct {
		name, template, task, want string
	}{
		{"neither", ``, ``, `null`},
		{"template only", tpl, ``, tpl},
		{"task only", ``, `{"timeoutConfig":{"inProgressTimeoutInMinutes":9}}`, `{"timeoutConfig":{"inProgressTimeoutInMinutes":9}}`},
		{"task over template, field by field", tpl, task,
			`{"jobExecutionsRolloutConfig":{"maximumPerMinute":5},"abortConfig":{"criteriaList":[{"failureType":"FAILED","action":"CANCEL","thresholdPercentage":20,"minNumberOfExecutedThings":2}]},"timeoutConfig":{"inProgressTimeoutInMinutes":30}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := json.Marshal(templates.MergeJobConfig(parse(tc.template), parse(tc.task)))
			if err != nil {
				t.Fatal(err)
			}
			var g, w any
			_ = json.Unmarshal(got, &g)
			_ = json.Unmarshal([]byte(tc.want), &w)
			gs, _ := json.Marshal(g)
			ws, _ := json.Marshal(w)
			if string(gs) != string(ws) {
				t.Fatalf("merged = %s\nwant     %s", gs, ws)
			}
		})
	}
}
