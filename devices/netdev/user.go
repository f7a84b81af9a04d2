package netdev

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/containers/gvisor-tap-vsock/pkg/types"
	"github.com/containers/gvisor-tap-vsock/pkg/virtualnetwork"
	"github.com/sirupsen/logrus"
)

// The user-mode network's addresses: gvproxy's defaults.
const (
	UserSubnet     = "192.168.127.0/24"
	UserGatewayIP  = "192.168.127.1"     // the gateway, DHCP and DNS server
	UserGatewayMAC = "5a:94:ef:e4:0c:dd" // the gateway's MAC
	UserGuestIP    = "192.168.127.2"     // the guest's address, leased to its MAC
	UserHostIP     = "192.168.127.254"   // the host's 127.0.0.1, as the guest reaches it
	UserMTU        = 65520               // the IP MTU, which the device and DHCP tell the guest
)

// DefaultUserMAC is the guest MAC a user-mode network leases UserGuestIP to
// when its configuration names none (gvproxy's default guest MAC, a locally
// administered unicast address): an interface without a MAC should give
// the guest this one. Do not modify it.
var DefaultUserMAC = net.HardwareAddr{0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee}

// maxUserFrame is the longest bare Ethernet frame either way: the MTU and
// an Ethernet header (no VLAN tag: the network does not take tagged frames).
const maxUserFrame = UserMTU + ethHeaderSize

const ethHeaderSize = 14

// gatewayMAC is UserGatewayMAC.
var gatewayMAC, _ = net.ParseMAC(UserGatewayMAC)

// UserConfig is a user-mode network: the guest's MAC (nil for
// DefaultUserMAC) and the ports published from the host to the guest.
type UserConfig struct {
	GuestMAC net.HardwareAddr
	Publish  []Forward
}

// Forward publishes a host port: the host's Proto socket at Host is
// forwarded to the guest's port Guest at UserGuestIP.
type Forward struct {
	Proto string // "tcp" or "udp"
	Host  string // the host address "IP:PORT", such as "127.0.0.1:8080" or "[::1]:8080"
	Guest uint16 // the guest's port
}

const forwardForm = "[tcp:|udp:][HOST_IP:]HOST_PORT:GUEST_PORT"

// ParseForward parses the command line's and API's form of a published
// port, [tcp:|udp:][HOST_IP:]HOST_PORT:GUEST_PORT: TCP unless it says udp,
// the host IP (IPv6 in brackets) 127.0.0.1 unless given, and both ports in
// 1-65535.
func ParseForward(s string) (Forward, error) {
	bad := func(why string) (Forward, error) {
		return Forward{}, fmt.Errorf("published port %q: %s; the form is %s", s, why, forwardForm)
	}
	f := Forward{Proto: "tcp"}
	rest := s
	for _, p := range []string{"tcp", "udp"} {
		if r, ok := strings.CutPrefix(s, p+":"); ok {
			f.Proto, rest = p, r
		}
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return bad("it needs a host port and a guest port")
	}
	guest, ok := parsePort(rest[i+1:])
	if !ok {
		return bad(fmt.Sprintf("guest port %q is not in 1-65535", rest[i+1:]))
	}
	f.Guest = guest
	ip, port := "127.0.0.1", rest[:i]
	if strings.ContainsRune(port, ':') {
		h, p, err := net.SplitHostPort(port)
		if err != nil {
			return bad(fmt.Sprintf("host address %q is not HOST_IP:HOST_PORT", port))
		}
		a := net.ParseIP(h)
		if a == nil {
			return bad(fmt.Sprintf("host IP %q is not an IP address", h))
		}
		ip, port = a.String(), p
	}
	p, ok := parsePort(port)
	if !ok {
		return bad(fmt.Sprintf("host port %q is not in 1-65535", port))
	}
	f.Host = net.JoinHostPort(ip, strconv.Itoa(int(p)))
	return f, nil
}

// parsePort parses a decimal port in 1-65535.
func parsePort(s string) (uint16, bool) {
	n, err := strconv.ParseUint(s, 10, 16)
	return uint16(n), err == nil && n > 0
}

// String is f in ParseForward's form, with the protocol and the host IP
// always given ("tcp:127.0.0.1:8080:80").
func (f Forward) String() string {
	return fmt.Sprintf("%s:%s:%d", f.Proto, f.Host, f.Guest)
}

// check refuses a forward that ParseForward would not have made.
func (f Forward) check() error {
	if f.Proto != "tcp" && f.Proto != "udp" {
		return fmt.Errorf("published port %s: the protocol %q is not tcp or udp", f, f.Proto)
	}
	_, err := ParseForward(f.String())
	return err
}

