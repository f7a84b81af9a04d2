package netdev

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/miekg/dns"
	"github.com/sirupsen/logrus"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// newTestUser makes a user-mode network that the test closes.
func newTestUser(t *testing.T, cfg UserConfig) *User {
	t.Helper()
	u, err := NewUser(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := u.Close(); err != nil {
			t.Error(err)
		}
	})
	return u
}

// frames reads u's frames into a channel, checking that each has a zeroed
// header and fits the MTU, until u is closed.
func frames(t *testing.T, u *User) <-chan []byte {
	c := make(chan []byte, 64)
	go func() {
		defer close(c)
		b := make([]byte, MaxFrame)
		for {
			n, err := u.ReadFrame(b)
			if err != nil {
				return
			}
			if !bytes.Equal(b[:HeaderSize], make([]byte, HeaderSize)) || n-HeaderSize > maxUserFrame {
				t.Errorf("frame of %d bytes with header % x", n, b[:HeaderSize])
			}
			c <- bytes.Clone(b[HeaderSize:n])
		}
	}()
	return c
}

// udpFrame is a frame with its virtio header: an IPv4 UDP datagram in
// Ethernet.
func udpFrame(srcMAC, dstMAC net.HardwareAddr, src, dst net.IP, sport, dport uint16, payload []byte) []byte {
	f := make([]byte, HeaderSize+header.EthernetMinimumSize+header.IPv4MinimumSize+header.UDPMinimumSize+len(payload))
	header.Ethernet(f[HeaderSize:]).Encode(&header.EthernetFields{
		SrcAddr: tcpip.LinkAddress(srcMAC), DstAddr: tcpip.LinkAddress(dstMAC), Type: header.IPv4ProtocolNumber,
	})
	ip := header.IPv4(f[HeaderSize+header.EthernetMinimumSize:])
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(ip)), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4Slice(src.To4()), DstAddr: tcpip.AddrFrom4Slice(dst.To4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(ip[header.IPv4MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: sport, DstPort: dport, Length: uint16(len(u))}) // no checksum
	copy(u.Payload(), payload)
	return f
}

// dhcpReply waits for the DHCP reply of type want to the transaction id.
func dhcpReply(t *testing.T, c <-chan []byte, id dhcpv4.TransactionID, want dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case f, ok := <-c:
			if !ok {
				t.Fatal("the network closed")
			}
			eth := header.Ethernet(f)
			if eth.Type() != header.IPv4ProtocolNumber {
				continue
			}
			ip := header.IPv4(f[header.EthernetMinimumSize:])
			if ip.TransportProtocol() != header.UDPProtocolNumber {
				continue
			}
			u := header.UDP(ip.Payload())
			if u.SourcePort() != 67 || u.DestinationPort() != 68 {
				continue
			}
			if eth.DestinationAddress() != header.EthernetBroadcastAddress || ip.DestinationAddress() != header.IPv4Broadcast {
				t.Errorf("DHCP reply to %s/%s, not broadcast", eth.DestinationAddress(), ip.DestinationAddress())
			}
			m, err := dhcpv4.FromBytes(u.Payload())
			if err != nil {
				t.Fatal(err)
			}
			if m.TransactionID != id {
				continue
			}
			if m.MessageType() != want {
				t.Fatalf("DHCP %s, want %s", m.MessageType(), want)
			}
			return m
		case <-timeout:
			t.Fatalf("no DHCP %s", want)
		}
	}
}

// dhcpSend sends a message from mac to the broadcast address.
func dhcpSend(t *testing.T, u *User, mac net.HardwareAddr, m *dhcpv4.DHCPv4) {
	t.Helper()
	f := udpFrame(mac, net.HardwareAddr(header.EthernetBroadcastAddress), net.IPv4zero, net.IPv4bcast, 68, 67, m.ToBytes())
	if err := u.WriteFrame(f); err != nil {
		t.Fatal(err)
	}
}

