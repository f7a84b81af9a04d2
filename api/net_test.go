package api

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"testing"

	"github.com/squibvm/squib/hv/hvtest"
)

// TestNetworkInterfaces configures interfaces as Firecracker's clients do
// and with squib's own backends: bodies checked (iface_id required and the
// path's, a MAC, one backend, forwards only on the user-mode network, rate
// limiters only ones that do not limit), two interfaces refused one MAC or
// one tap, a second PUT of an id replacing the first, GET /vm/config
// showing them; PATCH refused before the start. The microVM starts with a
// user-mode interface and a unixgram one (a real peer socket); PATCH then
// takes a rate limiter that does not limit and refuses one that would. A
// snapshot loads into another squibd with network_overrides moving the
// unixgram interface to another peer and the published port elsewhere;
// overrides of an unknown interface or of another backend kind are
// refused.
func TestNetworkInterfaces(t *testing.T) {
	h := &hvtest.Hypervisor{}
	ctl, c := serveTestController(t, h)
	dir := t.TempDir()
	peer := func(name string) string {
		path := filepath.Join(dir, name)
		l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return path
	}
	gv, gv2 := peer("gvproxy.sock"), peer("gvproxy2.sock")
	tcp, udp := freePort(t, "tcp"), freePort(t, "udp")
	nets := func(c *Client) string {
		t.Helper()
		var full map[string]json.RawMessage
		if err := within(c, "GET", "/vm/config", nil, &full); err != nil {
			t.Fatal(err)
		}
		return string(full["network-interfaces"])
	}
	const ni = "/network-interfaces/"
	refuse(t, c, "PUT", ni+"eth0", `{"host_dev_name": "tap0"}`, deser+"missing field `iface_id`.")
	refuse(t, c, "PUT", ni+"eth0", `{"iface_id": "eth1", "host_dev_name": "tap0"}`, "The id from the path does not match the id from the body!")
	refuse(t, c, "PUT", ni+"eth-0", `{"iface_id": "eth-0", "host_dev_name": "tap0"}`, "invalid interface id")
	refuse(t, c, "PUT", ni+"eth0", `{"iface_id": "eth0"}`, "give exactly one backend")
	refuse(t, c, "PUT", ni+"eth0", `{"iface_id": "eth0", "host_dev_name": "tap0", "user": {}}`, "give exactly one backend")
	refuse(t, c, "PUT", ni+"eth0", `{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "zz"}`, `guest_mac "zz" is not a MAC address`)
	refuse(t, c, "PUT", ni+"eth0", `{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "01:00:00:00:00:01"}`, "not a unicast Ethernet address")
	refuse(t, c, "PUT", ni+"eth0", `{"iface_id": "eth0", "host_dev_name": "tap0", "mtu": 9000}`, deser+`json: unknown field "mtu"`)
	refuse(t, c, "PUT", ni+"eth0", `{"iface_id": "eth0", "user": {"publish": ["80"]}}`, "HOST_PORT:GUEST_PORT")
	refuse(t, c, "PUT", ni+"eth0", `{"iface_id": "eth0", "unixgram_path": "x", "user": {"publish": ["8080:80"]}}`, "give exactly one backend")
	refuse(t, c, "PUT", ni+"eth0", `{"iface_id": "eth0", "host_dev_name": "tap0", "vfkit_magic": true}`, "vfkit_magic needs unixgram_path")
	refuse(t, c, "PUT", ni+"eth0", `{"iface_id": "eth0", "host_dev_name": "tap0", "rx_rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 100}}}`,
		"squibd does not rate-limit network interfaces")
	refuse(t, c, "PATCH", ni+"eth0", `{"iface_id": "eth0"}`, "not supported before starting the microVM")
	if n := nets(c); n != "[]" {
		t.Errorf("interfaces before any PUT: %s", n)
	}
	mustDo(t, c, "PUT", ni+"eth0", `{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:AC:10:00:02"}`)
	refuse(t, c, "PUT", ni+"eth1", `{"iface_id": "eth1", "host_dev_name": "tap1", "guest_mac": "06:00:ac:10:00:02"}`, "The MAC address is already in use")
	refuse(t, c, "PUT", ni+"eth1", `{"iface_id": "eth1", "host_dev_name": "tap0"}`, "tap tap0 is already in use by interface eth0")
	// A second PUT of eth0 replaces it: the user-mode network, a port published.
	mustDo(t, c, "PUT", ni+"eth0", `{"iface_id": "eth0", "user": {"publish": ["127.0.0.1:`+tcp+`:80"]}, "tx_rate_limiter": {"bandwidth": {"size": 0, "refill_time": 100}}}`)
	mustDo(t, c, "PUT", ni+"eth1", `{"iface_id": "eth1", "guest_mac": "06:00:ac:10:00:03", "unixgram_path": `+jsonString(gv)+`, "vfkit_magic": true}`)
	want := `[{"iface_id":"eth0","user":{"publish":["tcp:127.0.0.1:` + tcp + `:80"]}},` +
		`{"iface_id":"eth1","guest_mac":"06:00:ac:10:00:03","unixgram_path":` + jsonString(gv) + `,"vfkit_magic":true}]`
	if n := nets(c); n != want {
		t.Errorf("GET /vm/config interfaces:\n%s\nwant\n%s", n, want)
	}
	mustDo(t, c, "PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 64}`)
	mustDo(t, c, "PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path": %q}`, writeImage(t, dir)))
	mustDo(t, c, "PUT", "/actions", `{"action_type": "InstanceStart"}`)
	ctl.mu.Lock()
	got := ctl.m.Config().Nets
	ctl.mu.Unlock()
	if len(got) != 2 || !got[0].User || got[1].Unixgram != gv {
		t.Errorf("the microVM started with interfaces %+v", got)
	}
	refuse(t, c, "PUT", ni+"eth2", `{"iface_id": "eth2", "user": {}}`, errAfterStart.Error())
	mustDo(t, c, "PATCH", ni+"eth0", `{"iface_id": "eth0", "rx_rate_limiter": {"ops": {"size": 0, "refill_time": 0}}}`)
	refuse(t, c, "PATCH", ni+"eth0", `{"iface_id": "eth0", "rx_rate_limiter": {"ops": {"size": 10, "refill_time": 10}}}`, "squibd does not rate-limit")
	refuse(t, c, "PATCH", ni+"eth9", `{"iface_id": "eth9"}`, `no network interface "eth9"`)
	refuse(t, c, "PATCH", ni+"eth0", `{"iface_id": "eth0", "host_dev_name": "tap1"}`, deser+`json: unknown field "host_dev_name"`)

	mustDo(t, c, "PATCH", "/vm", `{"state": "Paused"}`)
	state, mem := filepath.Join(dir, "vm.state"), filepath.Join(dir, "vm.mem")
	mustDo(t, c, "PUT", "/snapshot/create", `{"snapshot_path": `+jsonString(state)+`, "mem_file_path": `+jsonString(mem)+`}`)
	load := `{"snapshot_path": ` + jsonString(state) + `, "mem_backend": {"backend_type": "File", "backend_path": ` + jsonString(mem) + `}`
	_, c2 := serveTestController(t, h)
	refuse(t, c2, "PUT", "/snapshot/load", load+`, "network_overrides": [{"iface_id": "eth7", "host_dev_name": "tap7"}]}`, `the snapshot has no network interface "eth7"`)
	refuse(t, c2, "PUT", "/snapshot/load", load+`, "network_overrides": [{"iface_id": "eth1", "host_dev_name": "tap7"}]}`, "interface eth1 has no tap to replace")
	refuse(t, c2, "PUT", "/snapshot/load", load+`, "network_overrides": [{"iface_id": "eth1", "publish": []}]}`, "is not on the user-mode network")
	refuse(t, c2, "PUT", "/snapshot/load", load+`, "network_overrides": [{"iface_id": "eth1"}]}`, "give host_dev_name, unixgram_path or publish")
	mustDo(t, c2, "PUT", "/snapshot/load", load+`, "network_overrides": [{"iface_id": "eth1", "unixgram_path": `+jsonString(gv2)+`}, {"iface_id": "eth0", "publish": ["udp:127.0.0.1:`+udp+`:53"]}]}`)
	want = `[{"iface_id":"eth0","guest_mac":"5a:94:ef:e4:0c:ee","user":{"publish":["udp:127.0.0.1:` + udp + `:53"]}},` +
		`{"iface_id":"eth1","guest_mac":"06:00:ac:10:00:03","unixgram_path":` + jsonString(gv2) + `,"vfkit_magic":true}]`
	if n := nets(c2); n != want {
		t.Errorf("GET /vm/config interfaces of the loaded snapshot:\n%s\nwant\n%s", n, want)
	}
}

// TestNetworkConfigFile: --config-file's network-interfaces give the
// microVM its interfaces.
func TestNetworkConfigFile(t *testing.T) {
	dir := t.TempDir()
	cfg, err := ParseConfig(fmt.Appendf(nil, `{"boot-source": {"kernel_image_path": %q},
		"machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
		"network-interfaces": [{"iface_id": "eth0", "user": {}}]}`, writeImage(t, dir)))
	if err != nil {
		t.Fatal(err)
	}
	ctl := newTestController(t, &hvtest.Hypervisor{})
	if err := ctl.Configure(cfg); err != nil {
		t.Fatal(err)
	}
	ctl.mu.Lock()
	got := ctl.m.Config().Nets
	ctl.mu.Unlock()
	if len(got) != 1 || got[0].ID != "eth0" || !got[0].User {
		t.Errorf("started with interfaces %+v", got)
	}
	if _, err := ParseConfig([]byte(`{"network-interfaces": [{"iface_id": "eth0", "user": {}, "bogus": 1}]}`)); err == nil {
		t.Error("an unknown field in a network interface accepted")
	}
}

// freePort is a port of network (tcp or udp) on 127.0.0.1 that was free
// a moment ago.
func freePort(t *testing.T, network string) string {
	t.Helper()
	var addr net.Addr
	if network == "tcp" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = l.Addr()
		l.Close()
	} else {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = c.LocalAddr()
		c.Close()
	}
	_, port, _ := net.SplitHostPort(addr.String())
	return port
}
