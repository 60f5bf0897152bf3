package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/assetlibrary/assetlibraryfake"
)

// TestAssetLibraryTargets resolves deployment targets through a CDF Asset
// Library (an HTTP fake of its API): device ids, a group path with more
// members than one page, and a search query — unioned and de-duplicated.
func TestAssetLibraryTargets(t *testing.T) {
	al := assetlibraryfake.New(t)
	arn := func(thing string) string { return "arn:aws:iot:us-east-1:123456789012:thing/" + thing }
	al.AddGroup(assetlibraryfake.Group{GroupPath: "/site/a"})
	var want []string
	for i := range 120 {
		thing := fmt.Sprintf("site-a-%03d", i)
		al.AddDevice(assetlibraryfake.Device{DeviceID: fmt.Sprintf("dev-%03d", i), AwsIotThingArn: arn(thing), Groups: []string{"/site/a"}})
		want = append(want, thing)
	}
	al.AddDevice(assetlibraryfake.Device{DeviceID: "by-id", AwsIotThingArn: arn("by-id-thing")})
	al.AddDevice(assetlibraryfake.Device{DeviceID: "other-region", AwsIotThingArn: "arn:aws:iot:eu-west-1:123456789012:thing/far-away"})
	al.AddDevice(assetlibraryfake.Device{DeviceID: "by-query", AwsIotThingArn: arn("by-query-thing"), Attributes: map[string]string{"site": "b"}})
	want = append([]string{"by-id-thing"}, want...)
	want = append(want, "by-query-thing")

	b := startBroker(t, "--asset-library-url", al.URL)
	b.must(201, "POST", "/templates", map[string]any{"name": "T", "components": []map[string]any{{"key": "aws.greengrass.Cli", "version": "2.4.0"}}})
	r := b.must(202, "POST", "/deploymentTasks", map[string]any{"template": map[string]any{"name": "T"},
		"targets": map[string]any{
			"assetLibraryDeviceIds":  []string{"by-id", "other-region", "dev-000"},
			"assetLibraryGroupPaths": []string{"/site/a"},
			"assetLibraryQuery":      map[string]any{"types": []string{"device"}, "eq": []map[string]any{{"field": "site", "value": "b"}}},
		}})
	id := r.Header.Get("x-taskid")
	task := b.waitTask("/deploymentTasks/"+id, 2*time.Minute)
	got := map[string]bool{}
	for _, it := range task["deployments"].([]any) {
		item := it.(map[string]any)
		got[fmt.Sprint(item["coreName"])] = true
		// None of these things is a registered core.
		if item["taskStatus"] != "Failure" || item["statusMessage"] != "Core device not registered with Greengrass V2" {
			t.Fatalf("item = %v", item)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("resolved %d targets, want %d", len(got), len(want))
	}
	for _, w := range want {
		if !got[w] {
			t.Fatalf("target %s missing", w)
		}
	}
	if got["far-away"] {
		t.Fatal("a thing from another region was targeted")
	}
	paged := 0
	for _, req := range al.Requests() {
		if req.Query.Get("offset") != "" && req.Query.Get("offset") != "0" {
			paged++
		}
	}
	if paged == 0 {
		t.Fatal("the group's members were not read page by page")
	}

	// Without --asset-library-url, Asset Library targets are a clear 400.
	b2 := startBroker(t)
	b2.must(201, "POST", "/templates", map[string]any{"name": "T", "components": []map[string]any{{"key": "aws.greengrass.Cli", "version": "2.4.0"}}})
	if r := b2.do("POST", "/deploymentTasks", map[string]any{"template": map[string]any{"name": "T"},
		"targets": map[string]any{"assetLibraryDeviceIds": []string{"x"}}}); r.Status != 400 {
		t.Fatalf("asset library target without a URL: %d %s", r.Status, r.Body)
	}
}
