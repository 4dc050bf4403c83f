"""Single faults the generator can build into a copy of the accelerator, for the mutation campaign.

Each is a deliberate, realistic design error; the verification must catch
every one (a logit differing from the golden model, or a cycle counter
differing from the analytic model, on the campaign's fixed images).
"""

__all__ = ["FAULTS"]

FAULTS = {
    "pe_psum_stuck0_bit3": "PE(0,0) partial-sum output bit 3 stuck at 0",
    "pe_psum_stuck1_bit0": "PE(R-1,C-1) partial-sum output bit 0 stuck at 1",
    "pe_weight_stuck0_bit7": "PE(1,1) weight register sign bit stuck at 0",
    "pe_gate_stale": "every PE gates a load beat on the old weight's zero flag instead of the new weight's",
    "pe_mult_flag_stuck0": "PE(R-1,C-1) never reports a multiply to the activity counters",
    "acc_stuck1_bit12": "bottom accumulator lane 1 bit 12 stuck at 1",
    "ctrl_positions_off_by_one": "controller ends each fold one output position early",
    "ctrl_row_tiles_off_by_one": "controller treats the second-to-last row tile as the last",
    "ctrl_col_tiles_off_by_one": "controller skips the last column tile",
    "im2col_row_step_off_by_one": "im2col base pixel jumps one pixel too far at each output row",
    "im2col_lane_swap": "feeder reads lane c^1 instead of c",
    "requant_no_rounding": "requantization truncates instead of rounding half up",
    "requant_no_saturation": "requantization wraps instead of saturating",
    # (dropping the ReLU alone is an equivalent mutant: saturating to an unsigned range clamps negatives to 0)
    "requant_signed_range": "requantization saturates unsigned outputs to the signed range [-128, 127]",
    "requant_shift_plus_one": "requantization shifts one bit too far",
    "bias_dropped": "the first row tile starts from 0 instead of the bias",
    "psum_dropped": "later row tiles start from 0 instead of the stored partial sum",
    "psum_not_forwarded": "a row tile returning within 4 beats (PSUM_FORWARD) reads the stale partial sum instead of the forwarded one",
    "act_write_addr_bit0_flip": "activation write address bit 0 inverted",
    "act_read_addr_bit1_flip": "bank 3's activation read address bit 1 inverted",
    "pool_window_short": "max pooling (fused or a pass of its own) ends each window one column early",
    "pool_min": "max pooling (fused or a pass of its own) keeps the minimum instead of the maximum",
    "weight_rows_swapped": "weight tile rows 0 and 1 swapped on the way into the array",
    "skew_row1_short": "row 1 of the array is skewed by 0 cycles instead of 1",
    "logits_swapped": "logits 0 and 1 swapped on the output",
}
