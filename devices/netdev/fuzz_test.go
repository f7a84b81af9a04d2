package netdev

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/virtio"
	"github.com/squibvm/squib/virtio/virtiotest"
)

// recorder is a backend that keeps the frames the device writes and has
// none to read.
type recorder struct {
	offloads bool
	frames   chan []byte
	done     chan struct{}
	closing  sync.Once
}

func newRecorder(offloads bool) *recorder {
	return &recorder{offloads: offloads, frames: make(chan []byte, 8), done: make(chan struct{})}
}

func (r *recorder) Offloads() bool { return r.offloads }
func (*recorder) MTU() int         { return 0 }

func (r *recorder) ReadFrame([]byte) (int, error) {
	<-r.done
	return 0, net.ErrClosed
}

func (r *recorder) WriteFrame(b []byte) error {
	select {
	case r.frames <- bytes.Clone(b):
		return nil
	case <-r.done:
		return net.ErrClosed
	}
}

func (r *recorder) Close() error {
	r.closing.Do(func() { close(r.done) })
	return nil
}

// The transmit fuzz target's guest RAM: the two queues' rings, then the
// fuzzed chain's bytes at chainArea, then a well-formed frame at goodArea.
const (
	chainArea = 2 * virtiotest.QueueSpan
	maxData   = 1 << 16 // of the fuzzed bytes, the chain takes at most these
	goodArea  = chainArea + maxData + 1<<16
	txRAM     = goodArea + 0x1000
)

