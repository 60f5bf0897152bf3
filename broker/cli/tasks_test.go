package cli

import (
	"testing"

	"github.com/ggfleet/ggfleet/shared/cdf"
)

func TestTaskViewDone(t *testing.T) {
	item := func(status string) taskItem { return taskItem{Name: "x", Status: status} }
	tests := []struct {
		name string
		view taskView
		want bool
	}{
		{"in progress", taskView{Kind: "coreTasks", Status: cdf.StatusInProgress}, false},
		{"success", taskView{Kind: "coreTasks", Status: cdf.StatusSuccess, Items: []taskItem{item(cdf.StatusSuccess)}}, true},
		{"failure, every item final", taskView{Kind: "deploymentTasks", Status: cdf.StatusFailure,
			Items: []taskItem{item(cdf.StatusFailure), item(cdf.StatusSuccess)}}, true},
		// CDF makes a task Failure at its first failed batch; later batches still run.
		{"failure, a batch still running", taskView{Kind: "deploymentTasks", Status: cdf.StatusFailure,
			Items: []taskItem{item(cdf.StatusFailure), item(cdf.StatusInProgress)}}, false},
		{"failure, an item waiting", taskView{Kind: "coreTasks", Status: cdf.StatusFailure,
			Items: []taskItem{item(cdf.StatusWaiting)}}, false},
		{"patch task failed", taskView{Kind: kindPatch, Status: cdf.StatusFailure,
			Items: []taskItem{item(cdf.StatusInProgress)}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.view.done(); got != tt.want {
				t.Errorf("done() = %v, want %v", got, tt.want)
			}
		})
	}
}
