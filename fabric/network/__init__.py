"""The network worker: bridges, VXLAN/VLAN segments, routed L3 mode, DHCP and NAT."""