// FuzzTxChain: whatever one transmitted chain holds, and however it is
// split into buffers, the device gives it back, hands the backend either
// exactly its bytes (when they make a frame the device takes: a header,
// at most MaxFrame, no offload unless offered) or nothing, and then still
// transmits a well-formed frame. The chain is data followed by bulk bytes
// of 0x5a (for lengths around MaxFrame); its last buffers have the lengths
// tail gives, the first buffer the rest.
func FuzzTxChain(f *testing.F) {
	hdr := make([]byte, HeaderSize)
	withHdr := func(b []byte) []byte { return append(bytes.Clone(hdr), b...) }
	f.Add(withHdr(frame(1, 60)), []byte{}, uint16(0), false)
	f.Add(withHdr(frame(1, 60)), []byte{60}, uint16(0), false) // header and frame apart, as Linux sends them
	f.Add(withHdr(frame(1, 1514)), []byte{0, 100, 1, 0}, uint16(0), false)
	f.Add([]byte("short"), []byte{}, uint16(0), false)
	f.Add(hdr[:HeaderSize-1], []byte{0}, uint16(0), false)
	f.Add(hdr, []byte{}, uint16(0), false) // a header alone
	f.Add(append([]byte{hdrNeedsCsum}, hdr[1:]...), []byte{}, uint16(100), false)
	f.Add(append([]byte{0, 1}, hdr[2:]...), []byte{}, uint16(100), false) // TCPV4 not offered
	f.Add(append([]byte{hdrNeedsCsum, 1}, hdr[2:]...), []byte{}, uint16(100), true)
	// MaxFrame bytes, and one more.
	f.Add(withHdr(make([]byte, MaxFrame-HeaderSize-65535)), []byte{}, uint16(65535), false)
	f.Add(withHdr(make([]byte, MaxFrame-HeaderSize-65535)), []byte{255, 255}, uint16(65535), true)
	f.Add(withHdr(make([]byte, MaxFrame-HeaderSize-65535+1)), []byte{}, uint16(65535), false)
	// MaxFrame bytes and an empty buffer: it was dropped as too long.
	f.Add(withHdr(make([]byte, MaxFrame-HeaderSize-65535)), []byte{0}, uint16(65535), false)
	f.Fuzz(func(t *testing.T, data, tail []byte, bulk uint16, offloads bool) {
		data = data[:min(len(data), maxData)]
		mem := make([]byte, txRAM)
		ram := memory.Adopt(ramBase, mem, func([]byte) error { return nil })
		be := newRecorder(offloads)
		logs := &virtiotest.Logs{}
		d := New(Config{ID: "eth0", Tap: "fuzz"}, be, ram, slog.New(logs))
		tr, err := virtio.New(d, ram, func(bool) {}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		d.SetNotify(tr.Notify)
		defer func() { tr.Close(); d.Close() }()
		drv := virtiotest.StartQueues(t, tr, ram, mem, 1, 2)

		// The chain's bytes, one run of RAM cut into buffers.
		chain := append(bytes.Clone(data), bytes.Repeat([]byte{0x5a}, int(bulk))...)
		copy(mem[chainArea:], chain)
		var bufs []virtiotest.Buf
		end := uint32(len(chain))
		for _, n := range tail[:min(len(tail), 16)] {
			n := min(uint32(n), end)
			end -= n
			bufs = append([]virtiotest.Buf{{Addr: ramBase + chainArea + uint64(end), N: n}}, bufs...)
		}
		bufs = append([]virtiotest.Buf{{Addr: ramBase + chainArea, N: end}}, bufs...)
		good := withHdr(frame(2, 60))
		copy(mem[goodArea:], good)
		drv.Add(txQueue, bufs...)
		drv.Post(txQueue, virtiotest.Buf{Addr: ramBase + goodArea, N: uint32(len(good))})
		if u := drv.Wait(txQueue, 2, 5*time.Second); len(u) != 2 || u[0].Len != 0 || u[1].Len != 0 {
			t.Fatalf("used %+v, want both chains given back, unwritten", u)
		}

		takes := len(chain) >= HeaderSize && len(chain) <= MaxFrame &&
			(offloads || chain[0]&hdrNeedsCsum == 0 && chain[1] == gsoNone)
		var want [][]byte
		if takes {
			want = append(want, chain)
		}
		want = append(want, good)
		for i, w := range want {
			select {
			case got := <-be.frames:
				if len(got) < HeaderSize || len(got) > MaxFrame || !offloads && (got[0]&hdrNeedsCsum != 0 || got[1] != gsoNone) {
					t.Fatalf("the backend got a %d-byte frame with flags %#x, gso_type %#x (offloads %v)", len(got), got[0], got[1], offloads)
				}
				if !bytes.Equal(got, w) {
					t.Fatalf("frame %d: the backend got %d bytes, want %d (the fuzzed chain taken: %v; log %q)", i, len(got), len(w), takes, logs.Messages())
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("frame %d of %d (the fuzzed chain taken: %v) did not reach the backend; log %q", i, len(want), takes, logs.Messages())
			}
		}
		select {
		case got := <-be.frames:
			t.Fatalf("the backend got another frame of %d bytes", len(got))
		default:
		}
	})
}

// FuzzUserFrame: whatever the guest sends (frame, then a second frame if
// then is not empty, for IPv4 fragments and the like), the user-mode
// network neither crashes squibd nor stops serving: after it the gateway
// still answers an ARP request and the DHCP server a discover. One network
// serves every input of a fuzzing process (the library cannot free one),
// so an input may meet what earlier ones left. Inputs that could make the
// network reach beyond this machine (reachesOut) are skipped, so the
// target is safe to run anywhere.
func FuzzUserFrame(f *testing.F) {
	bcast := net.HardwareAddr(header.EthernetBroadcastAddress)
	gwMAC, _ := net.ParseMAC(UserGatewayMAC)
	guest := DefaultUserMAC

	disc, err := dhcpv4.NewDiscovery(guest)
	if err != nil {
		f.Fatal(err)
	}
	disc.TransactionID = dhcpv4.TransactionID{1, 2, 3, 4}
	query := new(dns.Msg)
	query.SetQuestion("gateway.containers.internal.", dns.TypeA)
	query.Id = 1
	q, err := query.Pack()
	if err != nil {
		f.Fatal(err)
	}
	seeds := [][]byte{
		udpFrame(guest, bcast, net.IPv4zero, net.IPv4bcast, 68, 67, disc.ToBytes())[HeaderSize:],
		arpRequest(guest, UserGuestIP, UserGatewayIP)[HeaderSize:],
		tcpSYN(guest, gwMAC, UserGuestIP, UserGatewayIP, 40000, 53),
		tcpSYN(guest, gwMAC, UserGuestIP, "169.254.169.254", 40001, 80), // the NAT refuses it
		udpFrame(guest, gwMAC, net.ParseIP(UserGuestIP), net.ParseIP(UserGatewayIP), 40002, 53, q)[HeaderSize:],
		ipv4Frame(guest, gwMAC, UserGuestIP, UserGatewayIP, header.ICMPv4ProtocolNumber, echoRequest(16)),
		ipv6Frame(guest),
	}
	none := []byte{}
	for _, s := range seeds {
		f.Add(s, none)
		for _, n := range []int{ethHeaderSize - 1, ethHeaderSize, ethHeaderSize + 10, len(s) / 2, len(s) - 1} {
			f.Add(bytes.Clone(s[:n]), none)
		}
	}
	f.Add(make([]byte, maxUserFrame), none)
	f.Add(make([]byte, maxUserFrame+1), none)
	first, second := pingFragments(guest, gwMAC)
	f.Add(first, second)
	f.Add(second, first)
	f.Add(first, first)
	// From the gateway's MAC, now refused: the switch took the guest for
	// the gateway and sent it no more DHCP offers.
	f.Add(ipv6Frame(gwMAC), none)

	u, err := NewUser(UserConfig{}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { u.Close() })
	c := newProbe(u)
	f.Fuzz(func(t *testing.T, frame, then []byte) {
		frames := [][]byte{frame}
		if len(then) > 0 {
			frames = append(frames, then)
		}
		for _, fr := range frames {
			if reachesOut(fr) {
				t.Skip("the network would take this frame beyond the machine")
			}
		}
		for _, fr := range frames {
			err := send(u, append(make([]byte, HeaderSize), fr...))
			refused := len(fr) < ethHeaderSize || len(fr) > maxUserFrame || bytes.Equal(fr[6:12], gatewayMAC)
			if errors.Is(err, errStalled) || (err != nil) != refused {
				t.Fatalf("WriteFrame of a %d-byte frame: %v", len(fr), err)
			}
		}
		if err := c.check(); err != nil {
			t.Fatal(err)
		}
	})
}

var errStalled = errors.New("the network took no frame for 5 s")

// send writes b to u, or gives up after 5 s.
func send(u *User, b []byte) error {
	wrote := make(chan error, 1)
	go func() { wrote <- u.WriteFrame(b) }()
	select {
	case err := <-wrote:
		return err
	case <-time.After(5 * time.Second):
		return errStalled
	}
}

// probe checks that a user-mode network still serves: it sends ARP
// requests and DHCP discovers of its own, from probeMAC, and reads every
// frame the network sends (so the network never waits for it), keeping
// those to probeMAC or broadcast for check.
type probe struct {
	u       *User
	frames  chan []byte
	dropped atomic.Int64 // frames kept but not taken in time
	n       uint32
}

var probeMAC = net.HardwareAddr{0x02, 0, 0, 0, 0xfe, 0xed}

func newProbe(u *User) *probe {
	p := &probe{u: u, frames: make(chan []byte, 256)}
	go func() {
		b := make([]byte, MaxFrame)
		for {
			n, err := u.ReadFrame(b)
			if err != nil {
				return
			}
			if dst := header.Ethernet(b[HeaderSize:n]).DestinationAddress(); dst != tcpip.LinkAddress(probeMAC) && dst != header.EthernetBroadcastAddress {
				continue
			}
			select {
			case p.frames <- bytes.Clone(b[HeaderSize:n]):
			default:
				p.dropped.Add(1)
			}
		}
	}()
	return p
}

// check sends an ARP request for the gateway from a sender address of its
// own and a DHCP discover with a transaction id of its own, and waits 5 s
// for both answers.
func (p *probe) check() error {
	for len(p.frames) > 0 { // answers to earlier inputs
		<-p.frames
	}
	p.n++
	from := net.IPv4(192, 168, 127, byte(3+p.n%250)).String()
	disc, err := dhcpv4.NewDiscovery(probeMAC)
	if err != nil {
		return err
	}
	binary.BigEndian.PutUint32(disc.TransactionID[:], p.n)
	for _, f := range [][]byte{
		arpRequest(probeMAC, from, UserGatewayIP),
		udpFrame(probeMAC, net.HardwareAddr(header.EthernetBroadcastAddress), net.IPv4zero, net.IPv4bcast, 68, 67, disc.ToBytes()),
	} {
		if err := send(p.u, f); err != nil {
			return err
		}
	}
	timeout := time.After(5 * time.Second)
	for arp, offer := false, false; !arp || !offer; {
		select {
		case f := <-p.frames:
			arp = arp || isARPReply(f, from)
			offer = offer || isOffer(f, disc.TransactionID)
		case <-timeout:
			return fmt.Errorf("for 5 s, no answer to ARP (answered: %v) or DHCP (answered: %v); the probe has dropped %d frames for want of room", arp, offer, p.dropped.Load())
		}
	}
	return nil
}

// isARPReply reports whether f is the gateway's ARP reply to probeMAC at ip.
func isARPReply(f []byte, ip string) bool {
	eth := header.Ethernet(f)
	if len(f) < header.EthernetMinimumSize+header.ARPSize || eth.Type() != header.ARPProtocolNumber {
		return false
	}
	a := header.ARP(f[header.EthernetMinimumSize:])
	return a.IsValid() && a.Op() == header.ARPReply && bytes.Equal(a.HardwareAddressTarget(), probeMAC) &&
		net.IP(a.ProtocolAddressTarget()).Equal(net.ParseIP(ip)) && net.IP(a.ProtocolAddressSender()).Equal(net.ParseIP(UserGatewayIP))
}

// isOffer reports whether f is a DHCP offer of transaction id.
func isOffer(f []byte, id dhcpv4.TransactionID) bool {
	if len(f) < header.EthernetMinimumSize+header.IPv4MinimumSize || header.Ethernet(f).Type() != header.IPv4ProtocolNumber {
		return false
	}
	ip := header.IPv4(f[header.EthernetMinimumSize:])
	if !ip.IsValid(len(ip)) || ip.TransportProtocol() != header.UDPProtocolNumber || len(ip.Payload()) < header.UDPMinimumSize {
		return false
	}
	udp := header.UDP(ip.Payload())
	if udp.SourcePort() != 67 {
		return false
	}
	m, err := dhcpv4.FromBytes(udp.Payload())
	return err == nil && m.TransactionID == id && m.MessageType() == dhcpv4.MessageTypeOffer
}

// reachesOut reports whether the user-mode network, given f, might send
// something beyond this machine: its NAT turns TCP and UDP to any address
// into squibd's own connections and datagrams, and its DNS server asks the
// host's resolver about names outside its zones. It reports false only
// for what cannot do so: frames that are not IPv4 TCP or UDP, or too short
// for the network to take as such; TCP and UDP to 169.254.0.0/16 (which
// the NAT refuses: NewUser gives no EC2 metadata access); and, unfragmented, TCP to the gateway's port 53 (its
// DNS server: no query reaches it without a handshake), UDP to the DHCP
// server (port 67 of the gateway or the broadcast address), and UDP to
// the DNS server that asks only about its own zones.
func reachesOut(f []byte) bool {
	if len(f) < ethHeaderSize+header.IPv4MinimumSize || header.Ethernet(f).Type() != header.IPv4ProtocolNumber {
		return false
	}
	ip := header.IPv4(f[ethHeaderSize:])
	proto, dst := ip.TransportProtocol(), ip.DestinationAddress()
	if proto != header.TCPProtocolNumber && proto != header.UDPProtocolNumber || dst.As4()[0] == 169 && dst.As4()[1] == 254 {
		return false
	}
	hl := int(ip.HeaderLength())
	if ip.More() || ip.FragmentOffset() != 0 || hl < header.IPv4MinimumSize || len(ip) < hl+header.UDPMinimumSize {
		return true // its ports are not known
	}
	port := binary.BigEndian.Uint16(ip[hl+2:])
	gw := addr(UserGatewayIP)
	switch {
	case proto == header.TCPProtocolNumber:
		return dst != gw || port != 53
	case port == 67:
		return dst != gw && dst != header.IPv4Broadcast
	case port == 53 && dst == gw:
		return !localQuery(ip, hl)
	}
	return true
}

// TestReachesOut: FuzzUserFrame's filter lets the seeds' kinds of frame
// through, and keeps back TCP and UDP to other addresses and ports, DNS
// queries the server would pass to the host's resolver, and fragments.
func TestReachesOut(t *testing.T) {
	gw, _ := net.ParseMAC(UserGatewayMAC)
	g := DefaultUserMAC
	q := func(name string, typ uint16) []byte {
		m := new(dns.Msg)
		m.SetQuestion(name, typ)
		b, _ := m.Pack()
		return udpFrame(g, gw, net.ParseIP(UserGuestIP), net.ParseIP(UserGatewayIP), 1, 53, b)[HeaderSize:]
	}
	for _, c := range []struct {
		name string
		f    []byte
		want bool
	}{
		{"syn gw 53", tcpSYN(g, gw, UserGuestIP, UserGatewayIP, 1, 53), false},
		{"syn gw 80", tcpSYN(g, gw, UserGuestIP, UserGatewayIP, 1, 80), true},
		{"syn host", tcpSYN(g, gw, UserGuestIP, UserHostIP, 1, 53), true},
		{"syn 8.8.8.8", tcpSYN(g, gw, UserGuestIP, "8.8.8.8", 1, 53), true},
		{"syn 169.254", tcpSYN(g, gw, UserGuestIP, "169.254.1.1", 1, 53), false},
		{"dns local", q("gateway.containers.internal.", dns.TypeA), false},
		{"dns local AAAA", q("x.docker.internal.", dns.TypeAAAA), false},
		{"dns other", q("example.com.", dns.TypeA), true},
		{"dns other AAAA", q("example.com.", dns.TypeAAAA), false},
		{"dns other TXT", q("example.com.", dns.TypeTXT), true},
		{"dns zone itself", q("containers.internal.", dns.TypeA), true},
		{"udp 8.8.8.8", udpFrame(g, gw, net.ParseIP(UserGuestIP), net.ParseIP("8.8.8.8"), 1, 53, nil)[HeaderSize:], true},
		{"udp bcast 67", udpFrame(g, gw, net.IPv4zero, net.IPv4bcast, 68, 67, nil)[HeaderSize:], false},
		{"udp bcast 68", udpFrame(g, gw, net.IPv4zero, net.IPv4bcast, 68, 68, nil)[HeaderSize:], true},
		{"icmp", ipv4Frame(g, gw, UserGuestIP, "8.8.8.8", header.ICMPv4ProtocolNumber, make([]byte, 8)), false},
		{"arp", arpRequest(g, UserGuestIP, UserGatewayIP)[HeaderSize:], false},
	} {
		if got := reachesOut(c.f); got != c.want {
			t.Errorf("%s: %v", c.name, got)
		}
	}
	f := tcpSYN(g, gw, UserGuestIP, UserGatewayIP, 1, 53)
	f[14+6] = 0x20 // MF
	if !reachesOut(f) {
		t.Error("fragment")
	}
}

// localQuery reports whether the DNS server, given the UDP datagram in ip
// (of header length hl), answers it from its own zones (NewUser's), or
// the network drops it before.
func localQuery(ip header.IPv4, hl int) bool {
	total := int(ip.TotalLength())
	switch {
	case total > len(ip):
		return true // IPv4 drops the packet
	case total < hl+header.UDPMinimumSize:
		return false
	}
	udp := header.UDP(ip[hl:total])
	switch n := int(udp.Length()); {
	case n > len(udp):
		return true // UDP drops the datagram
	case n < header.UDPMinimumSize:
		return false
	default:
		udp = udp[:n]
	}
	// The server reads a datagram into 512 bytes; and a message it cannot
	// unpack it does not answer.
	for _, b := range [][]byte{udp.Payload(), udp.Payload()[:min(len(udp.Payload()), dns.MinMsgSize)]} {
		var m dns.Msg
		if m.Unpack(b) != nil {
			continue
		}
		for _, q := range m.Question {
			local := strings.HasSuffix(q.Name, ".containers.internal.") || strings.HasSuffix(q.Name, ".docker.internal.")
			switch q.Qtype {
			case dns.TypeA, dns.TypeCNAME, dns.TypeMX, dns.TypeNS, dns.TypeSRV, dns.TypeTXT: // those it looks up
				if !local {
					return false
				}
			}
		}
	}
	return true
}

// ipv4Frame is a bare Ethernet frame of an IPv4 packet from src to dst
// carrying payload of protocol proto.
func ipv4Frame(srcMAC, dstMAC net.HardwareAddr, src, dst string, proto tcpip.TransportProtocolNumber, payload []byte) []byte {
	f := make([]byte, header.EthernetMinimumSize+header.IPv4MinimumSize+len(payload))
	header.Ethernet(f).Encode(&header.EthernetFields{
		SrcAddr: tcpip.LinkAddress(srcMAC), DstAddr: tcpip.LinkAddress(dstMAC), Type: header.IPv4ProtocolNumber,
	})
	ip := header.IPv4(f[header.EthernetMinimumSize:])
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(ip)), TTL: 64, Protocol: uint8(proto), SrcAddr: addr(src), DstAddr: addr(dst),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	copy(ip.Payload(), payload)
	return f
}

// tcpSYN is a bare Ethernet frame of a TCP SYN from src to dst.
func tcpSYN(srcMAC, dstMAC net.HardwareAddr, src, dst string, sport, dport uint16) []byte {
	seg := make([]byte, header.TCPMinimumSize)
	tcp := header.TCP(seg)
	tcp.Encode(&header.TCPFields{
		SrcPort: sport, DstPort: dport, SeqNum: 1, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagSyn, WindowSize: 65535,
	})
	tcp.SetChecksum(^tcp.CalculateChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, addr(src), addr(dst), uint16(len(seg)))))
	return ipv4Frame(srcMAC, dstMAC, src, dst, header.TCPProtocolNumber, seg)
}

