// Package deptest turns import rules into tests: Check lists every package
// a build of pkg links for a target platform (`go list -deps`, without
// cgo) and fails the test if any of them is forbidden, printing the import
// chain that pulled it in so the fix is obvious. The agent's deps_test.go
// uses it to prove ggagent stays small enough for ARM devices.
//
// Tests only; it runs the go command (`go test` puts the toolchain's go
// first on PATH).
package deptest

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// Check fails t if the package pkg, built for goos/goarch (goarm for
// GOARCH=arm, else "") with CGO_ENABLED=0, depends on a package equal to or
// under any of the bad import-path prefixes ("database/sql" also forbids
// "database/sql/driver", "github.com/jackc/pgx" forbids
// "github.com/jackc/pgx/v5").
func Check(t testing.TB, pkg, goos, goarch, goarm string, bad []string) {
	t.Helper()
	graph, err := deps(pkg, goos, goarch, goarm)
	if err != nil {
		t.Fatalf("deptest: %v", err)
		return
	}
	target := goos + "/" + goarch
	if goarm != "" {
		target += " GOARM=" + goarm
	}
	var found []string
	for p := range graph {
		if forbidden(p, bad) != "" {
			found = append(found, p)
		}
	}
	slices.Sort(found)
	for _, p := range found {
		t.Errorf("%s on %s depends on forbidden package %s (rule %q) via %s",
			pkg, target, p, forbidden(p, bad), strings.Join(chain(graph, pkg, p), " → "))
	}
}

func forbidden(p string, bad []string) string {
	for _, b := range bad {
		b = strings.TrimSuffix(b, "/")
		if p == b || strings.HasPrefix(p, b+"/") {
			return b
		}
	}
	return ""
}

// deps maps every package pkg depends on (and pkg) to its direct imports.
func deps(pkg, goos, goarch, goarm string) (map[string][]string, error) {
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", pkg)
	cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0")
	if goarm != "" {
		cmd.Env = append(cmd.Env, "GOARM="+goarm)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, &listError{pkg: pkg, err: err, stderr: strings.TrimSpace(stderr.String())}
	}
	graph := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		graph[fields[0]] = fields[1:]
	}
	return graph, sc.Err()
}

type listError struct {
	pkg    string
	err    error
	stderr string
}

func (e *listError) Error() string {
	return "go list -deps " + e.pkg + ": " + e.err.Error() + ": " + e.stderr
}

// chain is a shortest import path from "from" to "to" (breadth first).
func chain(graph map[string][]string, from, to string) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == to {
			var path []string
			for ; p != ""; p = prev[p] {
				path = append(path, p)
			}
			slices.Reverse(path)
			return path
		}
		for _, imp := range graph[p] {
			if _, seen := prev[imp]; !seen {
				prev[imp] = p
				queue = append(queue, imp)
			}
		}
	}
	return []string{from, "…", to}
}
