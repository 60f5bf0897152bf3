package awsfake

import (
	"encoding/json"
	"math"
	"slices"
)

// checkJobConfiguration checks a CreateDeployment iotJobConfiguration the
// way Greengrass does (DeploymentIoTJobConfiguration in the Greengrass V2
// API reference): required members, ranges and enums.
func checkJobConfiguration(raw json.RawMessage) *apiError {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var jc struct {
		JobExecutionsRolloutConfig *struct {
			ExponentialRate *struct {
				BaseRatePerMinute    *int     `json:"baseRatePerMinute"`
				IncrementFactor      *float64 `json:"incrementFactor"`
				RateIncreaseCriteria *struct {
					NumberOfNotifiedThings  *int `json:"numberOfNotifiedThings"`
					NumberOfSucceededThings *int `json:"numberOfSucceededThings"`
				} `json:"rateIncreaseCriteria"`
			} `json:"exponentialRate"`
			MaximumPerMinute *int `json:"maximumPerMinute"`
		} `json:"jobExecutionsRolloutConfig"`
		AbortConfig *struct {
			CriteriaList []struct {
				FailureType               string   `json:"failureType"`
				Action                    string   `json:"action"`
				ThresholdPercentage       *float64 `json:"thresholdPercentage"`
				MinNumberOfExecutedThings *int     `json:"minNumberOfExecutedThings"`
			} `json:"criteriaList"`
		} `json:"abortConfig"`
		TimeoutConfig *struct {
			InProgressTimeoutInMinutes *int64 `json:"inProgressTimeoutInMinutes"`
		} `json:"timeoutConfig"`
	}
	if err := json.Unmarshal(raw, &jc); err != nil {
		return validation("iotJobConfiguration is not valid: %v", err)
	}
	if r := jc.JobExecutionsRolloutConfig; r != nil {
		if m := r.MaximumPerMinute; m != nil && (*m < 1 || *m > 1000) {
			return validation("iotJobConfiguration.jobExecutionsRolloutConfig.maximumPerMinute must have value between 1 and 1000")
		}
		if e := r.ExponentialRate; e != nil {
			if e.BaseRatePerMinute == nil || e.IncrementFactor == nil || e.RateIncreaseCriteria == nil {
				return validation("iotJobConfiguration.jobExecutionsRolloutConfig.exponentialRate: baseRatePerMinute, incrementFactor and rateIncreaseCriteria are required")
			}
			if *e.BaseRatePerMinute < 1 || *e.BaseRatePerMinute > 1000 {
				return validation("exponentialRate.baseRatePerMinute must have value between 1 and 1000")
			}
			if f := *e.IncrementFactor; f < 1.1 || f > 5 || math.Abs(f*10-math.Round(f*10)) > 1e-9 {
				return validation("exponentialRate.incrementFactor must be between 1.1 and 5 with one digit after the decimal")
			}
			c := e.RateIncreaseCriteria
			if (c.NumberOfNotifiedThings == nil) == (c.NumberOfSucceededThings == nil) {
				return validation("exponentialRate.rateIncreaseCriteria must specify either numberOfNotifiedThings or numberOfSucceededThings")
			}
			if (c.NumberOfNotifiedThings != nil && *c.NumberOfNotifiedThings < 1) || (c.NumberOfSucceededThings != nil && *c.NumberOfSucceededThings < 1) {
				return validation("exponentialRate.rateIncreaseCriteria values must be at least 1")
			}
		}
	}
	if a := jc.AbortConfig; a != nil {
		if len(a.CriteriaList) == 0 {
			return validation("iotJobConfiguration.abortConfig.criteriaList is required and must have at least 1 item")
		}
		for _, c := range a.CriteriaList {
			if !slices.Contains([]string{"FAILED", "REJECTED", "TIMED_OUT", "ALL"}, c.FailureType) {
				return validation("abortConfig.criteriaList.failureType '%s' must satisfy enum value set: [FAILED, REJECTED, TIMED_OUT, ALL]", c.FailureType)
			}
			if c.Action != "CANCEL" {
				return validation("abortConfig.criteriaList.action '%s' must satisfy enum value set: [CANCEL]", c.Action)
			}
			if c.ThresholdPercentage == nil || *c.ThresholdPercentage < 0 || *c.ThresholdPercentage > 100 {
				return validation("abortConfig.criteriaList.thresholdPercentage is required and must be between 0 and 100")
			}
			if c.MinNumberOfExecutedThings == nil || *c.MinNumberOfExecutedThings < 1 {
				return validation("abortConfig.criteriaList.minNumberOfExecutedThings is required and must be at least 1")
			}
		}
	}
	if t := jc.TimeoutConfig; t != nil && t.InProgressTimeoutInMinutes != nil {
		if m := *t.InProgressTimeoutInMinutes; m < 1 || m > 10080 {
			return validation("iotJobConfiguration.timeoutConfig.inProgressTimeoutInMinutes must be between 1 and 10080")
		}
	}
	return nil
}
