// Package patchmsg is the patching contract between the broker and the
// ggagent on a core (spec/device-patcher.md §6.3–§6.5, topics as in
// DESIGN.md): the patch job the broker dispatches, the events and log chunks
// the agent sends back, target probes, and the shapes they embed (target
// profile, template v2 steps and files, step results). Like mqttmsg it is
// stdlib only, every payload carries "version": 1, and fields are only ever
// added.
package patchmsg

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Version is the message version this package writes.
const Version = 1

// JobSchema names the job document format.
const JobSchema = "ggfleet-patcher.job/1"

// Topic suffixes under ggfleet/things/{core}/ (see mqttmsg.Topic).
const (
	// TopicPatches is the prefix of every patch topic.
	TopicPatches = "patches"
	// TopicTargets is the prefix of every target topic.
	TopicTargets = "targets"
)

// StartTopic is broker → agent, QoS 1: a Job.
func StartTopic(patchID string) string { return "patches/" + patchID + "/start" }

// CancelTopic is broker → agent, QoS 1: a Cancel.
func CancelTopic(patchID string) string { return "patches/" + patchID + "/cancel" }

// EventsTopic is agent → broker, QoS 1: an Event.
func EventsTopic(patchID string) string { return "patches/" + patchID + "/events" }

// LogsTopic is agent → broker, QoS 1: a LogChunk.
func LogsTopic(patchID string) string { return "patches/" + patchID + "/logs" }

// ProbeTopic is broker → agent, QoS 1: a ProbeRequest.
func ProbeTopic(deviceID string) string { return "targets/" + deviceID + "/probe" }

// ProbeResultTopic is agent → broker, QoS 1: a ProbeResult.
func ProbeResultTopic(deviceID string) string { return "targets/" + deviceID + "/probe/result" }

// ParseSuffix splits a topic suffix (what follows ggfleet/things/{core}/) of
// a patch or target topic into its kind ("patches" or "targets"), id and
// verb ("start", "cancel", "events", "logs", "probe", "probe/result").
func ParseSuffix(suffix string) (kind, id, verb string, ok bool) {
	kind, rest, found := strings.Cut(suffix, "/")
	if !found || (kind != TopicPatches && kind != TopicTargets) {
		return "", "", "", false
	}
	id, verb, found = strings.Cut(rest, "/")
	if !found || id == "" || verb == "" {
		return "", "", "", false
	}
	return kind, id, verb, true
}

// Target is a client device's connection profile (§6.4). It never holds a
// secret: CredentialRef names one the core keeps ("core:NAME" = the file the
// operator stored with `ggagent credentials set NAME`).
type Target struct {
	DeviceID   string     `json:"deviceId"`
	CoreName   string     `json:"coreName"`
	Connection Connection `json:"connection"`
}

// Connection types.
const (
	ConnSSH    = "ssh"
	ConnSerial = "serial"
)

// Host key policies.
const (
	HostKeyStrict   = "strict"
	HostKeyTOFU     = "tofu"
	HostKeyInsecure = "insecure"
)

// Connection says how the core reaches the device: Type selects which of the
// SSH or serial fields apply.
type Connection struct {
	Type string `json:"type"` // ssh | serial

	// SSH.
	Host string `json:"host,omitempty"`
	Port int    `json:"-"` // "port" on the wire: a number for ssh

	Username              string `json:"username,omitempty"`
	Auth                  *Auth  `json:"auth,omitempty"`
	HostKey               string `json:"hostKey,omitempty"` // authorized_keys format
	HostKeyPolicy         string `json:"hostKeyPolicy,omitempty"`
	ConnectTimeoutSeconds int    `json:"connectTimeoutSeconds,omitempty"`
	KeepaliveSeconds      int    `json:"keepaliveSeconds,omitempty"`

	// Serial.
	SerialPort   string `json:"-"` // "port" on the wire: a device path for serial
	BaudRate     int    `json:"baudRate,omitempty"`
	DataBits     int    `json:"dataBits,omitempty"`
	Parity       string `json:"parity,omitempty"`
	StopBits     int    `json:"stopBits,omitempty"`
	Login        *Login `json:"login,omitempty"`
	LineEnding   string `json:"lineEnding,omitempty"`
	MaxLineBytes int    `json:"maxLineBytes,omitempty"`
}

