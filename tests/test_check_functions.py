"""`check` of the batch threshold and the bias gradients (docs/architecture.md 7.2, 11.6) on a real
pruned layer of the small AlexNet run: the core's FIFO and tau_batch against the golden run's
recorded thresholds and the float DBTD threshold, failing on a corrupted threshold or a wrong C_m;
db against the model, the float64 sum and torch's db within the stated bounds.

(The unmodified GTA check with its threshold and db is tests/test_check.py's GTA case.)
"""
from __future__ import annotations

import numpy as np
import pytest

from sparsetrain.arch.fixedpoint import choose_frac_bits, quantize
from sparsetrain.arch.isa import Opcode, decode, encode
from sparsetrain.arch.ppu import Op
from sparsetrain.check import check_compiled, sim_params
from sparsetrain.check.functions import bias_check, threshold_check
from sparsetrain.compiler import LayerData, compile_step
from sparsetrain.compiler.bias import compile_bias_gradient
from sparsetrain.golden.bitexact.core_vec import run_program_fast
from sparsetrain.golden.bitexact.ppu_model import threshold_constant
from sparsetrain.golden.training.tensors import load_golden

LAYER = "features.2.conv"


def layer(run_dir) -> LayerData:
    return LayerData.from_golden(load_golden(run_dir), LAYER)


def model_fifos(c) -> list[list[int]]:
    """Every group's FIFO after the step's programs, run one after the other (the model)."""
    runs = []
    for ch in c.chunks:
        runs.append(run_program_fast(ch.program, ch.buffer_image, c.params, masks=ch.masks,
                                     directory=ch.directory or None, ppus=runs[-1].ppus if runs else None))
    return [pp.slots[0].fifo.entries for pp in runs[-1].ppus]


def corrupt(c, data, case: str) -> None:
    """``fifo``: the newest restored FIFO entry 3 LSB too large (it survives the END_BATCH push), as a
    wrong conversion in the compiler would make it in every program;
    ``c_m``: the threshold constant of every element instead of the wanted ones (a compiler bug),
    in the program and in its record."""
    if case == "fifo":   # in every program's restore (the later ones restore a full FIFO again)
        for ch in c.chunks:
            prog = ch.program
            i = max(j for j, w in enumerate(prog) if decode(w)[0] == Opcode.PPU and decode(w)[1]["op"] == Op.PUSH_TAU)
            f = decode(prog[i])[1]
            prog[i] = encode(Opcode.PPU, **{**f, "value": f["value"] + 3})
    else:
        c_m, c_shift = threshold_constant(data.p, int(np.prod(c.shape.input_shape)), data.estimator)
        c.threshold.update(c_m=c_m, c_shift=c_shift)
        prog = c.chunks[-1].program
        i = next(j for j, w in enumerate(prog) if decode(w)[0] == Opcode.PPU and decode(w)[1]["op"] == Op.END_BATCH)
        prog[i] = encode(Opcode.PPU, **{**decode(prog[i])[1], "c_m": c_m, "c_shift": c_shift})


@pytest.mark.parametrize("case", ["fifo", "c_m"])
def test_corrupted_threshold_or_wrong_c_m_fails_the_check(small_golden_run, case):
    data = layer(small_golden_run)
    c = compile_step(data, "gta", sim_params(), samples=1)
    assert c.threshold["end_batch"] and c.bias is not None
    c.bias = None   # the threshold alone (db: tests/test_check.py)
    good = threshold_check(c, data, model_fifos(c))
    assert good["ok"] and good["restored_ok"] and good["within"], good
    corrupt(c, data, case)
    rep = check_compiled(c, data, sim="verilator")
    print(rep.text())
    # RTL and model run the same (corrupted) program: bit-exact; the golden comparison catches it
    assert rep.bit_exact and rep.counters_equal and rep.threshold["groups_equal"]
    assert not rep.threshold["ok"] and not rep.ok
    if case == "fifo":
        assert not rep.threshold["restored_ok"] and rep.threshold["restored_max_error_lsb"] > 2
    else:
        assert rep.threshold["restored_ok"] and not rep.threshold["within"]
        assert rep.threshold["error_lsb"] > 10 * rep.threshold["bound_lsb"]


def test_db_programs_sum_the_quantised_do_and_a_wrong_value_fails(small_golden_run):
    data = layer(small_golden_run)
    p = sim_params()
    c = compile_step(data, "gta", p, samples=2)
    b = c.bias
    q = quantize(np.asarray(data.grad_output()[:2], np.float64), b.frac, p.dw)
    want = q.sum(axis=(0, 2, 3))
    got = np.zeros_like(want)
    for bc in b.chunks:
        run = run_program_fast(bc.chunk.program, bc.chunk.buffer_image, p, directory=bc.chunk.directory or None)
        assert run.error == 0 and len({u.group for u in run.units}) == p.groups   # rows on every group
        for i, f in enumerate(bc.channels):
            got[f] = run.db_read(i, p)
    assert np.array_equal(got, want)
    ok = bias_check(b, got, got, data, complete=False)
    assert ok["ok"] and ok["bit_exact"] and ok["within"] and ok["max_error"] > 0
    wrong = got.copy()
    wrong[3] += 1
    assert not bias_check(b, wrong, got, data, complete=False)["ok"]          # RTL != model
    far = got.copy()
    far[5] += b.terms   # n LSB: twice the bound
    assert not bias_check(b, far, far, data, complete=False)["within"]


def test_db_bound_against_torch_over_the_whole_batch(small_golden_run):
    """The quantised sum (what the banks hold, bit-exact to the model) against torch's float32
    conv.bias.grad of the golden run: within n 2**-(f+1) + gamma_n sum|dO| (section 11.6), which
    the unquantised float64 sum is far inside of."""
    data = layer(small_golden_run)
    g = np.asarray(data.grad_output(), np.float64)
    frac = choose_frac_bits(g, 16)
    b = compile_bias_gradient(data.shape, quantize(g, frac, 16), g, frac, sim_params(db_depth=256))
    q = quantize(g, frac, 16).sum(axis=(0, 2, 3))
    rep = bias_check(b, q, q, data, complete=True)
    print(rep)
    assert rep["ok"] and rep["torch_within"] and 0 < rep["torch_max_error"] <= rep["torch_bound"]
    assert np.abs(g.sum(axis=(0, 2, 3)) - data.arrays["db"]).max() < 1e-3 * rep["torch_bound"]
