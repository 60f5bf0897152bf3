package daemon

import (
	"strings"
	"testing"
	"time"
)

func TestSimOptionsFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		want    time.Duration
		wantErr string
	}{
		{"unset", "", 0, ""},
		{"duration", "1.5s", 1500 * time.Millisecond, ""},
		{"zero", "0s", 0, ""},
		{"not a duration", "5", 0, EnvSimulatedStepDelay + `="5": use a non-negative duration`},
		{"negative", "-1s", 0, "non-negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := simOptionsFromEnv(func(k string) string {
				if k == EnvSimulatedStepDelay {
					return tt.value
				}
				return ""
			})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || opts.StepDelay != tt.want {
				t.Fatalf("StepDelay = %v, %v; want %v", opts.StepDelay, err, tt.want)
			}
		})
	}
}
