// Package errkind classifies errors by what the caller can do about them, so
// domain code can say "not found" or "invalid" without knowing HTTP, and the
// HTTP edge can map kinds to status codes in one place.
package errkind

import (
	"errors"
	"fmt"
)

// Kind says what kind of failure an error is. The list is append-only.
type Kind int

const (
	// Other is an unexpected failure (HTTP 500).
	Other Kind = iota
	// Invalid means the input was wrong; the message says what to fix (400).
	Invalid
	// NotFound means the named thing does not exist (404).
	NotFound
	// Conflict means the thing already exists or is in a conflicting state (409).
	Conflict
	// Unauthorized means the caller did not prove who it is (401).
	Unauthorized
	// Forbidden means the caller may not do this (403).
	Forbidden
	// Unavailable means a dependency (disk, database) cannot serve now; retry later (503).
	Unavailable
)

// Error is an error with a Kind and a message that is safe to show to users.
type Error struct {
	Kind Kind
	Msg  string
	Err  error
}

func (e *Error) Error() string {
	switch {
	case e.Msg != "" && e.Err != nil:
		return e.Msg + ": " + e.Err.Error()
	case e.Msg != "":
		return e.Msg
	case e.Err != nil:
		return e.Err.Error()
	}
	return "error"
}

func (e *Error) Unwrap() error { return e.Err }

// New returns an error of the given kind with a formatted, user-facing message.
func New(kind Kind, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// Wrap returns err annotated with a kind and a user-facing message.
func Wrap(kind Kind, err error, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...), Err: err}
}

// KindOf returns the kind of the first *Error in err's chain, or Other.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Other
}

// Is reports whether err is of the given kind.
func Is(err error, kind Kind) bool { return err != nil && KindOf(err) == kind }

// Message returns the user-facing message of the first *Error in err's chain,
// or "" when there is none (unexpected errors are not shown to users).
func Message(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Msg
	}
	return ""
}
