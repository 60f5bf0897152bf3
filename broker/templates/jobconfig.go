package templates

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// JobConfig is a template's jobConfig or a deployment task's iotJobConfig:
// the IoT job settings of a Greengrass deployment, in the shape of
// Greengrass V2's DeploymentIoTJobConfiguration (spec §2.1). It is
// validated here, at the API, so a bad one is a 400 and not a failed
// deployment later.
type JobConfig struct {
	JobExecutionsRolloutConfig *RolloutConfig `json:"jobExecutionsRolloutConfig,omitempty"`
	AbortConfig                *AbortConfig   `json:"abortConfig,omitempty"`
	TimeoutConfig              *TimeoutConfig `json:"timeoutConfig,omitempty"`
}

// RolloutConfig is how fast the IoT job reaches the cores.
type RolloutConfig struct {
	ExponentialRate  *ExponentialRate `json:"exponentialRate,omitempty"`
	MaximumPerMinute *int32           `json:"maximumPerMinute,omitempty"`
}

// ExponentialRate raises the rollout rate by IncrementFactor each time the
// criteria are met.
type ExponentialRate struct {
	BaseRatePerMinute    *int32                `json:"baseRatePerMinute"`
	IncrementFactor      *float64              `json:"incrementFactor"`
	RateIncreaseCriteria *RateIncreaseCriteria `json:"rateIncreaseCriteria"`
}

// RateIncreaseCriteria says when the rollout rate goes up: after this many
// cores were notified, or succeeded.
type RateIncreaseCriteria struct {
	NumberOfNotifiedThings  *int32 `json:"numberOfNotifiedThings,omitempty"`
	NumberOfSucceededThings *int32 `json:"numberOfSucceededThings,omitempty"`
}

// AbortConfig stops the rollout when too many cores fail.
type AbortConfig struct {
	CriteriaList []AbortCriteria `json:"criteriaList"`
}

// AbortCriteria is one condition that cancels the job.
type AbortCriteria struct {
	FailureType               string   `json:"failureType"`
	Action                    string   `json:"action"`
	ThresholdPercentage       *float64 `json:"thresholdPercentage"`
	MinNumberOfExecutedThings *int32   `json:"minNumberOfExecutedThings"`
}

// TimeoutConfig bounds how long a core may stay IN_PROGRESS.
type TimeoutConfig struct {
	InProgressTimeoutInMinutes *int64 `json:"inProgressTimeoutInMinutes,omitempty"`
}

// Limits of DeploymentIoTJobConfiguration (Greengrass V2 API reference).
const (
	maxRatePerMinute  = 1000
	minIncrement      = 1.1
	maxIncrement      = 5.0
	maxTimeoutMinutes = 10080 // 7 days
)

// failureTypes are the IoTJobExecutionFailureType values.
var failureTypes = []string{"FAILED", "REJECTED", "TIMED_OUT", "ALL"}

// ParseJobConfig decodes and validates a job configuration; field names it
// in messages ("jobConfig" or "iotJobConfig"). Absent (empty or null) is
// nil, no error. Unknown members are refused so a typo is not silently
// dropped.
func ParseJobConfig(field string, raw json.RawMessage) (*JobConfig, error) {
	if isAbsent(raw) {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var jc JobConfig
	if err := dec.Decode(&jc); err != nil {
		return nil, errkind.New(errkind.Invalid, "%s is not a valid job configuration: %s (it has jobExecutionsRolloutConfig, abortConfig and timeoutConfig, as Greengrass's DeploymentIoTJobConfiguration)", field, decodeProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errkind.New(errkind.Invalid, "%s must be a single JSON object", field)
	}
	if err := jc.validate(field); err != nil {
		return nil, err
	}
	return &jc, nil
}

func isAbsent(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}

// decodeProblem turns a JSON decoding error into words about the input.
func decodeProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return "it must be a JSON object"
		}
		return fmt.Sprintf("%s must be %s, not %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
	}
	if strings.HasPrefix(err.Error(), "json: unknown field ") {
		return strings.TrimPrefix(err.Error(), "json: ") + " is not a member"
	}
	return err.Error()
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int32", "int64":
		return "a whole number"
	case "float64":
		return "a number"
	case "string":
		return "a string"
	case "slice":
		return "a list"
	}
	return "an object"
}

