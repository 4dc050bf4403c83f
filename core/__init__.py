"""The ground floor every layer stands on: config schemas (``config``), errors (``errors``), atomic file I/O,
hashing and the stage cache (``artifacts``). It imports no other part of prunehw."""