// TestUserDHCP acts as the guest's DHCP client with hand-built frames:
// another MAC gets another address; the guest's MAC is offered and
// acknowledged UserGuestIP with the gateway as router and DNS server.
func TestUserDHCP(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x42}
	u := newTestUser(t, UserConfig{GuestMAC: mac})
	c := frames(t, u)

	// Another MAC first: the guest's address is reserved for its MAC.
	other := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x43}
	disc, err := dhcpv4.NewDiscovery(other)
	if err != nil {
		t.Fatal(err)
	}
	dhcpSend(t, u, other, disc)
	if a := dhcpReply(t, c, disc.TransactionID, dhcpv4.MessageTypeOffer).YourIPAddr.String(); a == UserGuestIP || a == UserGatewayIP || !strings.HasPrefix(a, "192.168.127.") {
		t.Errorf("another MAC offered %s", a)
	}

	disc, err = dhcpv4.NewDiscovery(mac)
	if err != nil {
		t.Fatal(err)
	}
	dhcpSend(t, u, mac, disc)
	offer := dhcpReply(t, c, disc.TransactionID, dhcpv4.MessageTypeOffer)
	gw := net.ParseIP(UserGatewayIP).To4()
	switch {
	case !offer.YourIPAddr.Equal(net.ParseIP(UserGuestIP)):
		t.Errorf("offered %s, want %s", offer.YourIPAddr, UserGuestIP)
	case !offer.ServerIdentifier().Equal(gw):
		t.Errorf("server %s", offer.ServerIdentifier())
	case len(offer.Router()) != 1 || !offer.Router()[0].Equal(gw):
		t.Errorf("router %v", offer.Router())
	case len(offer.DNS()) != 1 || !offer.DNS()[0].Equal(gw):
		t.Errorf("DNS %v", offer.DNS())
	case net.IP(offer.SubnetMask()).String() != "255.255.255.0":
		t.Errorf("mask %s", net.IP(offer.SubnetMask()))
	case !bytes.Equal(offer.Options.Get(dhcpv4.OptionInterfaceMTU), []byte{UserMTU >> 8, UserMTU & 0xff}):
		t.Errorf("MTU option % x", offer.Options.Get(dhcpv4.OptionInterfaceMTU))
	}

	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	dhcpSend(t, u, mac, req)
	ack := dhcpReply(t, c, req.TransactionID, dhcpv4.MessageTypeAck)
	if !ack.YourIPAddr.Equal(net.ParseIP(UserGuestIP)) {
		t.Errorf("acknowledged %s, want %s", ack.YourIPAddr, UserGuestIP)
	}
}

// TestUserDefaultMAC checks that without a MAC the lease is for
// DefaultUserMAC.
func TestUserDefaultMAC(t *testing.T) {
	u := newTestUser(t, UserConfig{})
	c := frames(t, u)
	disc, err := dhcpv4.NewDiscovery(DefaultUserMAC)
	if err != nil {
		t.Fatal(err)
	}
	dhcpSend(t, u, DefaultUserMAC, disc)
	if offer := dhcpReply(t, c, disc.TransactionID, dhcpv4.MessageTypeOffer); !offer.YourIPAddr.Equal(net.ParseIP(UserGuestIP)) {
		t.Errorf("offered %s to %s, want %s", offer.YourIPAddr, DefaultUserMAC, UserGuestIP)
	}
}

// testGuest is a guest's TCP/IP stack (gVisor's netstack) at UserGuestIP,
// its Ethernet frames moved to and from a User with their virtio header.
type testGuest struct {
	s *stack.Stack
}

func addr(ip string) tcpip.Address { return tcpip.AddrFrom4Slice(net.ParseIP(ip).To4()) }

func newTestGuest(t *testing.T, u *User, mac net.HardwareAddr) *testGuest {
	t.Helper()
	ep := channel.New(1<<14, maxUserFrame, tcpip.LinkAddress(mac))
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	if err := s.CreateNIC(1, ethernet.New(ep)); err != nil {
		t.Fatal(err)
	}
	a := tcpip.AddressWithPrefix{Address: addr(UserGuestIP), PrefixLen: 24}
	if err := s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: a}, stack.AddressProperties{}); err != nil {
		t.Fatal(err)
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: a.Subnet(), NIC: 1},
		{Destination: header.IPv4EmptySubnet, Gateway: addr(UserGatewayIP), NIC: 1},
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		s.Close()
		ep.Close()
		s.Wait()
	})
	go func() { // guest → network
		for {
			pkt := ep.ReadContext(ctx)
			if pkt == nil {
				return
			}
			v := pkt.ToView()
			f := make([]byte, HeaderSize+v.Size())
			copy(f[HeaderSize:], v.AsSlice())
			v.Release()
			pkt.DecRef()
			if err := u.WriteFrame(f); err != nil {
				return
			}
		}
	}()
	go func() { // network → guest
		for f := range frames(t, u) {
			pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(f)})
			ep.InjectInbound(0, pkt)
			pkt.DecRef()
		}
	}()
	return &testGuest{s: s}
}

