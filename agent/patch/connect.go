package patch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"time"

	"github.com/ggfleet/ggfleet/patcher"
	"github.com/ggfleet/ggfleet/patcher/serialtransport"
	"github.com/ggfleet/ggfleet/patcher/sshtransport"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
	"golang.org/x/crypto/ssh"
)

// Transport error codes used in AGENT:Transport:<CODE> and step errors.
const (
	codeAuth         = "AUTH"
	codeHostKey      = "HOST_KEY_MISMATCH"
	codeUnreachable  = "UNREACHABLE"
	codeConnLost     = "CONNECTION_LOST"
	codeChecksum     = "CHECKSUM"
	codeTimeout      = "TIMEOUT"
	codeDownload     = "DOWNLOAD"
	codeFile         = "FILE"
	codeCredential   = "CREDENTIAL_MISSING"
	codeError        = "ERROR"
	codeInterrupted  = "INTERRUPTED"
	codeUnexpectExit = "UNEXPECTED_EXIT_CODE"
)

// transportCode names a transport error for reports.
func transportCode(err error) string {
	switch {
	case errors.Is(err, patcher.ErrAuth):
		return codeAuth
	case errors.Is(err, patcher.ErrHostKeyMismatch):
		return codeHostKey
	case errors.Is(err, patcher.ErrChecksum):
		return codeChecksum
	case errors.Is(err, patcher.ErrTimeout):
		return codeTimeout
	case errors.Is(err, patcher.ErrConnLost):
		return codeConnLost
	}
	return codeError
}

func parseHostKey(s string) (ssh.PublicKey, error) {
	if s == "" {
		return nil, errors.New("is empty")
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("must be one key in authorized_keys format (\"ssh-ed25519 AAAA…\"): %v", err)
	}
	return k, nil
}

// dial connects to a target with its credential value (nil if none). It
// returns the transport and, for SSH, the accepted host key's fingerprint.
func (r *Runner) dial(ctx context.Context, t patchmsg.Target, cred []byte) (patcher.Transport, string, error) {
	c := t.Connection
	switch c.Type {
	case patchmsg.ConnSSH:
		port := c.Port
		if port == 0 {
			port = 22
		}
		cfg := sshtransport.Config{
			Addr:           net.JoinHostPort(c.Host, strconv.Itoa(port)),
			User:           c.Username,
			ConnectTimeout: time.Duration(c.ConnectTimeoutSeconds) * time.Second,
			KeepAlive:      time.Duration(c.KeepaliveSeconds) * time.Second,
			Logger:         r.log,
		}
		if c.Auth != nil {
			switch c.Auth.Method {
			case patchmsg.AuthPrivateKey:
				cfg.Auth.PrivateKeyPEM = cred
			default:
				pw := string(bytes.TrimRight(cred, "\r\n"))
				cfg.Auth.Password = pw
				cfg.SudoPassword = pw
			}
		}
		switch c.HostKeyPolicy {
		case patchmsg.HostKeyTOFU:
			cfg.HostKey = sshtransport.TOFU(r.knownHosts)
		case patchmsg.HostKeyInsecure:
			cfg.HostKey = sshtransport.Insecure()
		default:
			k, err := parseHostKey(c.HostKey)
			if err != nil {
				return nil, "", fmt.Errorf("hostKey: %w", err)
			}
			cfg.HostKey = sshtransport.Strict(k)
		}
		tr, err := sshtransport.Dial(ctx, cfg)
		if err != nil {
			return nil, "", err
		}
		return tr, tr.HostKeyFingerprint(), nil
	case patchmsg.ConnSerial:
		cfg := serialtransport.Config{Path: c.SerialPort, Baud: c.BaudRate, LineEnding: c.LineEnding, Logger: r.log}
		if c.MaxLineBytes > 0 {
			cfg.LineMax = max(c.MaxLineBytes, 256)
		}
		if l := c.Login; l != nil {
			cfg.Login.User = l.Username
			cfg.Login.Password = string(bytes.TrimRight(cred, "\r\n"))
			for _, p := range []struct {
				src string
				dst **regexp.Regexp
			}{{l.LoginPrompt, &cfg.Login.LoginPrompt}, {l.PasswordPrompt, &cfg.Login.PasswordPrompt}, {l.ShellPrompt, &cfg.Login.ShellPrompt}} {
				if p.src == "" {
					continue
				}
				re, err := regexp.Compile(p.src)
				if err != nil {
					return nil, "", fmt.Errorf("login prompt %q: %w", p.src, err)
				}
				*p.dst = re
			}
		}
		tr, err := serialtransport.Open(ctx, cfg)
		if err != nil {
			return nil, "", err
		}
		return tr, "", nil
	}
	return nil, "", fmt.Errorf("connection type %q is not supported", c.Type)
}

// credential reads the target's credential value; nil when it has none.
func (r *Runner) credential(t patchmsg.Target) ([]byte, error) {
	ref := credRef(t)
	if ref == "" {
		return nil, nil
	}
	return r.creds.Resolve(ref)
}

// dialRetry dials, retrying unreachable targets (not refusals) with a
// growing pause until until passes.
func (r *Runner) dialRetry(ctx context.Context, t patchmsg.Target, cred []byte, until time.Time) (patcher.Transport, string, error) {
	pause := time.Second
	for {
		tr, fp, err := r.dial(ctx, t, cred)
		if err == nil {
			return tr, fp, nil
		}
		if !errors.Is(err, patcher.ErrConnLost) || time.Now().Add(pause).After(until) {
			return nil, "", err
		}
		r.log.Info("target not reachable yet; retrying", "deviceId", t.DeviceID, "in", pause, "err", err)
		select {
		case <-ctx.Done():
			return nil, "", ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 10*time.Second)
	}
}
