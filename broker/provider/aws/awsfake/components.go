package awsfake

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// publicComponents are the AWS-provided components the fake knows, with
// their versions as "major.minor.firstPatch-lastPatch" ranges: a
// representative part of AWS's public catalogue (the components and
// versions ggfleet's tests and examples use, and their neighbours), not all
// of it. AddComponent adds more.
var publicComponents = map[string][]string{
	"aws.greengrass.Nucleus": {"2.0.0-5", "2.1.0-0", "2.2.0-0", "2.3.0-0", "2.4.0-0", "2.5.0-6", "2.6.0-0", "2.7.0-0",
		"2.8.0-1", "2.9.0-6", "2.10.0-3", "2.11.0-3", "2.12.0-6", "2.13.0-0", "2.14.0-3"},
	"aws.greengrass.Cli": {"2.0.0-5", "2.1.0-0", "2.2.0-0", "2.3.0-0", "2.4.0-0", "2.5.0-6", "2.6.0-0", "2.7.0-0",
		"2.8.0-1", "2.9.0-6", "2.10.0-3", "2.11.0-3", "2.12.0-6", "2.13.0-0", "2.14.0-3"},
	"aws.greengrass.clientdevices.IPDetector":    {"2.0.0-0", "2.1.0-9", "2.2.0-0"},
	"aws.greengrass.clientdevices.Auth":          {"2.0.0-4", "2.1.0-0", "2.2.0-3", "2.3.0-2", "2.4.0-5", "2.5.0-1"},
	"aws.greengrass.clientdevices.mqtt.Moquette": {"2.0.0-2", "2.1.0-0", "2.2.0-0", "2.3.0-7"},
	"aws.greengrass.clientdevices.mqtt.EMQX":     {"1.0.0-0", "1.1.0-0", "1.2.0-2"},
	"aws.greengrass.clientdevices.mqtt.Bridge":   {"2.0.0-2", "2.1.0-1", "2.2.0-6", "2.3.0-2"},
	"aws.greengrass.LogManager":                  {"2.0.0-0", "2.1.0-3", "2.2.0-8", "2.3.0-9"},
	"aws.greengrass.ShadowManager":               {"2.0.0-6", "2.1.0-1", "2.2.0-4", "2.3.0-9"},
	"aws.greengrass.TokenExchangeService":        {"2.0.0-3"},
	"aws.greengrass.StreamManager":               {"2.0.0-15", "2.1.0-13", "2.2.0-1"},
	"aws.greengrass.SecureTunneling":             {"1.0.0-19"},
	"aws.greengrass.LocalDebugConsole":           {"2.0.0-2", "2.1.0-0", "2.2.0-8", "2.3.0-1", "2.4.0-2"},
	"aws.greengrass.telemetry.NucleusEmitter":    {"1.0.0-9"},
	"aws.greengrass.DockerApplicationManager":    {"2.0.0-11"},
	"aws.greengrass.SystemsManagerAgent":         {"1.0.0-0", "1.1.0-2", "1.2.0-6"},
}

// isPublic reports whether name version is in publicComponents.
func isPublic(name, version string) bool {
	major, minor, patch, ok := splitVersion(version)
	if !ok {
		return false
	}
	for _, r := range publicComponents[name] {
		mm, last, _ := strings.Cut(r, "-")
		rMajor, rMinor, first, _ := splitVersion(mm)
		lastPatch, _ := strconv.Atoi(last)
		if rMajor == major && rMinor == minor && patch >= first && patch <= lastPatch {
			return true
		}
	}
	return false
}

// splitVersion splits a plain major.minor.patch version.
func splitVersion(v string) (major, minor, patch int, ok bool) {
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return 0, 0, 0, false
	}
	var n [3]int
	for i, p := range parts {
		x, err := strconv.Atoi(p)
		if err != nil || x < 0 || strconv.Itoa(x) != p {
			return 0, 0, 0, false
		}
		n[i] = x
	}
	return n[0], n[1], n[2], true
}

// componentARN is the ARN of a component version; owner is "aws" for
// public components, else the account.
func componentARN(owner, name, version string) string {
	return fmt.Sprintf("arn:aws:greengrass:%s:%s:components:%s:versions:%s", Region, owner, name, version)
}

var componentNameRE = regexp.MustCompile(`^[^:\s]{1,128}$`)

// AddComponent makes a private component version in the fake's account,
// as CreateComponentVersion would; adding it again changes nothing.
func (f *Fake) AddComponent(name, version string) error {
	if !componentNameRE.MatchString(name) || !componentNameRE.MatchString(version) || len(version) > 64 {
		return fmt.Errorf("component %q version %q: give a name without ':' or spaces (at most 128 characters) and a version (at most 64)", name, version)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.components == nil {
		f.components = map[string]time.Time{}
	}
	a := componentARN(Account, name, version)
	if _, ok := f.components[a]; !ok {
		f.components[a] = time.Now()
	}
	return nil
}

// componentVersionARNRE is DescribeComponent's arn pattern (Greengrass V2
// API reference), with the owner, name and version captured.
var componentVersionARNRE = regexp.MustCompile(`^arn:[^:]*:greengrass:([^:]*):(aws|[0-9]+):components:([^:]+):versions:([^:]+)$`)

// publicCreated is the creation time the fake reports for public components.
var publicCreated = time.Date(2020, 12, 15, 0, 0, 0, 0, time.UTC)

func (f *Fake) describeComponent(r *http.Request) (int, any, *apiError) {
	a := r.PathValue("arn")
	m := componentVersionARNRE.FindStringSubmatch(a)
	if m == nil {
		return 0, nil, validation("1 validation error detected: Value '%s' at 'arn' failed to satisfy constraint: Member must satisfy regular expression pattern: arn:[^:]*:greengrass:[^:]*:(aws|[0-9]+):components:[^:]+:versions:[^:]+", a)
	}
	region, owner, name, version := m[1], m[2], m[3], m[4]
	missing := errorf(http.StatusNotFound, "ResourceNotFoundException", "Component version %s not found", a)
	missing.Extra = map[string]any{"resourceId": a, "resourceType": "componentVersion"}
	if region != Region {
		return 0, nil, missing
	}
	created, publisher := publicCreated, "AWS"
	switch owner {
	case "aws":
		if !isPublic(name, version) {
			return 0, nil, missing
		}
	case Account:
		f.mu.Lock()
		t, ok := f.components[a]
		f.mu.Unlock()
		if !ok {
			return 0, nil, missing
		}
		created, publisher = t, Account
	default:
		return 0, nil, errorf(http.StatusForbidden, "AccessDeniedException", "User is not authorized to access component %s of account %s", name, owner)
	}
	return http.StatusOK, map[string]any{
		"arn": a, "componentName": name, "componentVersion": version, "creationTimestamp": epoch(created),
		"publisher": publisher, "description": "Component " + name,
		"status":    map[string]any{"componentState": "DEPLOYABLE", "message": "NONE", "errors": map[string]string{}},
		"platforms": []map[string]any{{"name": "linux", "attributes": map[string]string{"os": "linux"}}},
		"tags":      map[string]string{},
	}, nil
}
