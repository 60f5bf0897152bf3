package cdf

import (
	"encoding/json"
	"testing"
	"time"
)

func TestTimeJSON(t *testing.T) {
	tests := []struct {
		name string
		in   Time
		want string
	}{
		{"milliseconds in UTC", At(time.Date(2022, 1, 14, 6, 58, 11, 157_900_000, time.FixedZone("x", 3600))), `"2022-01-14T05:58:11.157Z"`},
		{"whole second keeps .000", At(time.Date(2022, 1, 14, 6, 58, 11, 0, time.UTC)), `"2022-01-14T06:58:11.000Z"`},
		{"unset is null", Time{}, `null`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Fatalf("Marshal = %s, want %s", b, tt.want)
			}
			var back Time
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if !back.Equal(tt.in.Time) {
				t.Fatalf("round trip = %v, want %v", back, tt.in)
			}
		})
	}
	var bad Time
	if err := json.Unmarshal([]byte(`12`), &bad); err == nil {
		t.Fatal("a number was accepted as a timestamp")
	}
}

func TestDeploymentFailed(t *testing.T) {
	for status, want := range map[string]bool{"": false, "None": false, "IN_PROGRESS": false, "SUCCESSFUL": false,
		"Failure": true, "FAILED_ROLLBACK_COMPLETE": true, "REJECTED": true} {
		if got := DeploymentFailed(status); got != want {
			t.Errorf("DeploymentFailed(%q) = %v", status, got)
		}
	}
}