// pingFragments are the two IPv4 fragments of an ICMP echo request for
// the gateway, split after 24 bytes.
func pingFragments(srcMAC, dstMAC net.HardwareAddr) (first, second []byte) {
	ping := echoRequest(40)
	fragment := func(b []byte, flags uint8, offset uint16) []byte {
		f := ipv4Frame(srcMAC, dstMAC, UserGuestIP, UserGatewayIP, header.ICMPv4ProtocolNumber, b)
		ip := header.IPv4(f[header.EthernetMinimumSize:])
		ip.SetID(7)
		ip.SetFlagsFragmentOffset(flags, offset)
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		return f
	}
	return fragment(ping[:24], header.IPv4FlagMoreFragments, 0), fragment(ping[24:], 0, 24)
}

// echoRequest is an ICMP echo request of n bytes.
func echoRequest(n int) []byte {
	ping := make([]byte, n)
	icmp := header.ICMPv4(ping)
	icmp.SetType(header.ICMPv4Echo)
	icmp.SetIdent(1)
	icmp.SetSequence(1)
	icmp.SetChecksum(^checksum.Checksum(ping, 0))
	return ping
}

// ipv6Frame is a bare Ethernet frame of an IPv6 UDP datagram to all
// nodes, which the network (IPv4 only) ignores.
func ipv6Frame(srcMAC net.HardwareAddr) []byte {
	f := make([]byte, header.EthernetMinimumSize+header.IPv6MinimumSize+header.UDPMinimumSize+4)
	header.Ethernet(f).Encode(&header.EthernetFields{
		SrcAddr: tcpip.LinkAddress(srcMAC), DstAddr: "\x33\x33\x00\x00\x00\x01", Type: header.IPv6ProtocolNumber,
	})
	ip := header.IPv6(f[header.EthernetMinimumSize:])
	ip.Encode(&header.IPv6Fields{
		PayloadLength: header.UDPMinimumSize + 4, TransportProtocol: header.UDPProtocolNumber, HopLimit: 1,
		SrcAddr: tcpip.AddrFrom16Slice(net.ParseIP("fe80::1")), DstAddr: header.IPv6AllNodesMulticastAddress,
	})
	udp := header.UDP(ip.Payload())
	udp.Encode(&header.UDPFields{SrcPort: 546, DstPort: 547, Length: header.UDPMinimumSize + 4})
	copy(udp.Payload(), "ping")
	return f
}
