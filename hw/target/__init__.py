"""The devices a design is built for: their resources and primitives (with simulation models), synthesis and
place-and-route, the board and its bitstream."""
