"""From a numeric contract to what the gateware is built from: the program (ops, tiles, buffers) and the Verilog
emitter."""
