package assetlibrary_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/assetlibrary"
	"github.com/ggfleet/ggfleet/broker/assetlibrary/assetlibraryfake"
	"github.com/ggfleet/ggfleet/broker/errkind"
)

func arn(region, thing string) string {
	return "arn:aws:iot:" + region + ":123456789012:thing/" + thing
}

func newClient(t *testing.T, f *assetlibraryfake.Fake, pageSize int) *assetlibrary.Client {
	t.Helper()
	c, err := assetlibrary.New(assetlibrary.Config{
		BaseURL:      f.URL,
		Region:       "us-east-1",
		Headers:      map[string]string{"x-api-key": "k1"},
		PageSize:     pageSize,
		Retries:      2,
		RetryWaitMin: time.Millisecond,
		RetryWaitMax: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func TestDeviceThings(t *testing.T) {
	f := assetlibraryfake.New(t)
	f.AddDevice(assetlibraryfake.Device{DeviceID: "d1", AwsIotThingArn: arn("us-east-1", "core-1")})
	f.AddDevice(assetlibraryfake.Device{DeviceID: "d2"}) // no thing
	f.AddDevice(assetlibraryfake.Device{DeviceID: "d3", AwsIotThingArn: arn("eu-west-1", "core-3")})
	f.AddDevice(assetlibraryfake.Device{DeviceID: "d4", AwsIotThingArn: arn("us-east-1", "core-4")})
	f.AddDevice(assetlibraryfake.Device{DeviceID: "d5", AwsIotThingArn: arn("us-east-1", "core-1")}) // same thing as d1
	c := newClient(t, f, 2)

	got, err := c.DeviceThings(context.Background(), []string{"d4", "d1", "d2", "d3", "unknown", "d5"})
	if err != nil {
		t.Fatalf("DeviceThings: %v", err)
	}
	if want := []string{"core-4", "core-1"}; !slices.Equal(got, want) {
		t.Errorf("things = %q, want %q (order kept, no ARN and other region skipped, duplicates removed)", got, want)
	}
	reqs := f.Requests()
	// Page size 2: three bulk gets.
	if len(reqs) != 3 {
		t.Fatalf("requests = %d, want 3 (ids in chunks of the page size)", len(reqs))
	}
	if r := reqs[0]; r.Path != "/bulkdevices" || r.Query.Get("deviceIds") != "d4,d1" ||
		r.Headers.Get("Accept") != assetlibrary.MediaType || r.Headers.Get("x-api-key") != "k1" {
		t.Errorf("first request = %s %v accept=%q key=%q", r.Path, r.Query, r.Headers.Get("Accept"), r.Headers.Get("x-api-key"))
	}
}

func TestGroupThingsPaging(t *testing.T) {
	f := assetlibraryfake.New(t)
	f.AddGroup(assetlibraryfake.Group{GroupPath: "/site/a"})
	f.AddGroup(assetlibraryfake.Group{GroupPath: "/site/b"})
	for i, id := range []string{"a1", "a2", "a3", "a4", "a5"} {
		f.AddDevice(assetlibraryfake.Device{DeviceID: id, Groups: []string{"/site/a"}, AwsIotThingArn: arn("us-east-1", "core-"+id)})
		if i == 4 {
			f.AddDevice(assetlibraryfake.Device{DeviceID: id, Groups: []string{"/site/a", "/site/b"}, AwsIotThingArn: arn("us-east-1", "core-"+id)})
		}
	}
	f.AddDevice(assetlibraryfake.Device{DeviceID: "b1", Groups: []string{"/site/b"}, AwsIotThingArn: arn("us-east-1", "core-b1")})
	f.AddDevice(assetlibraryfake.Device{DeviceID: "b2", Groups: []string{"/site/b"}}) // no thing
	c := newClient(t, f, 2)

	got, err := c.GroupThings(context.Background(), []string{"/site/a", "/site/b"})
	if err != nil {
		t.Fatalf("GroupThings: %v", err)
	}
	want := []string{"core-a1", "core-a2", "core-a3", "core-a4", "core-a5", "core-b1"}
	if !slices.Equal(got, want) {
		t.Errorf("things = %q, want %q", got, want)
	}
	var seen []string
	for _, r := range f.Requests() {
		seen = append(seen, r.Path+"?offset="+r.Query.Get("offset")+"&count="+r.Query.Get("count"))
	}
	wantReqs := []string{
		"/groups/%2Fsite%2Fa/members/devices?offset=0&count=2",
		"/groups/%2Fsite%2Fa/members/devices?offset=2&count=2",
		"/groups/%2Fsite%2Fa/members/devices?offset=4&count=2",
		"/groups/%2Fsite%2Fb/members/devices?offset=0&count=2",
		"/groups/%2Fsite%2Fb/members/devices?offset=2&count=2",
	}
	if !slices.Equal(seen, wantReqs) {
		t.Errorf("requests =\n%s\nwant\n%s", strings.Join(seen, "\n"), strings.Join(wantReqs, "\n"))
	}
}

func TestQueryThingsDevicesAndGroups(t *testing.T) {
	f := assetlibraryfake.New(t)
	f.AddGroup(assetlibraryfake.Group{GroupPath: "/fleet", Attributes: map[string]string{"model": "X:1 a"}})
	f.AddGroup(assetlibraryfake.Group{GroupPath: "/other"})
	f.AddDevice(assetlibraryfake.Device{DeviceID: "d1", TemplateID: "gateway", AwsIotThingArn: arn("us-east-1", "core-1"), Attributes: map[string]string{"model": "X:1 a"}})
	f.AddDevice(assetlibraryfake.Device{DeviceID: "d2", AwsIotThingArn: arn("us-east-1", "core-2"), Groups: []string{"/fleet"}})
	f.AddDevice(assetlibraryfake.Device{DeviceID: "d3", AwsIotThingArn: arn("us-east-1", "core-3"), Groups: []string{"/fleet"}, Attributes: map[string]string{"model": "X:1 a"}})
	f.AddDevice(assetlibraryfake.Device{DeviceID: "d4", AwsIotThingArn: arn("ap-south-1", "core-4"), Attributes: map[string]string{"model": "X:1 a"}})
	f.AddDevice(assetlibraryfake.Device{DeviceID: "d5", AwsIotThingArn: arn("us-east-1", "core-5"), Groups: []string{"/other"}})
	c := newClient(t, f, 2)

	query := json.RawMessage(`{"eq":[{"field":"model","value":"X:1 a"}]}`)
	got, err := c.QueryThings(context.Background(), query)
	if err != nil {
		t.Fatalf("QueryThings: %v", err)
	}
	// Search hits: group /fleet, then devices d1, d3, d4 (other region);
	// /fleet expands to d2, d3.
	if want := []string{"core-1", "core-3", "core-2"}; !slices.Equal(got, want) {
		t.Errorf("things = %q, want %q", got, want)
	}
	reqs := f.Requests()
	if reqs[0].Path != "/search" || reqs[0].Query.Get("eq") != "model:X%3A1%20a" {
		t.Errorf("first request = %s eq=%q, want /search eq=model:X%%3A1%%20a", reqs[0].Path, reqs[0].Query.Get("eq"))
	}
	var searches int
	for _, r := range reqs {
		if r.Path == "/search" {
			searches++
		}
	}
	if searches != 3 { // 4 hits, page size 2: pages of 2, 2, 0
		t.Errorf("search requests = %d, want 3", searches)
	}
}

func TestRetries(t *testing.T) {
	f := assetlibraryfake.New(t)
	f.AddDevice(assetlibraryfake.Device{DeviceID: "d1", AwsIotThingArn: arn("us-east-1", "core-1")})
	c := newClient(t, f, 100)

	t.Run("recovers after 503s", func(t *testing.T) {
		f.Fail(2, 503, "busy")
		before := len(f.Requests())
		got, err := c.DeviceThings(context.Background(), []string{"d1"})
		if err != nil {
			t.Fatalf("DeviceThings: %v", err)
		}
		if !slices.Equal(got, []string{"core-1"}) {
			t.Errorf("things = %q", got)
		}
		if n := len(f.Requests()) - before; n != 3 {
			t.Errorf("attempts = %d, want 3", n)
		}
	})
	t.Run("gives up after the retries", func(t *testing.T) {
		f.Fail(3, 503, "still busy")
		before := len(f.Requests())
		_, err := c.DeviceThings(context.Background(), []string{"d1"})
		if !errkind.Is(err, errkind.Unavailable) || !strings.Contains(err.Error(), "still busy") {
			t.Errorf("err = %v, want Unavailable with the message", err)
		}
		if n := len(f.Requests()) - before; n != 3 {
			t.Errorf("attempts = %d, want 3 (1 + 2 retries)", n)
		}
	})
}

func TestRejections(t *testing.T) {
	f := assetlibraryfake.New(t)
	f.AddGroup(assetlibraryfake.Group{GroupPath: "/site"})
	c := newClient(t, f, 100)
	ctx := context.Background()

	t.Run("400 is Invalid with its message, not retried", func(t *testing.T) {
		f.Fail(1, 400, "Invalid search query")
		before := len(f.Requests())
		_, err := c.QueryThings(ctx, json.RawMessage(`{"types":["device"]}`))
		if !errkind.Is(err, errkind.Invalid) || !strings.Contains(errkind.Message(err), "Invalid search query") {
			t.Errorf("err = %v (message %q), want Invalid naming the Asset Library's message", err, errkind.Message(err))
		}
		if n := len(f.Requests()) - before; n != 1 {
			t.Errorf("attempts = %d, want 1", n)
		}
	})
	t.Run("unknown group is Invalid", func(t *testing.T) {
		_, err := c.GroupThings(ctx, []string{"/nope"})
		if !errkind.Is(err, errkind.Invalid) || !strings.Contains(errkind.Message(err), "Group '/nope' not found") {
			t.Errorf("err = %v, want Invalid naming the group", err)
		}
	})
	t.Run("unknown endpoint is a JSON 404", func(t *testing.T) {
		c2, err := assetlibrary.New(assetlibrary.Config{BaseURL: f.URL + "/prefix", Retries: -1})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c2.DeviceThings(ctx, []string{"d1"})
		if !errkind.Is(err, errkind.Invalid) || !strings.Contains(errkind.Message(err), "Not found") {
			t.Errorf("err = %v, want Invalid with the 404 message", err)
		}
	})
}

func TestParseQuery(t *testing.T) {
	tests := []struct {
		name, query, wantErr string
	}{
		{"types", `{"types":["device"],"ntypes":["group"]}`, ""},
		{"traversal", `{"startsWith":[{"traversals":[{"relation":"manufactured_by","direction":"out"}],"field":"name","value":"Mfg"}]}`, ""},
		{"numbers and booleans", `{"lt":[{"field":"fw","value":3}],"eq":[{"field":"on","value":true}]}`, ""},
		{"unknown field", `{"eqs":[{"field":"a","value":"b"}]}`, `unknown field "eqs"`},
		{"empty", `{}`, "has no criteria"},
		{"facet", `{"types":["device"],"facetField":{"field":"model"}}`, "facetField cannot select"},
		{"summarize", `{"types":["device"],"summarize":true}`, "summarize cannot select"},
		{"bad direction", `{"eq":[{"traversals":[{"relation":"r","direction":"up"}],"field":"a","value":"b"}]}`, `direction is "in" or "out"`},
		{"null value", `{"eq":[{"field":"a","value":null}]}`, "not null"},
		{"missing value", `{"eq":[{"field":"a"}]}`, "value is missing"},
		{"colon in field", `{"eq":[{"field":"a:b","value":"c"}]}`, "without ':'"},
		{"not an object", `[1]`, "not a valid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := assetlibrary.ParseQuery(json.RawMessage(tt.query))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseQuery: %v", err)
				}
				return
			}
			if !errkind.Is(err, errkind.Invalid) || !strings.Contains(errkind.Message(err), tt.wantErr) {
				t.Errorf("err = %v, want Invalid with a message containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseThingArn(t *testing.T) {
	tests := []struct {
		arn, name, region string
		ok                bool
	}{
		{"arn:aws:iot:us-east-1:123456789012:thing/MyLightBulb", "MyLightBulb", "us-east-1", true},
		{"arn:aws-cn:iot:cn-north-1:123456789012:thing/core_1", "core_1", "cn-north-1", true},
		{"arn:aws:iot:us-east-1:123456789012:thinggroup/g", "", "", false},
		{"arn:aws:iot:us-east-1:123456789012:thing/", "", "", false},
		{"arn:aws:s3:::bucket", "", "", false},
		{"core-1", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.arn, func(t *testing.T) {
			name, region, ok := assetlibrary.ParseThingArn(tt.arn)
			if name != tt.name || region != tt.region || ok != tt.ok {
				t.Errorf("ParseThingArn = %q %q %v, want %q %q %v", name, region, ok, tt.name, tt.region, tt.ok)
			}
		})
	}
}

func TestNewRejectsBadBaseURL(t *testing.T) {
	for _, u := range []string{"", "ftp://x", "not a url", "http://h/p?x=1"} {
		if _, err := assetlibrary.New(assetlibrary.Config{BaseURL: u}); !errkind.Is(err, errkind.Invalid) {
			t.Errorf("New(%q) err = %v, want Invalid", u, err)
		}
	}
}
