package server

import (
	"strings"
	"testing"
)

// --pprof-listen serves without a token: only loopback addresses pass.
func TestPprofListenLoopbackOnly(t *testing.T) {
	for _, tc := range []struct {
		addr, wantErr string
	}{
		{"127.0.0.1:6060", ""},
		{"localhost:6060", ""},
		{"[::1]:6060", ""},
		{"127.0.0.2:0", ""},
		{"0.0.0.0:6060", "loopback"},
		{":6060", "loopback"},
		{"10.0.0.5:6060", "loopback"},
		{"example.com:6060", "loopback"},
		{"127.0.0.1", "want host:port"},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			c := validConfig()
			c.PprofListen = tc.addr
			err := c.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "--pprof-listen")):
				t.Fatalf("Validate() = %v, want an error naming --pprof-listen and containing %q", err, tc.wantErr)
			}
		})
	}
}

// --workers 0 is an API-only replica: only where other replicas can work
// the batches (PostgreSQL).
func TestWorkersZeroNeedsPostgres(t *testing.T) {
	for _, tc := range []struct {
		name     string
		workers  int
		database string
		wantErr  string
	}{
		{"default", 4, "", ""},
		{"API-only on PostgreSQL", 0, "postgres://db.example/ggfleet", ""},
		{"API-only on SQLite", 0, "", "needs --database postgres://"},
		{"API-only on an SQLite file", 0, "sqlite:/var/lib/ggfleet/db", "needs --database postgres://"},
		{"negative", -1, "postgres://db.example/ggfleet", "from 0"},
		{"too many", 65, "", "to 64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			c.Workers, c.DatabaseURL = tc.workers, tc.database
			if tc.database != "" && tc.database[0] == 'p' {
				c.SecretsKeyFile = "key" // PostgreSQL needs the shared secrets key
			}
			err := c.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "--workers")):
				t.Fatalf("Validate() = %v, want an error naming --workers and containing %q", err, tc.wantErr)
			}
		})
	}
}