// dial connects the guest to ip:port by TCP.
func (g *testGuest) dial(ctx context.Context, ip string, port uint16) (net.Conn, error) {
	return gonet.DialContextTCP(ctx, g.s, tcpip.FullAddress{NIC: 1, Addr: addr(ip), Port: port}, ipv4.ProtocolNumber)
}

// TestUserDNS asks the gateway's DNS server for the built-in names.
func TestUserDNS(t *testing.T) {
	g := newTestGuest(t, newTestUser(t, UserConfig{}), DefaultUserMAC)
	c, err := gonet.DialUDP(g.s, nil, &tcpip.FullAddress{NIC: 1, Addr: addr(UserGatewayIP), Port: 53}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, q := range []struct {
		name, ip string
		rcode    int
	}{
		{"gateway.containers.internal.", UserGatewayIP, dns.RcodeSuccess},
		{"host.containers.internal.", UserHostIP, dns.RcodeSuccess},
		{"gateway.docker.internal.", UserGatewayIP, dns.RcodeSuccess},
		{"host.docker.internal.", UserHostIP, dns.RcodeSuccess},
		{"nobody.containers.internal.", "", dns.RcodeNameError},
	} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, dns.TypeA)
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("%s: %v", q.name, err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:n]); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok {
				got = append(got, a.A.String())
			}
		}
		want := []string{q.ip}
		if q.ip == "" {
			want = nil
		}
		if r.Id != m.Id || r.Rcode != q.rcode || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: id %d rcode %d answers %v, want rcode %d answers %v", q.name, r.Id, r.Rcode, got, q.rcode, want)
		}
	}
}

// TestUserHostLoopback fetches a page from the host's 127.0.0.1 at
// UserHostIP.
func TestUserHostLoopback(t *testing.T) {
	g := newTestGuest(t, newTestUser(t, UserConfig{}), DefaultUserMAC)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "host page %s for %s", r.URL.Path, r.RemoteAddr[:strings.LastIndexByte(r.RemoteAddr, ':')])
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, a string) (net.Conn, error) {
			h, p, _ := net.SplitHostPort(a)
			n, _ := strconv.Atoi(p)
			return g.dial(ctx, h, uint16(n))
		},
	}}
	resp, err := client.Get(fmt.Sprintf("http://%s:%d/hello", UserHostIP, port))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if want := "host page /hello for 127.0.0.1"; resp.StatusCode != 200 || string(body) != want {
		t.Errorf("status %d body %q, want %q", resp.StatusCode, body, want)
	}
}

// freePort returns a port of 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p := l.Addr().(*net.TCPAddr).Port
	// The same port for UDP, for the UDP forward.
	c, err := net.ListenPacket("udp", l.Addr().String())
	if err != nil {
		t.Skipf("port %d free for TCP but not UDP: %v", p, err)
	}
	c.Close()
	return p
}

