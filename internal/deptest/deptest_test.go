package deptest

import (
	"fmt"
	"strings"
	"testing"
)

// recorder captures Check's failures instead of failing the test.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.errs = append(r.errs, "FATAL "+fmt.Sprintf(format, args...))
}
func (r *recorder) Helper() {}

func TestCheckFindsForbiddenDependency(t *testing.T) {
	rec := &recorder{TB: t}
	// This package imports os/exec, which imports internal/... and os.
	Check(rec, "github.com/ggfleet/ggfleet/internal/deptest", "linux", "arm", "7", []string{"os/exec", "database/sql"})
	if len(rec.errs) != 1 {
		t.Fatalf("failures %q, want one (os/exec)", rec.errs)
	}
	want := "github.com/ggfleet/ggfleet/internal/deptest on linux/arm GOARM=7 depends on forbidden package os/exec (rule \"os/exec\") via github.com/ggfleet/ggfleet/internal/deptest → os/exec"
	if rec.errs[0] != want {
		t.Fatalf("failure\n%s\nwant\n%s", rec.errs[0], want)
	}
}

func TestCheckPrefixRule(t *testing.T) {
	rec := &recorder{TB: t}
	// A trailing slash is ignored ("os/" forbids os and os/exec); a rule
	// matches whole path elements only ("exe" does not forbid os/exec).
	Check(rec, "github.com/ggfleet/ggfleet/internal/deptest", "linux", "arm64", "", []string{"os/", "exe"})
	if len(rec.errs) == 0 || !strings.Contains(strings.Join(rec.errs, "\n"), "forbidden package os/exec") {
		t.Fatalf("failures %q", rec.errs)
	}
	for _, e := range rec.errs {
		if strings.Contains(e, `rule "exe"`) {
			t.Fatalf("a partial path element matched: %s", e)
		}
	}
}

func TestCheckBadPackage(t *testing.T) {
	rec := &recorder{TB: t}
	Check(rec, "github.com/ggfleet/ggfleet/no/such/package", "linux", "amd64", "", nil)
	if len(rec.errs) != 1 || !strings.HasPrefix(rec.errs[0], "FATAL deptest: go list -deps") {
		t.Fatalf("failures %q", rec.errs)
	}
}

func TestForbidden(t *testing.T) {
	bad := []string{"database/sql", "github.com/jackc/pgx", "github.com/aws/aws-sdk-go-v2/"}
	tests := []struct{ pkg, want string }{
		{"database/sql", "database/sql"},
		{"database/sql/driver", "database/sql"},
		{"database/sqlx", ""},
		{"github.com/jackc/pgx/v5", "github.com/jackc/pgx"},
		{"github.com/aws/aws-sdk-go-v2/service/iot", "github.com/aws/aws-sdk-go-v2"},
		{"github.com/aws/aws-sdk-go", ""},
	}
	for _, tc := range tests {
		if got := forbidden(tc.pkg, bad); got != tc.want {
			t.Errorf("forbidden(%q) = %q, want %q", tc.pkg, got, tc.want)
		}
	}
}
