package e2e

import (
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mountTmpfs mounts a tmpfs of size bytes on a fresh directory and unmounts
// it when the test ends (after every cleanup registered later, such as the
// broker's stop). It needs root; outside CI the test is skipped otherwise.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("cannot mount a tmpfs (run as root with CAP_SYS_ADMIN): %v %s", err, out)
		}
		t.Fatalf("mount a tmpfs for the disk-full case: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// startBrokerIn starts ggfleet serve with its data in dataDir.
func startBrokerIn(t *testing.T, dataDir string) *broker {
	t.Helper()
	b := &broker{t: t, dataDir: dataDir, listen: freeAddr(t), mqtt: freeAddr(t), client: &http.Client{Timeout: 30 * time.Second}}
	b.url = "http://" + b.listen
	b.start()
	t.Cleanup(b.stop)
	return b
}

// bigTemplate is a component template whose rows take a few kilobytes, so
// a handful of them must grow the database files.
func bigTemplate(name string) map[string]any {
	comps := make([]map[string]any, 60)
	for i := range comps {
		comps[i] = map[string]any{"key": fmt.Sprintf("com.example.Component%03d.%s", i, strings.Repeat("p", 40)), "version": "1.0.0"}
	}
	return map[string]any{"name": name, "components": comps}
}

// writeUntil503 creates templates until one answers 503; every answer on
// the way is 201 or a 503 with a message. It returns the names created.
func writeUntil503(t *testing.T, b *broker, prefix string) (created []string) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		name := fmt.Sprintf("%s-%03d", prefix, i)
		r := b.do("POST", "/templates", bigTemplate(name))
		switch {
		case r.Status == 201:
			created = append(created, name)
		case r.Status == 503 && r.Message() != "":
			t.Logf("write %d answered 503: %s", i, r.Message())
			return created
		default:
			t.Fatalf("POST /templates %s during the fault: %d %.300s\nlog tail: %s", name, r.Status, r.Body, tail(b.log(), 3000))
		}
	}
	t.Fatalf("no write answered 503 after 1000 templates: the fault was not felt")
	return nil
}

// fillDisk writes a file in dir until the file system is full and returns
// its path.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill the disk: %v", err)
			}
			break
		}
	}
	// Smaller writes take the last partial blocks too.
	for _, n := range []int{4096, 512, 1} {
		for {
			if _, err := f.Write(chunk[:n]); err != nil {
				break
			}
		}
	}
	return path
}

// checkDatabase opens a stopped broker's database, runs PRAGMA
// integrity_check and checks which templates exist.
func checkDatabase(t *testing.T, dataDir string, present, absent []string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dataDir, "ggfleet.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&res); err != nil || res != "ok" {
		t.Fatalf("integrity_check after the fault: %q %v", res, err)
	}
	for _, n := range present {
		var c int
		if err := db.QueryRow(`SELECT COUNT(*) FROM templates WHERE name = ?`, n).Scan(&c); err != nil || c != 1 {
			t.Errorf("acknowledged template %s: %d rows (%v)", n, c, err)
		}
	}
	for _, n := range absent {
		var c int
		if err := db.QueryRow(`SELECT COUNT(*) FROM templates WHERE name = ?`, n).Scan(&c); err != nil || c != 0 {
			t.Errorf("template %s answered 503 but has %d rows (%v)", n, c, err)
		}
	}
}

// TestFaultsSQLiteDiskFull: with the data dir's disk full, writes answer
// 503 with a message, reads keep working, the broker does not crash, and
// once space returns writes succeed again; the database is intact and
// holds exactly the acknowledged writes.
func TestFaultsSQLiteDiskFull(t *testing.T) {
	dir := mountTmpfs(t, "48m")
	b := startBrokerIn(t, dir)
	logBrokerOnFailure(t, b)
	b.must(201, "POST", "/templates", bigTemplate("before"))

	filler := fillDisk(t, dir)
	created := writeUntil503(t, b, "full")
	failed := fmt.Sprintf("full-%03d", len(created))
	for i := 0; i < 3; i++ {
		if r := b.do("POST", "/templates", bigTemplate(fmt.Sprintf("again-%d", i))); r.Status != 503 || r.Message() == "" {
			t.Fatalf("another write with the disk still full: %d %.300s", r.Status, r.Body)
		}
	}
	b.must(200, "GET", "/templates/before", nil)
	b.must(200, "GET", "/templates", nil)
	if r := b.do("GET", "/readyz", nil); r.Status >= 500 && r.Status != 503 {
		t.Fatalf("readyz with the disk full: %d", r.Status)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "writes to succeed once space returned", func() bool {
		return b.do("POST", "/templates", bigTemplate("after")).Status == 201
	})
	b.must(200, "GET", "/templates/after", nil)
	if b.cmd == nil || b.cmd.ProcessState != nil {
		t.Fatal("the broker exited during the fault")
	}
	b.stop()
	checkDatabase(t, dir, append(created, "before", "after"), []string{failed, "again-0", "again-1", "again-2"})
}

