"""The accelerator's Amaranth components: array, feeder, write-back, controller, memories, counters, the serial
host link and the board core. They see the target only through the ``platform`` handed to ``elaborate`` and the
mutation campaign only through the taps interface (:mod:`prunehw.hw.gateware.taps`)."""