// TestUserPublish connects from the host to published TCP and UDP ports
// of the guest, and checks that Close releases the host's sockets.
func TestUserPublish(t *testing.T) {
	hp := freePort(t)
	host := fmt.Sprintf("127.0.0.1:%d", hp)
	u, err := NewUser(UserConfig{Publish: []Forward{{"tcp", host, 8080}, {"udp", host, 5353}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	g := newTestGuest(t, u, DefaultUserMAC)

	// TCP: an echo server in the guest, 1 MiB through it.
	ln, err := gonet.ListenTCP(g.s, tcpip.FullAddress{NIC: 1, Addr: addr(UserGuestIP), Port: 8080}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	data := make([]byte, 1<<20)
	rand.Read(data)
	go func() {
		c.Write(data)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(len(got), err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("echoed %d bytes, not the %d sent", len(got), len(data))
	}

	// UDP: the guest answers a datagram.
	pc, err := gonet.DialUDP(g.s, &tcpip.FullAddress{NIC: 1, Addr: addr(UserGuestIP), Port: 5353}, nil, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		b := make([]byte, 100)
		n, from, err := pc.ReadFrom(b)
		if err == nil {
			pc.WriteTo(append([]byte("guest got "), b[:n]...), from)
		}
	}()
	uc, err := net.Dial("udp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if _, err := uc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	uc.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 100)
	n, err := uc.Read(b)
	if err != nil || string(b[:n]) != "guest got ping" {
		t.Errorf("UDP answer %q, %v", b[:n], err)
	}

	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	for _, network := range []string{"tcp", "udp"} {
		var l io.Closer
		var err error
		if network == "tcp" {
			l, err = net.Listen(network, host)
		} else {
			l, err = net.ListenPacket(network, host)
		}
		if err != nil {
			t.Errorf("after Close: %v", err)
		} else {
			l.Close()
		}
	}
}

// TestUserPublishBusy checks that a port that cannot be bound fails
// NewUser and releases the ports bound before it.
func TestUserPublishBusy(t *testing.T) {
	free := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, err = NewUser(UserConfig{Publish: []Forward{{"tcp", free, 80}, {"tcp", busy.Addr().String(), 81}}}, nil)
	if err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Fatalf("NewUser with a busy port: %v", err)
	}
	t.Log(err)
	l, err := net.Listen("tcp", free)
	if err != nil {
		t.Fatalf("the first port was kept: %v", err)
	}
	l.Close()
}

func TestUserParseForward(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Forward
	}{
		{"8080:80", Forward{"tcp", "127.0.0.1:8080", 80}},
		{"tcp:8080:80", Forward{"tcp", "127.0.0.1:8080", 80}},
		{"udp:5353:53", Forward{"udp", "127.0.0.1:5353", 53}},
		{"0.0.0.0:2222:22", Forward{"tcp", "0.0.0.0:2222", 22}},
		{"udp:10.0.0.1:65535:1", Forward{"udp", "10.0.0.1:65535", 1}},
		{"tcp:[::1]:8080:80", Forward{"tcp", "[::1]:8080", 80}},
		{"08080:080", Forward{"tcp", "127.0.0.1:8080", 80}},
	} {
		f, err := ParseForward(c.in)
		if err != nil || f != c.want {
			t.Errorf("ParseForward(%q) = %+v, %v, want %+v", c.in, f, err, c.want)
			continue
		}
		if g, err := ParseForward(f.String()); err != nil || g != f {
			t.Errorf("%q: String %q parses as %+v, %v", c.in, f.String(), g, err)
		}
	}
	for _, in := range []string{
		"", "80", ":80", "80:", "0:80", "80:0", "65536:80", "80:65536", "-1:80", "+80:80",
		"sctp:80:80", "TCP:80:80", "udp:tcp:80:80", "localhost:80:80", "1.2.3:80:80",
		"::1:80:80", "[::1]:80", "1.2.3.4::80", "a:b", "tcp:", "80:80:80:80",
	} {
		if f, err := ParseForward(in); err == nil {
			t.Errorf("ParseForward(%q) = %+v, want an error", in, f)
		} else if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), forwardForm) {
			t.Errorf("ParseForward(%q): error %q", in, err)
		}
	}
	if _, err := NewUser(UserConfig{Publish: []Forward{{"sctp", "127.0.0.1:80", 80}}}, nil); err == nil {
		t.Error("NewUser took an sctp forward")
	}
	if _, err := NewUser(UserConfig{Publish: []Forward{{"tcp", "localhost:80", 80}}}, nil); err == nil {
		t.Error("NewUser took a host name")
	}
	if _, err := NewUser(UserConfig{GuestMAC: net.HardwareAddr{1, 2, 3, 4, 5, 6}}, nil); err == nil {
		t.Error("NewUser took a multicast MAC")
	}
}

// arpRequest is a frame with its virtio header asking who has ip.
func arpRequest(mac net.HardwareAddr, from, ip string) []byte {
	f := make([]byte, HeaderSize+header.EthernetMinimumSize+header.ARPSize)
	header.Ethernet(f[HeaderSize:]).Encode(&header.EthernetFields{
		SrcAddr: tcpip.LinkAddress(mac), DstAddr: header.EthernetBroadcastAddress, Type: header.ARPProtocolNumber,
	})
	a := header.ARP(f[HeaderSize+header.EthernetMinimumSize:])
	a.SetIPv4OverEthernet()
	a.SetOp(header.ARPRequest)
	copy(a.HardwareAddressSender(), mac)
	copy(a.ProtocolAddressSender(), net.ParseIP(from).To4())
	copy(a.ProtocolAddressTarget(), net.ParseIP(ip).To4())
	return f
}

// TestUserFrames checks WriteFrame's limits, a frame both ways, and that
// Close makes a blocked ReadFrame and WriteFrame return and ends the
// link's goroutine.
func TestUserFrames(t *testing.T) {
	before := runtime.NumGoroutine()
	u, err := NewUser(UserConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	made := runtime.NumGoroutine()
	defer u.Close()
	for _, n := range []int{0, 11, HeaderSize, HeaderSize + 13, HeaderSize + maxUserFrame + 1, MaxFrame} {
		if err := u.WriteFrame(make([]byte, n)); err == nil {
			t.Errorf("WriteFrame took a frame of %d bytes", n)
		}
	}

	// An ARP request for the host's alias: the gateway answers it.
	mac := DefaultUserMAC
	if err := u.WriteFrame(arpRequest(mac, UserGuestIP, UserHostIP)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, MaxFrame)
	var n int
	read := make(chan error, 1)
	go func() {
		var err error
		n, err = u.ReadFrame(b)
		read <- err
	}()
	select {
	case err := <-read:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer to ARP")
	}
	eth := header.Ethernet(b[HeaderSize:n])
	a := header.ARP(eth[header.EthernetMinimumSize:])
	gwMAC, _ := net.ParseMAC(UserGatewayMAC)
	if !bytes.Equal(b[:HeaderSize], make([]byte, HeaderSize)) || eth.Type() != header.ARPProtocolNumber || !a.IsValid() ||
		a.Op() != header.ARPReply || !bytes.Equal(a.HardwareAddressSender(), gwMAC) ||
		!net.IP(a.ProtocolAddressSender()).Equal(net.ParseIP(UserHostIP)) || eth.DestinationAddress() != tcpip.LinkAddress(mac) {
		t.Fatalf("answer to ARP % x", b[:n])
	}

	// Another request, its answer not read: the network waits to give it,
	// so the frame after it waits to be taken.
	if err := u.WriteFrame(arpRequest(mac, UserGuestIP, UserGatewayIP)); err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() { wrote <- u.WriteFrame(arpRequest(mac, UserGuestIP, UserGatewayIP)) }()
	select {
	case err := <-wrote:
		t.Fatalf("WriteFrame did not wait for the network: %v", err)
	case <-time.After(200 * time.Millisecond):
	}

	u2 := newTestUser(t, UserConfig{})
	go func() {
		_, err := u2.ReadFrame(make([]byte, MaxFrame))
		read <- err
	}()
	select {
	case err := <-read:
		t.Fatalf("ReadFrame returned with nothing to read: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	u2.Close()
	u.Close()
	for what, c := range map[string]chan error{"ReadFrame": read, "WriteFrame": wrote} {
		select {
		case err := <-c:
			if err == nil {
				t.Errorf("%s returned no error after Close", what)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still blocked after Close", what)
		}
	}
	select {
	case <-u.done:
	default:
		t.Error("the link's goroutine did not end")
	}
	if err := u.WriteFrame(arpRequest(mac, UserGuestIP, UserGatewayIP)); err == nil {
		t.Error("WriteFrame after Close succeeded")
	}
	if _, err := u.ReadFrame(b); err == nil {
		t.Error("ReadFrame after Close succeeded")
	}
	time.Sleep(100 * time.Millisecond)
	t.Logf("goroutines: %d before, %d with one network, %d after closing both (GOMAXPROCS %d)",
		before, made, runtime.NumGoroutine(), runtime.GOMAXPROCS(0))
}

// TestUserLog checks that the library's log lines go to the User's log at
// Debug level, and not to stderr.
func TestUserLog(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	h := slog.NewTextHandler(writerFunc(func(b []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(b)
	}), &slog.HandlerOptions{Level: slog.LevelDebug})
	u, err := NewUser(UserConfig{}, slog.New(h))
	if err != nil {
		t.Fatal(err)
	}
	u.Close() // the library logs the link's end
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if !strings.Contains(out, "level=DEBUG") || !strings.Contains(out, "net: user-mode network: cannot receive packets") {
		t.Errorf("log %q", out)
	}
	if logrus.StandardLogger().Out != io.Discard {
		t.Error("logrus still writes")
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
