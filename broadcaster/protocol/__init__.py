"""Pure protocol cores: RTP/RTCP, SRTP, SDP, codecs, the play clock, control auth, playout."""
