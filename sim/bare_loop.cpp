// The ceiling for the cocotb run: a bare C++ loop over the same Verilator model of the same harness (tb_top) and
// the same Verilog, with no testbench in between. Built and run by prunehw.sim.bench.
//
// Per image, as the harness's ports allow: pulse `load` with the image's index, wait for `loaded`, pulse
// `start`, wait for `done`, then print the packed `logits` port as hex bytes (least significant first), which
// the bench compares with the golden model. Inputs change right after a rising clock edge, as cocotb's do.
// Usage: Vtb_top N   (runs images 0 .. N-1 of those the harness holds)
#include "Vtb_top.h"
#include "verilated.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
    auto* ctx = new VerilatedContext;
    const int n = argc > 1 ? std::atoi(argv[1]) : 1;
    ctx->commandArgs(argc, argv);
    auto* top = new Vtb_top{ctx};
    top->rst = 1;
    top->load = 0;
    top->start = 0;
    top->img_index = 0;
    enum { RESET, LOAD, WAIT_LOADED, STARTED, RUNNING, FINISHED } state = RESET;
    int edges = 0, image = 0;
    bool prev_clk = false;
    const auto t0 = std::chrono::steady_clock::now();
    while (!ctx->gotFinish() && state != FINISHED) {
        top->eval();
        const bool rose = top->clk && !prev_clk;
        prev_clk = top->clk;
        if (rose) {
            ++edges;
            switch (state) {
            case RESET: if (edges == 2) { top->rst = 0; state = LOAD; } break;
            case LOAD: top->img_index = image; top->load = 1; state = WAIT_LOADED; break;
            case WAIT_LOADED: top->load = 0; if (top->loaded) { top->start = 1; state = STARTED; } break;
            case STARTED: top->start = 0; state = RUNNING; break;
            case RUNNING:
                if (top->done) {
                    const auto* bytes = reinterpret_cast<const unsigned char*>(&top->logits);
                    std::printf("logits %d ", image);
                    for (size_t i = 0; i < sizeof(top->logits); ++i) std::printf("%02x", bytes[i]);
                    std::printf("\n");
                    state = ++image >= n ? FINISHED : LOAD;
                }
                break;
            case FINISHED: break;
            }
        }
        if (!top->eventsPending()) break;
        ctx->time(top->nextTimeSlot());
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // time in the harness's precision (1 ps)
    std::printf("images %d time_ps %llu seconds %.6f\n", image, static_cast<unsigned long long>(ctx->time()), seconds);
    top->final();
    delete top;
    delete ctx;
    return image == n ? 0 : 1;
}
