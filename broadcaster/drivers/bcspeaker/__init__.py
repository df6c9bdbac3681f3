"""Our own speaker endpoint (bcspeaker): signed HTTP control, SRTP audio, clock sync, mDNS."""
