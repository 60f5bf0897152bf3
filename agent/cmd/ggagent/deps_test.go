package main

import (
	"testing"

	"github.com/ggfleet/ggfleet/internal/deptest"
)

// TestDeps proves ggagent links none of the broker's heavy or server-only
// dependencies on the ARM targets it ships for.
func TestDeps(t *testing.T) {
	bad := []string{
		"github.com/ggfleet/ggfleet/broker",
		"github.com/aws/aws-sdk-go-v2",
		"modernc.org/sqlite",
		"github.com/jackc/pgx",
		"github.com/riverqueue",
		"github.com/mochi-mqtt",
		"database/sql",
	}
	targets := []struct{ goarch, goarm string }{
		{"arm64", ""},
		{"arm", "7"},
	}
	for _, tc := range targets {
		t.Run(tc.goarch+tc.goarm, func(t *testing.T) {
			deptest.Check(t, "github.com/ggfleet/ggfleet/agent/cmd/ggagent", "linux", tc.goarch, tc.goarm, bad)
		})
	}
}
