package testservers

import (
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// Console login accepted by the getty in front of StartPtyShell's shell.
const (
	ConsoleUser     = "root"
	ConsolePassword = "console-test-pw"
)

// PtyShell is a shell on a pseudo-terminal, reachable through a second
// pseudo-terminal whose slave (Path) behaves like a serial port: open it
// with go.bug.st/serial. When the shell exits a new login prompt (or shell)
// appears, like getty respawning on a real console.
type PtyShell struct {
	// Path is the "UART" device to open, e.g. /dev/pts/7.
	Path string

	t         testing.TB
	argv      []string
	login     bool
	uartM     *os.File
	uartS     *os.File
	mu        sync.Mutex
	devM      *os.File // current device-side master, nil between shells
	devPID    int
	closed    bool
	superDone chan struct{}
	pumpDone  chan struct{}
}

// shells maps the names tests use to how each shell is started
// interactively, plus the apt package that provides it.
var shells = map[string]struct {
	argv []string
	pkg  string
}{
	"bash":    {[]string{"bash", "--norc", "--noprofile", "-i"}, "bash"},
	"dash":    {[]string{"dash", "-i"}, "dash"},
	"busybox": {[]string{"busybox", "sh", "-i"}, "busybox"},
}

// StartPtyShell starts shell ("bash", "dash" or "busybox") on a
// pseudo-terminal (as a session leader with it as controlling tty, so job
// control and ^C work as on a console) and bridges it in Go to a second
// pseudo-terminal whose slave path is returned in PtyShell.Path. With login
// set, a getty-like script asks for `login:` and `Password:` first and
// checks ConsoleUser/ConsolePassword. Everything is killed in t.Cleanup.
func StartPtyShell(t testing.TB, shell string, login bool) *PtyShell {
	t.Helper()
	sh, ok := shells[shell]
	if !ok {
		t.Fatalf("StartPtyShell: unknown shell %q (want bash, dash or busybox)", shell)
	}
	need(t, sh.argv[0], sh.pkg)
	need(t, "sh", "dash")

	uartM, uartS, err := pty.Open()
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	// The fixture keeps the slave open so the master never sees EIO between
	// the transport's opens; raw so nothing is echoed back into the device.
	if err := makeRaw(uartS); err != nil {
		t.Fatalf("raw mode on %s: %v", uartS.Name(), err)
	}
	p := &PtyShell{
		Path: uartS.Name(), t: t, argv: sh.argv, login: login,
		uartM: uartM, uartS: uartS,
		superDone: make(chan struct{}), pumpDone: make(chan struct{}),
	}
	go p.pump()
	go p.supervise()
	t.Cleanup(p.close)
	return p
}

// KillShell kills the device's shell and everything in its session, like a
// crash or a logout; the getty then starts over.
func (p *PtyShell) KillShell() {
	p.mu.Lock()
	pid := p.devPID
	p.mu.Unlock()
	if pid > 0 {
		killSession(pid)
	}
}

// gettyScript is run by /bin/sh on the device tty; $0.. are the shell argv.
// Like agetty, an empty user name just asks again.
const gettyScript = `u=
while [ -z "$u" ]; do
	printf '\nggfleet test console\nlogin: '
	IFS= read -r u || exit 0
done
printf 'Password: '
stty -echo
IFS= read -r pw
stty echo
printf '\n'
if [ "$u" = "$GG_USER" ] && [ "$pw" = "$GG_PASS" ]; then
	unset GG_USER GG_PASS
	exec "$@"
fi
sleep 1
printf 'Login incorrect\n'
`

// supervise runs the getty (or shell) again each time it exits.
func (p *PtyShell) supervise() {
	defer close(p.superDone)
	for {
		p.mu.Lock()
		closed := p.closed
		p.mu.Unlock()
		if closed {
			return
		}
		var cmd *exec.Cmd
		if p.login {
			cmd = exec.Command("sh", append([]string{"-c", gettyScript, "getty"}, p.argv...)...)
		} else {
			cmd = exec.Command(p.argv[0], p.argv[1:]...)
		}
		cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"HOME=/root", "TERM=vt100", "GG_USER=" + ConsoleUser, "GG_PASS=" + ConsolePassword}
		cmd.Dir = "/"
		// Setsid is essential: the shell must not share the test's process
		// group, or it would stop the test with SIGTTIN/SIGTTOU.
		devM, err := pty.StartWithAttrs(cmd, nil, &syscall.SysProcAttr{Setsid: true, Setctty: true})
		if err != nil {
			p.t.Errorf("start device shell: %v", err)
			return
		}
		p.mu.Lock()
		p.devM, p.devPID = devM, cmd.Process.Pid
		p.mu.Unlock()
		copied := make(chan struct{})
		go func() {
			_, _ = io.Copy(p.uartM, devM)
			close(copied)
		}()
		_ = cmd.Wait()
		killSession(cmd.Process.Pid) // leftovers holding the tty open
		select {
		case <-copied:
		case <-time.After(5 * time.Second):
		}
		p.mu.Lock()
		p.devM, p.devPID = nil, 0
		p.mu.Unlock()
		devM.Close()
		<-copied
		time.Sleep(50 * time.Millisecond) // do not spin if the shell cannot start
	}
}

// pump copies what the transport writes on the UART to the current device
// tty; bytes arriving between shells are lost, as on a real line.
func (p *PtyShell) pump() {
	defer close(p.pumpDone)
	buf := make([]byte, 4096)
	for {
		n, err := p.uartM.Read(buf)
		if n > 0 {
			p.mu.Lock()
			dev := p.devM
			p.mu.Unlock()
			if dev != nil {
				_, _ = dev.Write(buf[:n])
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *PtyShell) close() {
	p.mu.Lock()
	p.closed = true
	pid, dev := p.devPID, p.devM
	p.mu.Unlock()
	if pid > 0 {
		killSession(pid)
	}
	if dev != nil {
		// Unblocks the device→UART copy even if something still holds the
		// device tty.
		_ = dev.SetReadDeadline(time.Now())
	}
	wait := func(ch chan struct{}, what string) {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			p.t.Errorf("pty fixture: %s did not stop", what)
		}
	}
	wait(p.superDone, "shell supervisor")
	p.uartS.Close()
	p.uartM.Close()
	wait(p.pumpDone, "UART pump")
}

// makeRaw puts a tty in raw mode (cfmakeraw).
func makeRaw(f *os.File) error {
	fd := int(f.Fd())
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Cflag &^= unix.CSIZE | unix.PARENB
	tio.Cflag |= unix.CS8
	tio.Cc[unix.VMIN] = 1
	tio.Cc[unix.VTIME] = 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, tio)
}