func (jc *JobConfig) validate(field string) error {
	if r := jc.JobExecutionsRolloutConfig; r != nil {
		f := field + ".jobExecutionsRolloutConfig"
		if r.MaximumPerMinute != nil && (*r.MaximumPerMinute < 1 || *r.MaximumPerMinute > maxRatePerMinute) {
			return errkind.New(errkind.Invalid, "%s.maximumPerMinute must be from 1 to %d, got %d", f, maxRatePerMinute, *r.MaximumPerMinute)
		}
		if e := r.ExponentialRate; e != nil {
			f += ".exponentialRate"
			switch {
			case e.BaseRatePerMinute == nil:
				return errkind.New(errkind.Invalid, "%s.baseRatePerMinute is required", f)
			case *e.BaseRatePerMinute < 1 || *e.BaseRatePerMinute > maxRatePerMinute:
				return errkind.New(errkind.Invalid, "%s.baseRatePerMinute must be from 1 to %d, got %d", f, maxRatePerMinute, *e.BaseRatePerMinute)
			case e.IncrementFactor == nil:
				return errkind.New(errkind.Invalid, "%s.incrementFactor is required", f)
			case *e.IncrementFactor < minIncrement || *e.IncrementFactor > maxIncrement || !oneDecimal(*e.IncrementFactor):
				return errkind.New(errkind.Invalid, "%s.incrementFactor must be from %.1f to %.1f with at most one decimal, got %v", f, minIncrement, maxIncrement, *e.IncrementFactor)
			case e.RateIncreaseCriteria == nil:
				return errkind.New(errkind.Invalid, "%s.rateIncreaseCriteria is required: give numberOfNotifiedThings or numberOfSucceededThings", f)
			}
			c := e.RateIncreaseCriteria
			switch {
			case (c.NumberOfNotifiedThings == nil) == (c.NumberOfSucceededThings == nil):
				return errkind.New(errkind.Invalid, "%s.rateIncreaseCriteria must give exactly one of numberOfNotifiedThings and numberOfSucceededThings", f)
			case c.NumberOfNotifiedThings != nil && *c.NumberOfNotifiedThings < 1:
				return errkind.New(errkind.Invalid, "%s.rateIncreaseCriteria.numberOfNotifiedThings must be at least 1", f)
			case c.NumberOfSucceededThings != nil && *c.NumberOfSucceededThings < 1:
				return errkind.New(errkind.Invalid, "%s.rateIncreaseCriteria.numberOfSucceededThings must be at least 1", f)
			}
		}
	}
	if a := jc.AbortConfig; a != nil {
		f := field + ".abortConfig.criteriaList"
		if len(a.CriteriaList) == 0 {
			return errkind.New(errkind.Invalid, "%s is required: list at least one {failureType, action, thresholdPercentage, minNumberOfExecutedThings}", f)
		}
		for i, c := range a.CriteriaList {
			switch {
			case !slices.Contains(failureTypes, c.FailureType):
				return errkind.New(errkind.Invalid, "%s[%d].failureType must be one of %s, got %q", f, i, strings.Join(failureTypes, ", "), c.FailureType)
			case c.Action != "CANCEL":
				return errkind.New(errkind.Invalid, "%s[%d].action must be CANCEL, got %q", f, i, c.Action)
			case c.ThresholdPercentage == nil:
				return errkind.New(errkind.Invalid, "%s[%d].thresholdPercentage is required", f, i)
			case *c.ThresholdPercentage <= 0 || *c.ThresholdPercentage > 100 || !twoDecimals(*c.ThresholdPercentage):
				return errkind.New(errkind.Invalid, "%s[%d].thresholdPercentage must be above 0 and at most 100, with at most two decimals, got %v", f, i, *c.ThresholdPercentage)
			case c.MinNumberOfExecutedThings == nil:
				return errkind.New(errkind.Invalid, "%s[%d].minNumberOfExecutedThings is required", f, i)
			case *c.MinNumberOfExecutedThings < 1:
				return errkind.New(errkind.Invalid, "%s[%d].minNumberOfExecutedThings must be at least 1, got %d", f, i, *c.MinNumberOfExecutedThings)
			}
		}
	}
	if t := jc.TimeoutConfig; t != nil && t.InProgressTimeoutInMinutes != nil {
		if m := *t.InProgressTimeoutInMinutes; m < 1 || m > maxTimeoutMinutes {
			return errkind.New(errkind.Invalid, "%s.timeoutConfig.inProgressTimeoutInMinutes must be from 1 to %d (7 days), got %d", field, maxTimeoutMinutes, m)
		}
	}
	return nil
}

func oneDecimal(v float64) bool  { return math.Abs(v*10-math.Round(v*10)) < 1e-9 }
func twoDecimals(v float64) bool { return math.Abs(v*100-math.Round(v*100)) < 1e-7 }

// MergeJobConfig is the job configuration of a deployment: each of the
// three settings comes from the task's iotJobConfig when it gives it, else
// from the template's jobConfig. Either may be nil; the result is nil when
// both are.
func MergeJobConfig(template, task *JobConfig) *JobConfig {
	if template == nil && task == nil {
		return nil
	}
	var out JobConfig
	if template != nil {
		out = *template
	}
	if task != nil {
		if task.JobExecutionsRolloutConfig != nil {
			out.JobExecutionsRolloutConfig = task.JobExecutionsRolloutConfig
		}
		if task.AbortConfig != nil {
			out.AbortConfig = task.AbortConfig
		}
		if task.TimeoutConfig != nil {
			out.TimeoutConfig = task.TimeoutConfig
		}
	}
	return &out
}
