package api

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/squibvm/squib/hv/hvtest"
)

// TestEntropy configures the entropy device as Firecracker's clients do:
// PUT /entropy bodies are parsed as Firecracker parses them (unknown fields
// refused, the token buckets' fields required), a rate limiter that would
// limit is refused, one that would not is accepted, GET /vm/config shows
// the device, a snapshot load is then refused (the device is a boot
// resource), the microVM starts with it (on hvtest's backend, which runs
// no guest), and PUT /entropy is refused once it has started.
func TestEntropy(t *testing.T) {
	ctl := newTestController(t, &hvtest.Hypervisor{})
	c := serve(t, ctl)
	entropy := func() string {
		t.Helper()
		var full map[string]json.RawMessage
		if err := within(c, "GET", "/vm/config", nil, &full); err != nil {
			t.Fatal(err)
		}
		return string(full["entropy"])
	}
	if e := entropy(); e != "null" {
		t.Errorf("entropy before PUT /entropy: %s, want null", e)
	}
	refuse(t, c, "PUT", "/entropy", `{"rate_limiter": null, "bogus": 1}`, deser+`json: unknown field "bogus"`)
	refuse(t, c, "PUT", "/entropy", `{"rate_limiter": {"bandwidth": {"size": 1}}}`, deser+"missing field `refill_time`.")
	refuse(t, c, "PUT", "/entropy", `{"rate_limiter": {"ops": {"size": 100, "refill_time": 1000}}}`,
		"Entropy device error: squibd does not rate-limit the entropy device")
	refuse(t, c, "PUT", "/entropy", `{"rate_limiter": {"ops": {"size": 1, "refill_time": 1, "colour": 1}}}`, deser+`json: unknown field "colour"`)
	if e := entropy(); e != "null" {
		t.Errorf("entropy after refused PUTs: %s, want null", e)
	}
	for _, body := range []string{`{}`, `{"rate_limiter": null}`, `{"rate_limiter": {"bandwidth": {"size": 0, "refill_time": 100}, "ops": null}}`} {
		if err := within(c, "PUT", "/entropy", json.RawMessage(body), nil); err != nil {
			t.Errorf("PUT /entropy %s: %v", body, err)
		}
	}
	if e := entropy(); e != `{"rate_limiter":null}` {
		t.Errorf("entropy after PUT /entropy: %s", e)
	}
	refuse(t, c, "PUT", "/snapshot/load", `{"snapshot_path": "s", "mem_file_path": "m"}`, errLoadAfterBootConfig.Error())

	kernel := filepath.Join(t.TempDir(), "Image")
	image := make([]byte, 4096) // an arm64 Image header: placed, never run
	binary.LittleEndian.PutUint64(image[0x10:], 8<<20)
	binary.LittleEndian.PutUint32(image[0x38:], 0x644D5241)
	if err := os.WriteFile(kernel, image, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][3]string{
		{"PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 64}`},
		{"PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path": %q}`, kernel)},
		{"PUT", "/actions", `{"action_type": "InstanceStart"}`},
	} {
		if err := within(c, r[0], r[1], json.RawMessage(r[2]), nil); err != nil {
			t.Fatalf("%s %s: %v", r[0], r[1], err)
		}
	}
	ctl.mu.Lock()
	rng := ctl.m.Config().RNG
	ctl.mu.Unlock()
	if !rng {
		t.Error("the microVM started without its entropy device")
	}
	refuse(t, c, "PUT", "/entropy", `{}`, errAfterStart.Error())
	if e := entropy(); e != `{"rate_limiter":null}` {
		t.Errorf("entropy after the start: %s", e)
	}
}