// User is the built-in user-mode network: an in-process NAT network from
// gvisor-tap-vsock (gvproxy's library), with no root, helper process or
// host configuration. On UserSubnet the network's gateway, UserGatewayIP
// with MAC UserGatewayMAC, serves:
//
//   - DHCP: UserGuestIP is leased to the guest's MAC (a static lease, so a
//     restored guest keeps its address on a fresh network; other MACs get
//     other addresses of the subnet), with a /24 mask, UserGatewayIP as
//     router and DNS server, MTU 1500, for an hour;
//   - DNS on port 53 (UDP and TCP): gateway.containers.internal and
//     gateway.docker.internal answer UserGatewayIP, host.containers.internal
//     and host.docker.internal UserHostIP, other names in those zones
//     NXDOMAIN; other A, CNAME, MX, NS, SRV and TXT queries are answered by
//     the host's resolver (other types get an empty answer);
//   - NAT: the guest's TCP connections and UDP flows to any address
//     become squibd's own sockets to it, those to UserHostIP go to the
//     host's 127.0.0.1 (so the guest reaches the host's loopback services
//     there); TCP and UDP to 169.254.0.0/16 are refused; ICMP is not
//     forwarded, and there is no IPv6;
//   - published ports: each Forward's host socket, bound by NewUser,
//     forwards TCP connections (or UDP datagrams) to UserGuestIP's port.
//
// Frames pass between the device and the network through an in-memory
// pipe (net.Pipe, which neither merges nor splits them: the network reads
// each whole into a 128 KiB buffer, and its frames, at most 65534 bytes,
// each fit one ReadFrame), one bare Ethernet frame each, as the network
// takes them from vfkit. No offloads: WriteFrame drops the virtio header,
// ReadFrame zeroes it. The pipe has no buffer: a frame waits in WriteFrame
// until the network has read it, and the network's frames wait until
// ReadFrame takes them, which stalls the network (not the device) while
// the device's receive queue is full.
//
// The library logs through logrus's standard logger, including errors a
// guest can provoke at will (a DHCP message of an unhandled type): NewUser
// takes that logger over for the process, sending its lines to the newest
// User's log at Debug level (or nowhere if that log does not show Debug).
//
// Close ends the link and releases the published ports' host sockets.
// The library has no way to stop the rest: its gVisor stack and its DHCP
// and DNS servers stay behind, idle (GOMAXPROCS+3 goroutines and about
// 120 KiB of heap per network), and connections still open through the
// NAT or a published port are not closed: they end when their host side
// closes them or when the network's side times out resending to the
// absent guest.
type User struct {
	mux     http.Handler // the network's services: the port forwarder
	dev     net.Conn     // the device's end of the pipe
	done    chan struct{}
	publish []Forward // exposed, for Close to withdraw

	closing  sync.Once
	closeErr error
}

// NewUser makes a user-mode network for one guest interface and binds the
// published ports' host sockets; an error names the forward that could not
// be bound (and releases those that were).
func NewUser(cfg UserConfig, log *slog.Logger) (*User, error) {
	mac := cfg.GuestMAC
	if mac == nil {
		mac = DefaultUserMAC
	}
	if len(mac) != 6 || mac[0]&1 != 0 {
		return nil, fmt.Errorf("user-mode network: guest MAC %s is not a unicast Ethernet address", mac)
	}
	for _, f := range cfg.Publish {
		if err := f.check(); err != nil {
			return nil, fmt.Errorf("user-mode network: %w", err)
		}
	}
	takeLibraryLog(log)
	zone := func(name string) types.Zone {
		return types.Zone{Name: name, Records: []types.Record{
			{Name: "gateway", IP: net.ParseIP(UserGatewayIP)},
			{Name: "host", IP: net.ParseIP(UserHostIP)},
		}}
	}
	vn, err := virtualnetwork.New(&types.Configuration{
		MTU:               UserMTU,
		Subnet:            UserSubnet,
		GatewayIP:         UserGatewayIP,
		GatewayMacAddress: UserGatewayMAC,
		// The gateway answers ARP for the host's alias too.
		GatewayVirtualIPs: []string{UserHostIP},
		NAT:               map[string]string{UserHostIP: "127.0.0.1"},
		DHCPStaticLeases:  map[string]string{UserGuestIP: mac.String()},
		DNS:               []types.Zone{zone("containers.internal."), zone("docker.internal.")},
	})
	if err != nil {
		return nil, fmt.Errorf("user-mode network: %w", err)
	}
	lib, dev := net.Pipe()
	u := &User{mux: vn.ServicesMux(), dev: dev, done: make(chan struct{})}
	go func() {
		defer close(u.done)
		// It returns once the pipe is closed; the library has logged why.
		_ = vn.AcceptVfkit(context.Background(), lib)
	}()
	// Ports are published through the forwarder's service rather than the
	// configuration so that one that cannot be bound fails alone and the
	// others can be withdrawn.
	for _, f := range cfg.Publish {
		err := u.service("expose", types.ExposeRequest{
			Local:    f.Host,
			Remote:   net.JoinHostPort(UserGuestIP, strconv.Itoa(int(f.Guest))),
			Protocol: types.TransportProtocol(f.Proto),
		})
		if err != nil {
			u.Close()
			return nil, fmt.Errorf("user-mode network: published port %s: %w", f, err)
		}
		u.publish = append(u.publish, f)
	}
	return u, nil
}