// mountExt4 makes an ext4 file system of size bytes on a loop device,
// mounted with errors=remount-ro on a fresh directory; it returns the
// directory and the loop device. Cleanup unmounts and detaches it.
func mountExt4(t *testing.T, size int64) (dir, dev string) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	dir = filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("cannot attach a loop device (run as root; needs losetup and mkfs.ext4): %v %s", err, out)
		}
		t.Fatalf("losetup: %v %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		_ = exec.Command("umount", dir).Run()
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v %s", dev, err, out)
		}
	})
	run(t, "mkfs.ext4", "-q", "-F", dev)
	run(t, "mount", "-o", "errors=remount-ro", dev, dir)
	return dir, dev
}

// run runs a command, failing the test if it fails.
func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v %s", name, strings.Join(args, " "), err, out)
	}
}

// TestFaultsSQLiteReadOnly: the data dir's file system turns read-only
// under the running broker, as the kernel does after a disk error
// (errors=remount-ro, triggered through ext4's trigger_fs_error). Writes
// answer 503 with a message, reads keep working, the broker stops cleanly;
// after the operator's recovery (fsck, mount again, start) writes succeed
// and the database is intact with every acknowledged write.
func TestFaultsSQLiteReadOnly(t *testing.T) {
	dir, dev := mountExt4(t, 64<<20)
	b := startBrokerIn(t, dir)
	logBrokerOnFailure(t, b)
	b.must(201, "POST", "/templates", bigTemplate("before"))

	// What was written so far reaches the disk first: the fault modelled is
	// the file system turning read-only, not a power cut (an error with
	// dirty pages unwritten loses them, as a power cut would; SQLite's WAL
	// without synchronous=FULL may lose the last commits then, by design).
	syscall.Sync()
	trigger := filepath.Join("/sys/fs/ext4", filepath.Base(dev), "trigger_fs_error")
	if err := os.WriteFile(trigger, []byte("1"), 0o200); err != nil {
		t.Fatalf("trigger a file-system error: %v", err)
	}
	waitFor(t, 30*time.Second, "the file system to turn read-only", func() bool {
		return os.WriteFile(filepath.Join(dir, "probe"), nil, 0o600) != nil
	})
	for i := 0; i < 3; i++ {
		r := b.do("POST", "/templates", bigTemplate(fmt.Sprintf("ro-%d", i)))
		if r.Status != 503 || r.Message() == "" {
			t.Fatalf("write on a read-only disk: %d %.300s", r.Status, r.Body)
		}
		t.Logf("read-only write answered 503: %s", r.Message())
	}
	b.must(200, "GET", "/templates/before", nil)
	b.must(200, "GET", "/templates", nil)
	if b.cmd == nil || b.cmd.ProcessState != nil {
		t.Fatal("the broker exited during the fault")
	}

	// The operator's recovery: stop, check the file system, mount, start.
	b.stop()
	run(t, "umount", dir)
	if out, err := exec.Command("e2fsck", "-fy", dev).CombinedOutput(); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() > 1 { // 1: errors corrected
			t.Fatalf("e2fsck: %v %s", err, out)
		}
	}
	run(t, "mount", "-o", "errors=remount-ro", dev, dir)
	b.restart()
	b.must(200, "GET", "/templates/before", nil)
	b.must(201, "POST", "/templates", bigTemplate("after"))
	b.stop()
	checkDatabase(t, dir, []string{"before", "after"}, []string{"ro-0", "ro-1", "ro-2"})
}
