package api

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/squibvm/squib/devices/vsock"
	"github.com/squibvm/squib/hv/hvtest"
)

// TestVsock configures vsock as Firecracker's clients do: PUT /vsock
// bodies parsed as Firecracker parses them (guest_cid a u32, both fields
// required, unknown fields refused, vsock_id accepted and dropped), the
// reserved CIDs and a socket path in use or not a socket refused, a second
// PUT replacing the first, GET /vm/config showing it, a snapshot load then
// refused (a boot resource); the microVM starts with it, its socket bound,
// and PUT /vsock is refused after the start. A snapshot of it loads into
// another squibd only with vsock_override while the first holds the
// socket, and GET /vm/config then names the new socket.
func TestVsock(t *testing.T) {
	h := &hvtest.Hypervisor{}
	ctl, c := serveTestController(t, h)
	dir := t.TempDir()
	uds, other, clone := filepath.Join(dir, "v.sock"), filepath.Join(dir, "other.sock"), filepath.Join(dir, "clone.sock")
	vsockOf := func(c *Client) string {
		t.Helper()
		var full map[string]json.RawMessage
		if err := within(c, "GET", "/vm/config", nil, &full); err != nil {
			t.Fatal(err)
		}
		return string(full["vsock"])
	}
	if v := vsockOf(c); v != "null" {
		t.Errorf("vsock before PUT /vsock: %s, want null", v)
	}
	live, err := net.Listen("unix", filepath.Join(dir, "live.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	refuse(t, c, "PUT", "/vsock", `{"uds_path": `+jsonString(uds)+`}`, deser+"missing field `guest_cid`.")
	refuse(t, c, "PUT", "/vsock", `{"guest_cid": 3}`, deser+"missing field `uds_path`.")
	refuse(t, c, "PUT", "/vsock", `{"guest_cid": 3, "uds_path": `+jsonString(uds)+`, "cid": 4}`, deser+`json: unknown field "cid"`)
	refuse(t, c, "PUT", "/vsock", `{"guest_cid": 4294967296, "uds_path": `+jsonString(uds)+`}`, deser+"json: cannot unmarshal number 4294967296")
	refuse(t, c, "PUT", "/vsock", `{"guest_cid": -3, "uds_path": `+jsonString(uds)+`}`, deser+"json: cannot unmarshal number -3")
	refuse(t, c, "PUT", "/vsock", `{"guest_cid": "3", "uds_path": `+jsonString(uds)+`}`, deser+"json: cannot unmarshal string")
	for _, cid := range []string{"0", "1", "2", "4294967295"} {
		refuse(t, c, "PUT", "/vsock", `{"guest_cid": `+cid+`, "uds_path": `+jsonString(uds)+`}`, "Vsock config error: guest CID "+cid+" is reserved")
	}
	refuse(t, c, "PUT", "/vsock", `{"guest_cid": 3, "uds_path": ""}`, "Vsock config error: no socket path")
	refuse(t, c, "PUT", "/vsock", `{"guest_cid": 3, "uds_path": `+jsonString(live.Addr().String())+`}`, "Vsock config error: "+live.Addr().String()+": another process accepts connections on it")
	refuse(t, c, "PUT", "/vsock", `{"guest_cid": 3, "uds_path": `+jsonString(file)+`}`, "Vsock config error: "+file+" exists and is not a socket")
	if v := vsockOf(c); v != "null" {
		t.Errorf("vsock after refused PUTs: %s, want null", v)
	}
	mustDo(t, c, "PUT", "/vsock", `{"vsock_id": "vsock0", "guest_cid": 3, "uds_path": `+jsonString(other)+`}`)
	mustDo(t, c, "PUT", "/vsock", `{"guest_cid": 5, "uds_path": `+jsonString(uds)+`}`) // replaces it
	if v, want := vsockOf(c), `{"guest_cid":5,"uds_path":`+jsonString(uds)+`}`; v != want {
		t.Errorf("vsock after PUT /vsock: %s, want %s", v, want)
	}
	refuse(t, c, "PUT", "/snapshot/load", `{"snapshot_path": "s", "mem_file_path": "m"}`, errLoadAfterBootConfig.Error())
	mustDo(t, c, "PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 64}`)
	mustDo(t, c, "PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path": %q}`, writeImage(t, dir)))
	mustDo(t, c, "PUT", "/actions", `{"action_type": "InstanceStart"}`)
	ctl.mu.Lock()
	got := ctl.m.Config().Vsock
	ctl.mu.Unlock()
	if got == nil || *got != (vsock.Config{CID: 5, UDSPath: uds}) {
		t.Errorf("the microVM started with vsock %+v", got)
	}
	if err := vsock.CheckPath(uds); err == nil {
		t.Error("the started microVM's socket is not bound")
	}
	if _, err := os.Lstat(other); err == nil {
		t.Error("the replaced configuration's socket was bound")
	}
	refuse(t, c, "PUT", "/vsock", `{"guest_cid": 3, "uds_path": `+jsonString(other)+`}`, errAfterStart.Error())

	mustDo(t, c, "PATCH", "/vm", `{"state": "Paused"}`)
	state, mem := filepath.Join(dir, "vm.state"), filepath.Join(dir, "vm.mem")
	mustDo(t, c, "PUT", "/snapshot/create", `{"snapshot_path": `+jsonString(state)+`, "mem_file_path": `+jsonString(mem)+`}`)
	load := `{"snapshot_path": ` + jsonString(state) + `, "mem_backend": {"backend_type": "File", "backend_path": ` + jsonString(mem) + `}`
	_, c2 := serveTestController(t, h)
	refuse(t, c2, "PUT", "/snapshot/load", load+`, "vsock_override": {}}`, deser+"missing field `uds_path`.")
	refuse(t, c2, "PUT", "/snapshot/load", load+`, "vsock_override": {"uds_path": "x", "guest_cid": 3}}`, deser+`json: unknown field "guest_cid"`)
	refuse(t, c2, "PUT", "/snapshot/load", load+`}`, "another process accepts connections on it (a clone of this snapshot?): "+
		"give this microVM a socket of its own with vsock_override")
	_, c3 := serveTestController(t, h)
	mustDo(t, c3, "PUT", "/snapshot/load", load+`, "vsock_override": {"uds_path": `+jsonString(clone)+`}}`)
	if v, want := vsockOf(c3), `{"guest_cid":5,"uds_path":`+jsonString(clone)+`}`; v != want {
		t.Errorf("vsock of the loaded snapshot: %s, want %s", v, want)
	}
}

// TestVsockConfigFile: --config-file's vsock (GET /vm/config's schema)
// gives the microVM it starts its vsock device, bound on its socket, and
// GET /vm/config shows that section as the file had it.
func TestVsockConfigFile(t *testing.T) {
	dir := t.TempDir()
	uds := filepath.Join(dir, "v.sock")
	cfg, err := ParseConfig(fmt.Appendf(nil, `{"boot-source": {"kernel_image_path": %q},
		"machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
		"vsock": {"guest_cid": 42, "uds_path": %q}}`, writeImage(t, dir), uds))
	if err != nil {
		t.Fatal(err)
	}
	ctl := newTestController(t, &hvtest.Hypervisor{})
	if err := ctl.Configure(cfg); err != nil {
		t.Fatal(err)
	}
	ctl.mu.Lock()
	got := ctl.m.Config().Vsock
	ctl.mu.Unlock()
	if got == nil || *got != (vsock.Config{CID: 42, UDSPath: uds}) {
		t.Errorf("started with vsock %+v", got)
	}
	if v := ctl.fullConfig().Vsock; v == nil || *v.GuestCID != 42 || *v.UDSPath != uds || v.VsockID != nil {
		t.Errorf("GET /vm/config vsock %+v", v)
	}
	if err := vsock.CheckPath(uds); err == nil {
		t.Error("the socket is not bound")
	}
}
