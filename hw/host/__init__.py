"""The host protocol: the frames a host and the board exchange over the serial link."""
