package serialtransport

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/internal/testservers"
	"github.com/ggfleet/ggfleet/patcher"
)

// TestOpenAfterAbandonedSession: a transport that never closed (its agent
// was SIGKILLed mid-step) leaves the console logged in, at its own prompt,
// with the step's command still in the foreground. The next Open must ^C
// the command, recognise the shell and work.
func TestOpenAfterAbandonedSession(t *testing.T) {
	for _, shell := range []string{"dash", "bash"} {
		t.Run(shell, func(t *testing.T) {
			con := testservers.StartPtyShell(t, shell, true)
			dead := mustOpen(t, con.Path)
			ran := make(chan error, 1)
			go func() {
				_, err := dead.Run(context.Background(), patcher.Command{Script: "sleep 4713", Timeout: time.Hour})
				ran <- err
			}()
			deadline := time.Now().Add(30 * time.Second)
			for len(testservers.ProcessesRunning("sleep", "4713")) == 0 {
				if time.Now().After(deadline) {
					t.Fatal("the abandoned command did not start")
				}
				time.Sleep(50 * time.Millisecond)
			}
			dead.port.Close() // the process died: no logout, no ^C
			<-ran

			tr := mustOpen(t, con.Path)
			defer tr.Close()
			var out bytes.Buffer
			if _, err := tr.Run(context.Background(), patcher.Command{Script: "echo ok", Stdout: &out, Timeout: 10 * time.Second}); err != nil || out.String() != "ok\n" {
				t.Fatalf("run after the abandoned session: %v %q", err, out.String())
			}
			if pids := testservers.ProcessesRunning("sleep", "4713"); len(pids) > 0 {
				t.Errorf("the abandoned command still runs: %v", pids)
			}
		})
	}
}