// Auth methods for SSH.
const (
	AuthPrivateKey          = "privateKey"
	AuthPassword            = "password"
	AuthKeyboardInteractive = "keyboardInteractive"
)

// Auth says how to log in over SSH; the secret is on the core.
type Auth struct {
	Method        string `json:"method"`
	CredentialRef string `json:"credentialRef,omitempty"`
}

// Login drives a serial console's login prompt.
type Login struct {
	Username       string `json:"username,omitempty"`
	CredentialRef  string `json:"credentialRef,omitempty"`
	LoginPrompt    string `json:"loginPrompt,omitempty"`
	PasswordPrompt string `json:"passwordPrompt,omitempty"`
	ShellPrompt    string `json:"shellPrompt,omitempty"`
}

// MarshalJSON writes "port" as a number for SSH and a path for serial, as
// the spec's two profile examples do.
func (c Connection) MarshalJSON() ([]byte, error) {
	type plain Connection
	m := map[string]any{}
	b, err := json.Marshal(plain(c))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	switch c.Type {
	case ConnSerial:
		if c.SerialPort != "" {
			m["port"] = c.SerialPort
		}
	default:
		if c.Port != 0 {
			m["port"] = c.Port
		}
	}
	return json.Marshal(m)
}

// UnmarshalJSON accepts "port" as a number (SSH) or a string (serial path).
func (c *Connection) UnmarshalJSON(b []byte) error {
	type plain Connection
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	var raw struct {
		Port json.RawMessage `json:"port"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*c = Connection(p)
	c.Port, c.SerialPort = 0, ""
	if len(raw.Port) > 0 && string(raw.Port) != "null" {
		if raw.Port[0] == '"' {
			if err := json.Unmarshal(raw.Port, &c.SerialPort); err != nil {
				return fmt.Errorf("port: %w", err)
			}
		} else if err := json.Unmarshal(raw.Port, &c.Port); err != nil {
			return fmt.Errorf("port must be a number (ssh) or a device path (serial): %w", err)
		}
	}
	return nil
}

// Validate says what is wrong with a profile, in words an operator can act on.
func (t Target) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if t.DeviceID == "" {
		add("deviceId is required")
	}
	if t.CoreName == "" {
		add("coreName is required: the core whose agent reaches this device")
	}
	c := t.Connection
	switch c.Type {
	case ConnSSH:
		if c.Host == "" {
			add("connection.host is required for ssh")
		}
		if c.Port < 0 || c.Port > 65535 {
			add("connection.port must be from 1 to 65535")
		}
		if c.Username == "" {
			add("connection.username is required for ssh")
		}
		if c.Auth == nil {
			add("connection.auth is required for ssh")
		} else {
			switch c.Auth.Method {
			case AuthPrivateKey, AuthPassword, AuthKeyboardInteractive:
			default:
				add("connection.auth.method must be privateKey, password or keyboardInteractive")
			}
			if err := checkRef(c.Auth.CredentialRef); err != nil {
				add("connection.auth.credentialRef: %v", err)
			}
		}
		switch c.HostKeyPolicy {
		case "", HostKeyStrict:
			if c.HostKey == "" {
				add("connection.hostKey is required with hostKeyPolicy strict (or use tofu)")
			}
		case HostKeyTOFU, HostKeyInsecure:
		default:
			add("connection.hostKeyPolicy must be strict, tofu or insecure")
		}
	case ConnSerial:
		if c.SerialPort == "" {
			add("connection.port (the serial device path) is required for serial")
		}
		if c.BaudRate < 0 {
			add("connection.baudRate must be positive")
		}
		if c.MaxLineBytes != 0 && (c.MaxLineBytes < 64 || c.MaxLineBytes > 1024) {
			add("connection.maxLineBytes must be from 64 to 1024")
		}
		if c.Login != nil && c.Login.CredentialRef != "" {
			if err := checkRef(c.Login.CredentialRef); err != nil {
				add("connection.login.credentialRef: %v", err)
			}
		}
	default:
		add("connection.type must be ssh or serial")
	}
	return errors.Join(errs...)
}

// CredentialName returns NAME from "core:NAME".
func CredentialName(ref string) (string, error) {
	if err := checkRef(ref); err != nil {
		return "", err
	}
	return strings.TrimPrefix(ref, "core:"), nil
}

func checkRef(ref string) error {
	name, ok := strings.CutPrefix(ref, "core:")
	if !ok {
		return fmt.Errorf("%q must look like core:NAME (a credential stored on the core with `ggagent credentials set NAME`)", ref)
	}
	if !ValidCredentialName(name) {
		return fmt.Errorf("credential name %q must be 1-64 letters, digits, '.', '_' or '-'", name)
	}
	return nil
}

// ValidCredentialName reports whether name is safe as a file name in the
// agent's credentials directory.
func ValidCredentialName(name string) bool {
	if name == "" || len(name) > 64 || name == "." || name == ".." {
		return false
	}
	for _, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Defaults apply to every step unless the step overrides them.
type Defaults struct {
	Shell          string `json:"shell,omitempty"`
	Workdir        string `json:"workdir,omitempty"`
	TimeoutSeconds int    `json:"timeoutSeconds,omitempty"`
	Become         bool   `json:"become,omitempty"`
}

// FileSource is exactly one of Inline (base64), URL or Artifact.
type FileSource struct {
	Inline   string `json:"inline,omitempty"`
	URL      string `json:"url,omitempty"`
	Artifact string `json:"artifact,omitempty"`
}

// FileSpec is one file the patch places on the device.
type FileSpec struct {
	Path     string     `json:"path"`
	Mode     string     `json:"mode,omitempty"` // octal, e.g. "0644"
	Owner    string     `json:"owner,omitempty"`
	Source   FileSource `json:"source"`
	SHA256   string     `json:"sha256,omitempty"`
	Template bool       `json:"template,omitempty"`
	Transfer string     `json:"transfer,omitempty"` // push (default) | pull
}

// Step interrupt policies.
const (
	OnInterruptFail  = "fail"
	OnInterruptRerun = "rerun"
)

// StepSpec is one shell step of a v2 template.
type StepSpec struct {
	Name                    string            `json:"name"`
	Run                     string            `json:"run"`
	Shell                   string            `json:"shell,omitempty"`
	Workdir                 string            `json:"workdir,omitempty"`
	Env                     map[string]string `json:"env,omitempty"`
	TimeoutSeconds          int               `json:"timeoutSeconds,omitempty"`
	ExpectExitCodes         []int             `json:"expectExitCodes,omitempty"`
	Retries                 int               `json:"retries,omitempty"`
	RetryDelaySeconds       int               `json:"retryDelaySeconds,omitempty"`
	ContinueOnError         bool              `json:"continueOnError,omitempty"`
	Become                  *bool             `json:"become,omitempty"`
	ExpectDisconnect        bool              `json:"expectDisconnect,omitempty"`
	ReconnectTimeoutSeconds int               `json:"reconnectTimeoutSeconds,omitempty"`
	OnInterrupt             string            `json:"onInterrupt,omitempty"`
	CaptureOutput           string            `json:"captureOutput,omitempty"` // tail | full | none
	MaxOutputBytes          int               `json:"maxOutputBytes,omitempty"`
}

// JobTemplate is the template version a job runs.
type JobTemplate struct {
	Name      string     `json:"name"`
	VersionNo int        `json:"versionNo"`
	Defaults  Defaults   `json:"defaults"`
	Files     []FileSpec `json:"files"`
	Steps     []StepSpec `json:"steps"`
	// VarsEncoding "base64" gives CDF's behaviour (values base64-encoded).
	VarsEncoding string `json:"varsEncoding,omitempty"`
}

// Report says how the agent reports output.
type Report struct {
	Logs           string `json:"logs,omitempty"` // stream | none
	MaxOutputBytes int    `json:"maxOutputBytes,omitempty"`
}

// Job is the patch job the broker dispatches on patches/{id}/start.
type Job struct {
	Version  int               `json:"version"`
	Schema   string            `json:"schema"`
	PatchID  string            `json:"patchId"`
	TaskID   string            `json:"taskId"`
	Attempt  int               `json:"attempt"`
	DeviceID string            `json:"deviceId"`
	Deadline time.Time         `json:"deadline"`
	Target   Target            `json:"target"`
	Template JobTemplate       `json:"template"`
	Vars     map[string]string `json:"vars"`
	Report   Report            `json:"report"`
}

// Cancel stops a queued or running patch attempt.
type Cancel struct {
	Version int    `json:"version"`
	PatchID string `json:"patchId"`
	Attempt int    `json:"attempt"`
	Reason  string `json:"reason,omitempty"`
}

// Event types (§6.5).
const (
	EventAccepted     = "accepted"
	EventRejected     = "rejected"
	EventConnected    = "connected"
	EventFile         = "file"
	EventStepStarted  = "step-started"
	EventStepFinished = "step-finished"
	EventHeartbeat    = "heartbeat"
	EventCompleted    = "completed"
)

// Rejection reasons.
const (
	RejectBusy              = "BUSY"
	RejectUnknownTarget     = "UNKNOWN_TARGET"
	RejectBadJob            = "BAD_JOB"
	RejectCredentialMissing = "CREDENTIAL_MISSING"
)

// Patch statuses as the CDF API shows them.
const (
	PatchCreated = "created"
	PatchPending = "pending"
	PatchSuccess = "success"
	PatchFailed  = "failed"
	PatchRetry   = "retry"
)

// Step statuses.
const (
	StepPending  = "pending"
	StepRunning  = "running"
	StepSuccess  = "success"
	StepFailed   = "failed"
	StepSkipped  = "skipped"
	StepTimedOut = "timedout"
)

// StepResult is one step's outcome; also what GET /patches/{id}/steps lists.
type StepResult struct {
	Index      int        `json:"index"`
	Name       string     `json:"name"`
	Status     string     `json:"status"`
	ExitCode   *int       `json:"exitCode,omitempty"`
	Attempts   int        `json:"attempts"`
	StartedAt  *time.Time `json:"startedAt,omitempty"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	DurationMs int64      `json:"durationMs"`
	StdoutTail string     `json:"stdoutTail,omitempty"`
	StderrTail string     `json:"stderrTail,omitempty"`
	Truncated  bool       `json:"truncated"`
	Error      string     `json:"error,omitempty"`
}

// FileResult reports one transferred file.
type FileResult struct {
	Path   string `json:"path"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
	OK     bool   `json:"ok"`
}

// Event is what the agent reports about a patch attempt. Seq increases
// monotonically per (patchId, attempt) so the broker applies each once.
type Event struct {
	Version int       `json:"version"`
	PatchID string    `json:"patchId"`
	Attempt int       `json:"attempt"`
	Seq     int64     `json:"seq"`
	Type    string    `json:"type"`
	TS      time.Time `json:"ts"`

	Reason string      `json:"reason,omitempty"` // rejected
	File   *FileResult `json:"file,omitempty"`   // file
	Step   *StepResult `json:"step,omitempty"`   // step-started, step-finished
	// HostKeyFingerprint is sent with connected when a tofu target's key
	// was recorded.
	HostKeyFingerprint string `json:"hostKeyFingerprint,omitempty"`
	// Completed: Status is success|failed and StatusMessage the AGENT:…
	// detail (AGENT:Success, AGENT:Failed:<step>:exit=<n>, AGENT:TimedOut:<step>,
	// AGENT:Transport:<CODE>, AGENT:Cancelled, AGENT:Interrupted).
	Status        string `json:"status,omitempty"`
	StatusMessage string `json:"statusMessage,omitempty"`
}

// Log streams.
const (
	StreamStdout  = "stdout"
	StreamStderr  = "stderr"
	StreamConsole = "console"
)

// MaxLogChunk is the largest Data a LogChunk carries.
const MaxLogChunk = 8 << 10

// LogChunk is a piece of a step's output.
type LogChunk struct {
	Version int    `json:"version"`
	PatchID string `json:"patchId"`
	Attempt int    `json:"attempt"`
	Step    string `json:"step"`
	Stream  string `json:"stream"`
	Seq     int64  `json:"seq"`
	Data    string `json:"data"`
	EOF     bool   `json:"eof"`
}

// ProbeRequest asks the core to connect to a target, log in and run uname -a.
type ProbeRequest struct {
	Version  int    `json:"version"`
	ProbeID  string `json:"probeId"`
	DeviceID string `json:"deviceId"`
	Target   Target `json:"target"`
}

// ProbeResult answers a ProbeRequest.
type ProbeResult struct {
	Version            int    `json:"version"`
	ProbeID            string `json:"probeId"`
	DeviceID           string `json:"deviceId"`
	OK                 bool   `json:"ok"`
	Uname              string `json:"uname,omitempty"`
	HostKeyFingerprint string `json:"hostKeyFingerprint,omitempty"`
	Error              string `json:"error,omitempty"`
}

// MaxPayload is the largest patch message either side accepts (AWS IoT
// Core's limit is 128 KB; the broker turns big inline files into URLs).
const MaxPayload = 128 << 10

// Decode parses a message and checks its version and required fields.
// Unknown fields are ignored.
func Decode[T Job | Cancel | Event | LogChunk | ProbeRequest | ProbeResult](payload []byte) (T, error) {
	var m T
	if len(payload) > MaxPayload {
		return m, fmt.Errorf("message of %d bytes is over the %d-byte limit", len(payload), MaxPayload)
	}
	if err := json.Unmarshal(payload, &m); err != nil {
		return m, fmt.Errorf("decode %T: %w", m, err)
	}
	if err := validate(any(&m)); err != nil {
		return m, fmt.Errorf("invalid %T: %w", m, err)
	}
	return m, nil
}

func validate(m any) error {
	var errs []error
	check := func(ok bool, msg string) {
		if !ok {
			errs = append(errs, errors.New(msg))
		}
	}
	switch v := m.(type) {
	case *Job:
		check(v.Version >= 1, "version must be 1 or more")
		check(v.PatchID != "", "patchId is required")
		check(v.Attempt >= 1, "attempt must be 1 or more")
		check(v.DeviceID != "", "deviceId is required")
		check(len(v.Template.Steps) <= 100, "at most 100 steps")
		check(len(v.Template.Files) <= 100, "at most 100 files")
	case *Cancel:
		check(v.Version >= 1, "version must be 1 or more")
		check(v.PatchID != "", "patchId is required")
	case *Event:
		check(v.Version >= 1, "version must be 1 or more")
		check(v.PatchID != "", "patchId is required")
		check(v.Attempt >= 1, "attempt must be 1 or more")
		check(v.Type != "", "type is required")
		if v.Type == EventCompleted {
			check(v.Status == PatchSuccess || v.Status == PatchFailed, "completed status must be success or failed")
		}
	case *LogChunk:
		check(v.Version >= 1, "version must be 1 or more")
		check(v.PatchID != "", "patchId is required")
		check(len(v.Data) <= MaxLogChunk, "data is over 8 KiB")
		check(v.Stream == StreamStdout || v.Stream == StreamStderr || v.Stream == StreamConsole,
			"stream must be stdout, stderr or console")
	case *ProbeRequest:
		check(v.Version >= 1, "version must be 1 or more")
		check(v.ProbeID != "", "probeId is required")
	case *ProbeResult:
		check(v.Version >= 1, "version must be 1 or more")
		check(v.ProbeID != "", "probeId is required")
	}
	return errors.Join(errs...)
}
