package health

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
)

// readInto reads the whole file at path into buf (grown as needed) and
// returns the filled slice, so repeated reads of /proc files reuse memory.
func readInto(path string, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return buf[:0], err
	}
	defer f.Close()
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// cpuTimes is the aggregate "cpu" line of /proc/stat, in clock ticks.
type cpuTimes struct {
	idle, total uint64
}

// parseStat reads the first ("cpu ") line of /proc/stat: user nice system
// idle iowait irq softirq steal [guest guest_nice]. Guest time is already
// counted in user, so only the first eight fields are summed; idle includes
// iowait.
func parseStat(b []byte) (cpuTimes, error) {
	line, _, _ := bytes.Cut(b, []byte{'\n'})
	rest, ok := bytes.CutPrefix(line, []byte("cpu "))
	if !ok {
		return cpuTimes{}, errors.New("/proc/stat does not start with the cpu line")
	}
	var t cpuTimes
	for i := 0; i < 8; i++ {
		var field []byte
		rest = bytes.TrimLeft(rest, " ")
		field, rest, _ = bytes.Cut(rest, []byte{' '})
		if len(field) == 0 {
			if i < 4 {
				return cpuTimes{}, errors.New("/proc/stat cpu line is too short")
			}
			break
		}
		v, err := strconv.ParseUint(string(field), 10, 64)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("/proc/stat cpu field %d: %w", i+1, err)
		}
		t.total += v
		if i == 3 || i == 4 { // idle, iowait
			t.idle += v
		}
	}
	return t, nil
}

// cpuPercent is the busy share between two samples, 0–100.
func cpuPercent(prev, cur cpuTimes) float64 {
	if cur.total <= prev.total || cur.idle < prev.idle {
		return 0
	}
	dt := cur.total - prev.total
	di := cur.idle - prev.idle
	if di > dt {
		return 0
	}
	return float64(dt-di) * 100 / float64(dt)
}

// parseMeminfo returns total and used memory in bytes from /proc/meminfo;
// used is MemTotal − MemAvailable (or − MemFree − Buffers − Cached on
// kernels without MemAvailable).
func parseMeminfo(b []byte) (total, used uint64, err error) {
	var avail, free, buffers, cached uint64
	haveAvail := false
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		key, val, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		var dst *uint64
		switch string(key) { // no allocation: the compiler special-cases string(b) in switches
		case "MemTotal":
			dst = &total
		case "MemAvailable":
			dst, haveAvail = &avail, true
		case "MemFree":
			dst = &free
		case "Buffers":
			dst = &buffers
		case "Cached":
			dst = &cached
		default:
			continue
		}
		val = bytes.TrimSpace(val)
		num, unit, _ := bytes.Cut(val, []byte{' '})
		v, perr := strconv.ParseUint(string(num), 10, 64)
		if perr != nil {
			return 0, 0, fmt.Errorf("/proc/meminfo %s: %w", key, perr)
		}
		if string(unit) == "kB" {
			v *= 1024
		}
		*dst = v
	}
	if total == 0 {
		return 0, 0, errors.New("/proc/meminfo has no MemTotal")
	}
	if !haveAvail {
		avail = free + buffers + cached
	}
	if avail > total {
		avail = total
	}
	return total, total - avail, nil
}

// parseUptime returns the host's uptime in whole seconds from /proc/uptime.
func parseUptime(b []byte) (int64, error) {
	first, _, _ := bytes.Cut(bytes.TrimSpace(b), []byte{' '})
	whole, _, _ := bytes.Cut(first, []byte{'.'})
	v, err := strconv.ParseInt(string(whole), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/uptime: %w", err)
	}
	return v, nil
}
