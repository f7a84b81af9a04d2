package api

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/squibvm/squib/devices/netdev"
	"github.com/squibvm/squib/vmm"
)

// NetworkInterface is the body of PUT /network-interfaces/{iface_id}:
// iface_id (the path's) is required, guest_mac is optional, and exactly one
// backend is given. host_dev_name, Firecracker's one backend, is a Linux
// tap. squib's own fields are the other two: unixgram_path, the socket of
// a peer that takes one Ethernet frame per datagram (vfkit's protocol, as
// gvproxy -listen-vfkit serves it; vfkit_magic sends vfkit's "VFKT"
// datagram first), and user, the built-in user-mode network, whose publish
// forwards host ports to the guest ("[tcp:|udp:][HOST_IP:]HOST_PORT:GUEST_PORT",
// the host IP 127.0.0.1 by default). squibd does not rate-limit: a rate
// limiter is accepted only as one that does not limit.
type NetworkInterface struct {
	IfaceID       *string      `json:"iface_id"`
	HostDevName   *string      `json:"host_dev_name,omitempty"`
	GuestMAC      *string      `json:"guest_mac,omitempty"`
	RxRateLimiter *RateLimiter `json:"rx_rate_limiter,omitempty"`
	TxRateLimiter *RateLimiter `json:"tx_rate_limiter,omitempty"`
	UnixgramPath  *string      `json:"unixgram_path,omitempty"`
	VfkitMagic    *bool        `json:"vfkit_magic,omitempty"`
	User          *UserNetwork `json:"user,omitempty"`
}

// UserNetwork is squib's built-in user-mode network of an interface.
type UserNetwork struct {
	Publish []string `json:"publish,omitempty"`
}

// PartialNetworkInterface is the body of PATCH
// /network-interfaces/{iface_id}: Firecracker's rate limiter update.
type PartialNetworkInterface struct {
	IfaceID       *string      `json:"iface_id"`
	RxRateLimiter *RateLimiter `json:"rx_rate_limiter,omitempty"`
	TxRateLimiter *RateLimiter `json:"tx_rate_limiter,omitempty"`
}

// NetworkOverride is one entry of network_overrides in PUT /snapshot/load:
// the restored interface iface_id gets another backend of the kind it had,
// host_dev_name for a tap (Firecracker's one field), or squib's
// unixgram_path or publish (replacing the saved forwards).
type NetworkOverride struct {
	IfaceID      *string   `json:"iface_id"`
	HostDevName  *string   `json:"host_dev_name,omitempty"`
	UnixgramPath *string   `json:"unixgram_path,omitempty"`
	Publish      *[]string `json:"publish,omitempty"`
}

const netError = "Network interface config error"

// check validates an interface body for the interface the path names and
// returns the device's configuration.
func (n NetworkInterface) check(id string) (netdev.Config, error) {
	if err := required(field{"iface_id", n.IfaceID != nil}); err != nil {
		return netdev.Config{}, err
	}
	if *n.IfaceID != id {
		return netdev.Config{}, errors.New("The id from the path does not match the id from the body!")
	}
	if err := resourceID(netError, "interface", id); err != nil {
		return netdev.Config{}, err
	}
	for _, r := range []*RateLimiter{n.RxRateLimiter, n.TxRateLimiter} {
		if err := r.check(netError, "network interfaces"); err != nil {
			return netdev.Config{}, err
		}
	}
	c := netdev.Config{ID: id, VfkitMagic: n.VfkitMagic != nil && *n.VfkitMagic}
	if n.GuestMAC != nil {
		mac, err := net.ParseMAC(*n.GuestMAC)
		if err != nil || len(mac) != 6 {
			return c, fmt.Errorf("%s: guest_mac %q is not a MAC address like 06:00:ac:10:00:02", netError, *n.GuestMAC)
		}
		c.MAC = mac
	}
	if n.HostDevName != nil {
		c.Tap = *n.HostDevName
	}
	if n.UnixgramPath != nil {
		c.Unixgram = *n.UnixgramPath
	}
	if n.User != nil {
		c.User = true
		for _, p := range n.User.Publish {
			f, err := netdev.ParseForward(p)
			if err != nil {
				return c, fmt.Errorf("%s: %w", netError, err)
			}
			c.Publish = append(c.Publish, f)
		}
	}
	if n.VfkitMagic != nil && n.UnixgramPath == nil {
		return c, fmt.Errorf("%s: vfkit_magic needs unixgram_path", netError)
	}
	if err := c.Check(); err != nil {
		return c, fmt.Errorf("%s: %w", netError, err)
	}
	return c, nil
}

