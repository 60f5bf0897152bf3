// Command standin plays java, systemctl, getent, groupadd, useradd, userdel
// and groupdel for the installer's tests, chosen by the name it is run as.
// It appends each command line to $STANDIN_RECORD/calls.log, keeps users
// and groups in files there, and as the nucleus installer copies the
// --init-config it was given and creates the loader under $STANDIN_ROOT.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

func main() {
	rec := os.Getenv("STANDIN_RECORD")
	root := os.Getenv("STANDIN_ROOT")
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	appendLine(filepath.Join(rec, "calls.log"), strings.Join(append([]string{name}, args...), " "))
	switch name {
	case "java":
		if len(args) == 1 && args[0] == "-version" {
			v := os.Getenv("STANDIN_JAVA_VERSION")
			if v == "" {
				v = `openjdk version "17.0.9" 2023-10-17`
			}
			fmt.Fprintln(os.Stderr, v)
			return
		}
		must(os.WriteFile(filepath.Join(rec, "java.argv"), []byte(strings.Join(args, "\n")+"\n"), 0o644))
		var ggRoot string
		for i, a := range args {
			if r, ok := strings.CutPrefix(a, "-Droot="); ok {
				ggRoot = r
			}
			if a == "--init-config" && i+1 < len(args) {
				b, err := os.ReadFile(args[i+1])
				must(err)
				must(os.WriteFile(filepath.Join(rec, "init-config.yaml"), b, 0o644))
			}
		}
		loader := filepath.Join(root, ggRoot, "alts", "current", "distro", "bin", "loader")
		must(os.MkdirAll(filepath.Dir(loader), 0o755))
		must(os.WriteFile(loader, []byte("#!/bin/sh\n"), 0o755))
		if slices.Contains(args, "--setup-system-service") {
			unit := filepath.Join(root, "etc", "systemd", "system", "greengrass.service")
			must(os.MkdirAll(filepath.Dir(unit), 0o755))
			must(os.WriteFile(unit, []byte("[Unit]\n"), 0o644))
		}
	case "getent":
		if !slices.Contains(lines(filepath.Join(rec, args[0])), args[1]) {
			os.Exit(2)
		}
		fmt.Println(args[1] + ":x:999:")
	case "groupadd", "useradd":
		db := map[string]string{"groupadd": "group", "useradd": "passwd"}[name]
		appendLine(filepath.Join(rec, db), args[len(args)-1])
	case "groupdel", "userdel":
		db := map[string]string{"groupdel": "group", "userdel": "passwd"}[name]
		p := filepath.Join(rec, db)
		left := slices.DeleteFunc(lines(p), func(s string) bool { return s == args[len(args)-1] })
		must(os.WriteFile(p, []byte(strings.Join(left, "\n")+"\n"), 0o644))
	case "systemctl":
		if len(args) > 0 && args[0] == "is-active" {
			fmt.Println("active")
		}
	default:
		fmt.Fprintln(os.Stderr, "standin: unknown program", name)
		os.Exit(127)
	}
}

func lines(p string) []string {
	b, _ := os.ReadFile(p)
	return strings.Fields(string(b))
}

func appendLine(p, s string) {
	f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	must(err)
	fmt.Fprintln(f, s)
	must(f.Close())
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "standin:", err)
		os.Exit(1)
	}
}
