package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// slowConsole is a shell on a pseudo-terminal reached through a second
// pseudo-terminal (Path, opened like /dev/ttyUSB0), with both directions
// paced like a UART: a pty copies at memory speed and ignores the baud
// rate, so the pacing is done here, in Go, between the two masters.
type slowConsole struct {
	// Path is the "UART" device the transport opens.
	Path string

	uartM, uartS *os.File
	devM         *os.File
	cmd          *exec.Cmd
	wg           sync.WaitGroup
}

// startSlowConsole starts shell (argv) as a session leader on its own
// pty and bridges it to a second pty at bytesPerSec in each direction.
func startSlowConsole(argv []string, bytesPerSec float64) (*slowConsole, error) {
	uartM, uartS, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("open uart pty: %w", err)
	}
	// Raw, so the local line discipline neither echoes nor rewrites bytes:
	// it behaves like a serial port the transport has configured.
	if err := makeRaw(uartS); err != nil {
		uartM.Close()
		uartS.Close()
		return nil, fmt.Errorf("raw mode on %s: %w", uartS.Name(), err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TERM=vt100"}
	cmd.Dir = "/"
	devM, err := pty.StartWithAttrs(cmd, nil, &syscall.SysProcAttr{Setsid: true, Setctty: true})
	if err != nil {
		uartM.Close()
		uartS.Close()
		return nil, fmt.Errorf("start %s on a pty: %w", argv[0], err)
	}
	c := &slowConsole{Path: uartS.Name(), uartM: uartM, uartS: uartS, devM: devM, cmd: cmd}
	c.wg.Add(2)
	go func() { defer c.wg.Done(); _ = pace(devM, uartM, bytesPerSec) }()
	go func() { defer c.wg.Done(); _ = pace(uartM, devM, bytesPerSec) }()
	return c, nil
}

// close kills the shell's session and stops both pumps.
func (c *slowConsole) close() {
	if c.cmd.Process != nil {
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		_ = c.cmd.Wait()
	}
	_ = c.devM.Close()
	_ = c.uartS.Close()
	_ = c.uartM.Close()
	c.wg.Wait()
}

// uartChunk is how many bytes are delivered at once: a typical UART
// receive FIFO, so the receiver never sees a burst larger than real
// hardware would hand it.
const uartChunk = 16

// pace copies src to dst no faster than bytesPerSec. Each chunk is handed
// over only once its last byte would have arrived on the wire. The
// schedule is cumulative, so time lost to timer slack or to the goroutine
// not being scheduled is made up on the next chunks (bytes delivered over
// any busy period never exceed the rate times its length), but a line that
// went idle (the read had to wait for data) does not bank credit: a UART
// cannot send faster after a pause.
func pace(dst io.Writer, src io.Reader, bytesPerSec float64) error {
	buf := make([]byte, 4096)
	perByte := time.Duration(float64(time.Second) / bytesPerSec)
	next := time.Now()
	for {
		asked := time.Now()
		n, err := src.Read(buf)
		if now := time.Now(); now.Sub(asked) > time.Millisecond && next.Before(now) {
			next = now // the line was idle
		}
		for off := 0; off < n; {
			k := min(uartChunk, n-off)
			next = next.Add(time.Duration(k) * perByte)
			time.Sleep(time.Until(next))
			if _, werr := dst.Write(buf[off : off+k]); werr != nil {
				return werr
			}
			off += k
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed) || errors.Is(err, syscall.EIO) {
				return nil
			}
			return err
		}
	}
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
