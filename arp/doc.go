// Package arp is the layer-2 half of an announcer (the L2 mode of MetalLB or
// kube-vip): it makes the hosts of an Ethernet LAN send a virtual IP's
// traffic to this node, and moves it quickly when another node takes over.
//
// It speaks, on an AF_PACKET socket (github.com/mdlayher/packet):
//
//   - Ethernet II framing with 802.1Q and 802.1ad VLAN tags (ParseFrame,
//     Frame);
//   - ARP for IPv4 over Ethernet, RFC 826 (ParsePacket, Packet), including
//     gratuitous ARP in the request form of an RFC 5227 ARP Announcement and
//     in the reply form (GratuitousARP);
//   - ICMPv6 neighbour solicitation and advertisement, RFC 4861
//     (ParseNeighborMessage, NeighborMessage), with the ICMPv6 checksum over
//     the IPv6 pseudo-header (RFC 4443 section 2.3, RFC 8200 section 8.1),
//     hop limit 255, solicited-node multicast addresses (RFC 4291 section
//     2.7.1) and their 33:33 MAC addresses (RFC 2464 section 7), and the
//     unsolicited advertisement with the Override flag to all nodes that
//     RFC 4861 section 7.2.6 prescribes when a link-layer address changes.
//
// Every decoder checks lengths before it reads and returns a *DecodeError
// that matches ErrTruncated, ErrMalformed, ErrChecksum or ErrUnsupported.
//
// # Announcer
//
// An Announcer owns a set of VIPs on one interface. Acquire announces each
// VIP at once and then AnnounceCount-1 more times AnnounceInterval apart;
// ReannounceInterval optionally repeats the announcement for as long as the
// VIP is owned. The defaults (3 announcements 250 ms apart) are deliberately
// faster than the intervals of RFC 5227 and RFC 4861 (see
// DefaultAnnounceCount). Meanwhile the Announcer answers ARP requests and
// neighbour solicitations for exactly the VIPs it owns, on exactly its
// interface, and when Release returns it sends nothing more for the
// released VIPs. Dial opens the sockets, which needs CAP_NET_RAW
// (AF_PACKET); New takes any Conn, such as FakeConn, so that callers can
// test without root.
//
// Dial opens two packet sockets on the interface, one bound to ARP and one
// to IPv6, each with a classic BPF filter attached before bind (see Filter),
// so the Announcer's readers wake only for ARP and ICMPv6 neighbour
// solicitations and advertisements received on that interface. A socket
// bound to one protocol never sees the host's own output, nor the received
// frames of other protocols: IPv4 data traffic does not reach the sockets at
// all, and IPv6 data traffic is dropped by the filter in the kernel. For
// each IPv6 VIP it joins the VIP's solicited-node group at the link layer
// (PACKET_ADD_MEMBERSHIP with PACKET_MR_MULTICAST) instead of putting the
// interface in promiscuous or all-multicast mode: the interface then
// accepts exactly the one extra multicast MAC a solicitation for the VIP is
// sent to, and the kernel drops the membership by itself when the socket
// closes, even if the process is killed.
//
// Dial also subscribes to rtnetlink link notifications in the interface's
// network namespace. While the link is down the Announcer sends nothing;
// when it comes back up it announces every VIP it owns again, a full burst,
// because neighbours and switches may have forgotten the VIPs or learnt
// other owners meanwhile; when the interface is deleted (or moved to another
// namespace) the Announcer stops, Done is closed and Err matches
// ErrInterfaceGone. A new interface of the same name gets a new Announcer:
// Dial again.
//
// Run the Announcer on the interface that holds the node's addresses on the
// LAN: on a bridge or a bond, not on one of its ports (the bridge consumes
// what its ports receive before protocol-bound sockets see it), and on a
// VLAN sub-interface, not on its parent.
//
// # Serving a VIP without the kernel answering for it
//
// The Announcer makes the LAN deliver the VIP's frames to the node; the node
// must also accept the packets, without its own kernel answering ARP or
// neighbour solicitations for the VIP behind the Announcer's back (on the
// node that does not own the VIP, that would steal traffic). One way, the
// one the package's tests use: put the VIP on the loopback interface and set
// net.ipv4.conf.<all,ifname>.arp_ignore=1 (answer ARP only for addresses of
// the receiving interface) and arp_announce=2 (never use the VIP as source
// of the kernel's own ARP requests). Linux answers a neighbour solicitation
// only for addresses assigned to the receiving interface (or for proxy
// entries when forwarding and proxy_ndp are on), so an IPv6 VIP on lo needs
// no further setting. A DNAT from the VIP to a local address works as well.
//
// # Receiving 802.1Q frames
//
// With Dial the Announcer never sees a frame of another VLAN: Linux strips
// the outer VLAN tag of a received frame into metadata before packet
// sockets see it; a frame tagged for a VLAN that has no sub-interface
// reaches protocol-bound sockets marked PACKET_OTHERHOST, and one whose VLAN
// has a sub-interface reaches the parent's sockets as a frame of the
// sub-interface; the socket filter drops both. Priority-tagged frames (VLAN
// ID 0) belong to the untagged LAN and are answered, untagged. Frames handed
// in through New by a Conn of your own (or a FakeConn) may still carry
// tags: they are decoded, and the Announcer ignores frames whose innermost
// VLAN ID is not 0.
package arp
