"""Sockets: UDP (unicast, loopback-safe multicast, the test impairment shim) and mDNS."""