func (*User) Offloads() bool { return false }

// MTU is UserMTU: the guest sends and receives frames of up to 64 KiB.
func (*User) MTU() int { return UserMTU }

// ReadFrame reads the network's next frame after a zeroed header. b must
// hold a frame of the MTU (65546 bytes with the header).
func (u *User) ReadFrame(b []byte) (int, error) {
	if len(b) < HeaderSize+maxUserFrame {
		return 0, fmt.Errorf("user-mode network: receive buffer of %d bytes is shorter than %d", len(b), HeaderSize+maxUserFrame)
	}
	for {
		n, err := u.dev.Read(b[HeaderSize:])
		if err != nil {
			return 0, err
		}
		if n > 0 {
			clear(b[:HeaderSize])
			return HeaderSize + n, nil
		}
	}
}

// WriteFrame sends the frame after its header to the network. It refuses
// a frame without a whole Ethernet header (the library would crash on it),
// longer than the MTU allows (65534 bytes without the virtio header), or
// from the gateway's MAC: the library's switch would from then on take the
// guest for the gateway, and send it none of the gateway's broadcasts (DHCP
// offers, ARP requests).
func (u *User) WriteFrame(b []byte) error {
	switch n := len(b) - HeaderSize; {
	case n < ethHeaderSize:
		return fmt.Errorf("user-mode network: frame of %d bytes is shorter than its headers (%d)", len(b), HeaderSize+ethHeaderSize)
	case n > maxUserFrame:
		return fmt.Errorf("user-mode network: frame of %d bytes is longer than the MTU allows (%d)", len(b), HeaderSize+maxUserFrame)
	case bytes.Equal(b[HeaderSize+6:HeaderSize+12], gatewayMAC):
		return fmt.Errorf("user-mode network: frame from the gateway's MAC %s", UserGatewayMAC)
	}
	_, err := u.dev.Write(b[HeaderSize:])
	return err
}

// Close ends the link, so that ReadFrame and WriteFrame return, waits for
// the network to let it go, and releases the published ports.
func (u *User) Close() error {
	u.closing.Do(func() {
		u.dev.Close()
		<-u.done
		for _, f := range u.publish {
			err := u.service("unexpose", types.UnexposeRequest{Local: f.Host, Protocol: types.TransportProtocol(f.Proto)})
			if err != nil {
				u.closeErr = errors.Join(u.closeErr, fmt.Errorf("user-mode network: published port %s: %w", f, err))
			}
		}
	})
	return u.closeErr
}

// service posts req to the network's port forwarder service (the only way
// the library offers to withdraw a published port), in process.
func (u *User) service(op string, req any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	r, err := http.NewRequest(http.MethodPost, "/services/forwarder/"+op, bytes.NewReader(body))
	if err != nil {
		return err
	}
	var w reply
	u.mux.ServeHTTP(&w, r)
	if w.code != http.StatusOK {
		return errors.New(strings.TrimSpace(w.body.String()))
	}
	return nil
}

// reply is the service's answer: its status and body.
type reply struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (w *reply) Header() http.Header {
	if w.header == nil {
		w.header = http.Header{}
	}
	return w.header
}

func (w *reply) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *reply) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

// libLog is where the library's logrus lines go: the newest User's log.
var (
	libLog     atomic.Pointer[slog.Logger]
	libLogOnce sync.Once
)

// takeLibraryLog points logrus's standard logger at log: its lines go
// there at Debug level, and none are made unless log shows Debug.
func takeLibraryLog(log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	libLog.Store(log)
	libLogOnce.Do(func() {
		logrus.SetOutput(io.Discard)
		logrus.AddHook(libHook{})
	})
	if log.Enabled(context.Background(), slog.LevelDebug) {
		logrus.SetLevel(logrus.DebugLevel)
	} else {
		logrus.SetLevel(logrus.PanicLevel)
	}
}

// libHook sends logrus's entries to libLog.
type libHook struct{}

func (libHook) Levels() []logrus.Level { return logrus.AllLevels }

func (libHook) Fire(e *logrus.Entry) error {
	if log := libLog.Load(); log != nil {
		log.Debug("net: user-mode network: "+e.Message, "library_level", e.Level.String())
	}
	return nil
}
