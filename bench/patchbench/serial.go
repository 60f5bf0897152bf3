package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/ggfleet/ggfleet/patcher"
	"github.com/ggfleet/ggfleet/patcher/serialtransport"
)

// serialParams selects the serial measurement.
type serialParams struct {
	Size  int    // payload bytes uploaded
	Baud  int    // line rate; 8N1 means 10 bits per byte
	Shell string // device shell: dash, bash or busybox
	Dir   string // where the device writes the file (a temporary dir)
}

// serialResult is what one serial upload measured.
type serialResult struct {
	serialParams
	Elapsed time.Duration
	// LineBytesPerSec is the raw line rate (baud/10) and PayloadBound the
	// most payload base64 can carry over it (3/4 of the raw rate).
	LineBytesPerSec, PayloadBound float64
	Achieved                      float64 // payload bytes per second
}

// Ratio is the achieved payload rate over the base64 bound of the line.
func (r serialResult) Ratio() float64 { return r.Achieved / r.PayloadBound }

var shellArgv = map[string][]string{
	"dash":    {"dash", "-i"},
	"bash":    {"bash", "--norc", "--noprofile", "-i"},
	"busybox": {"busybox", "sh", "-i"},
}

// benchSerial uploads p.Size random bytes through serialtransport.Upload
// to a shell behind a console paced at p.Baud 8N1 and checks the file.
// Only the Upload call is timed; opening and logging in are not.
func benchSerial(ctx context.Context, log *slog.Logger, p serialParams) (serialResult, error) {
	argv, ok := shellArgv[p.Shell]
	if !ok {
		return serialResult{}, fmt.Errorf("unknown shell %q (want dash, bash or busybox)", p.Shell)
	}
	line := float64(p.Baud) / 10
	res := serialResult{serialParams: p, LineBytesPerSec: line, PayloadBound: line * 3 / 4}
	con, err := startSlowConsole(argv, line)
	if err != nil {
		return res, err
	}
	defer con.close()

	octx, cancel := context.WithTimeout(ctx, time.Minute)
	tr, err := serialtransport.Open(octx, serialtransport.Config{Path: con.Path, Baud: p.Baud, Logger: log})
	cancel()
	if err != nil {
		return res, fmt.Errorf("open the paced console: %w", err)
	}
	defer tr.Close()

	data := make([]byte, p.Size)
	_, _ = rand.Read(data)
	dst := filepath.Join(p.Dir, "serial-upload.bin")
	// Generous: twice the line time of the base64 text, plus a minute.
	limit := time.Duration(float64(p.Size)/res.PayloadBound*2*float64(time.Second)) + time.Minute
	uctx, ucancel := context.WithTimeout(ctx, limit)
	defer ucancel()
	start := time.Now()
	err = tr.Upload(uctx, patcher.File{Path: dst, Mode: 0o600, Data: bytes.NewReader(data), Size: int64(len(data))})
	res.Elapsed = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("serial upload of %d bytes: %w", p.Size, err)
	}
	got, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(got, data) {
		return res, fmt.Errorf("uploaded file differs from what was sent (%d bytes read, %v)", len(got), err)
	}
	res.Achieved = float64(p.Size) / res.Elapsed.Seconds()
	return res, nil
}
