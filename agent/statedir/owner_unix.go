//go:build unix

package statedir

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// checkOwner refuses a directory owned by another user than the one
// running the agent.
func checkOwner(path string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if uid := os.Geteuid(); int(st.Uid) != uid {
		return fmt.Errorf("state directory %s belongs to user id %d, not to the user running ggagent (%d): run ggagent as that user, chown the directory, or choose another --state-dir", path, st.Uid, uid)
	}
	return nil
}