// wireNet is an interface as GET /vm/config shows it.
func wireNet(c netdev.Config) NetworkInterface {
	n := NetworkInterface{IfaceID: &c.ID}
	if c.MAC != nil {
		n.GuestMAC = ptr(c.MAC.String())
	}
	switch {
	case c.Tap != "":
		n.HostDevName = &c.Tap
	case c.Unixgram != "":
		n.UnixgramPath, n.VfkitMagic = &c.Unixgram, &c.VfkitMagic
	default:
		n.User = &UserNetwork{}
		for _, f := range c.Publish {
			n.User.Publish = append(n.User.Publish, f.String())
		}
	}
	return n
}

// setNet adds an interface, or replaces the one with its id (PUT
// /network-interfaces/{id}), before the start as on Firecracker. As there,
// two interfaces may not share a MAC or a tap. The backend is opened when
// the microVM starts.
func (c *Controller) setNet(id string, n NetworkInterface) error {
	cfg, err := n.check(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.unlock()
	if c.m != nil {
		return errAfterStart
	}
	for _, o := range c.nets {
		switch {
		case o.ID == id:
		case cfg.MAC != nil && o.MAC.String() == cfg.MAC.String():
			return fmt.Errorf("%s: The MAC address is already in use: %s", netError, cfg.MAC)
		case cfg.Tap != "" && o.Tap == cfg.Tap:
			return fmt.Errorf("%s: Could not create the network device: tap %s is already in use by interface %s", netError, cfg.Tap, o.ID)
		}
	}
	if i := slices.IndexFunc(c.nets, func(o netdev.Config) bool { return o.ID == id }); i >= 0 {
		c.nets[i] = cfg
	} else {
		c.nets = append(c.nets, cfg)
	}
	c.bootPath = true
	return nil
}

// patchNet is PATCH /network-interfaces/{id}: after the start, as on
// Firecracker, for an interface the microVM has. It updates rate limiters,
// which squibd does not have: one that does not limit is accepted and
// changes nothing; one that would limit is refused.
func (c *Controller) patchNet(id string, p PartialNetworkInterface) error {
	if err := required(field{"iface_id", p.IfaceID != nil}); err != nil {
		return err
	}
	if *p.IfaceID != id {
		return errors.New("The id from the path does not match the id from the body!")
	}
	for _, r := range []*RateLimiter{p.RxRateLimiter, p.TxRateLimiter} {
		if err := r.check(netError, "network interfaces"); err != nil {
			return err
		}
	}
	c.mu.Lock()
	defer c.unlock()
	if c.m == nil {
		return errors.New("The requested operation is not supported before starting the microVM.")
	}
	if !slices.ContainsFunc(c.nets, func(o netdev.Config) bool { return o.ID == id }) {
		return fmt.Errorf("%s: no network interface %q", netError, id)
	}
	return nil
}

// netOverrides turns network_overrides into the restore's.
func netOverrides(overrides []NetworkOverride) ([]vmm.NetOverride, error) {
	var out []vmm.NetOverride
	for _, o := range overrides {
		if err := required(field{"iface_id", o.IfaceID != nil}); err != nil {
			return nil, err
		}
		v := vmm.NetOverride{ID: *o.IfaceID}
		if o.HostDevName != nil {
			v.Tap = *o.HostDevName
		}
		if o.UnixgramPath != nil {
			v.Unixgram = *o.UnixgramPath
		}
		if o.Publish != nil {
			v.SetPublish = true
			for _, p := range *o.Publish {
				f, err := netdev.ParseForward(p)
				if err != nil {
					return nil, fmt.Errorf("network_overrides: %w", err)
				}
				v.Publish = append(v.Publish, f)
			}
		}
		if v.Tap == "" && v.Unixgram == "" && !v.SetPublish {
			return nil, fmt.Errorf("network_overrides: interface %s: give host_dev_name, unixgram_path or publish", v.ID)
		}
		out = append(out, v)
	}
	return out, nil
}
