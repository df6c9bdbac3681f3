"""Plain RTP multicast/unicast paging speakers (Algo, CyberData and most SIP speakers)."""
