"""The compiler: scale choice, refusals with their reasons, program structure, and programs that the
bit-accurate core model runs to the same integers as golden.bitexact.rowconv's integer path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sparsetrain.arch.fixedpoint import sat_limit
from sparsetrain.arch.isa import CoreParams, Opcode, decode, entry_decode
from sparsetrain.arch.ppu import Op as PPUOp
from sparsetrain.arch.steps import Step
from sparsetrain.check.harness import restored_tau_pred
from sparsetrain.compiler import ConvShape, LayerData, acc_bits_needed, compile_network, compile_step
from sparsetrain.golden.bitexact import rowconv
from sparsetrain.golden.bitexact.core_model import run_program
from sparsetrain.golden.bitexact.rowconv import layer_row_ops

PARAMS = CoreParams(acc_w=48, groups=2, buf_depth=1 << 14, mask_depth=1 << 10, imem_depth=1 << 14, dir_depth=1 << 12)


def random_layer(rng: np.random.Generator, *, n=2, c=3, f=4, h=7, w=9, k=3, stride=1, pad=1, groups=1,
                 kind="conv_relu", pruned=False, density=0.5) -> LayerData:
    """Float tensors of a layer with ReLU-like sparse inputs and sparse gradients."""
    shape = ConvShape(n, c, f, h, w, k, stride, pad, groups, name="rand")
    x = rng.standard_normal(shape.input_shape) * (rng.random(shape.input_shape) < density)
    arrays = {"I": np.maximum(x, 0).astype(np.float32),
              "W": (rng.standard_normal(shape.weight_shape) * 0.3).astype(np.float32),
              "b": (rng.standard_normal(f) * 0.1).astype(np.float32),
              "dO": (rng.standard_normal(shape.output_shape) * 1e-3
                     * (rng.random(shape.output_shape) < density)).astype(np.float32)}
    fifo = [2e-4, 3e-4, 2.5e-4, 3.5e-4] if pruned else []
    return LayerData(shape, kind, arrays, fifo, pruned, pruned, 0.9, "unbiased", 7)


def model_result(c, params=PARAMS):
    run = run_program(c.program, c.buffer_image, params, masks=c.masks)
    assert run.error == 0, run.error_message
    return run, c.decode(lambda r: run.row(r.dir, r.length, params))


@pytest.mark.parametrize("geom", [dict(), dict(stride=2, pad=2, k=5, h=11, w=12), dict(groups=3, f=6, pad=0),
                                  dict(k=1, pad=0)], ids=["3x3", "5x5-s2-p2", "depthwise", "1x1"])
def test_programs_match_rowconv_integer_path(seed, geom):
    rng = np.random.default_rng(seed)
    data = random_layer(rng, **geom)
    for step in Step:
        c = compile_step(data, step, PARAMS)
        run, got = model_result(c)
        t, sh = c.tensors, c.shape
        if step is Step.FORWARD:
            want = rowconv.forward_int(sh, t.q["I"], t.q["W"], frac_in=t.frac["I"], frac_w=t.frac["W"],
                                       frac_out=t.frac["O"], bias_q=t.q["b"], frac_bias=t.frac["b"],
                                       acc_w=PARAMS.acc_w).value
            want = np.maximum(want, 0)  # conv_relu: the PPU applies the ReLU
        elif step is Step.GTA:
            want = rowconv.grad_input_int(sh, t.q["dO"], t.q["W"], frac_grad=t.frac["dO"], frac_w=t.frac["W"],
                                          frac_out=t.frac["dI"], mask=t.mask, acc_w=PARAMS.acc_w).value
        else:
            want = rowconv.grad_weight_int(sh, t.q["I"], t.q["dO"], frac_in=t.frac["I"], frac_grad=t.frac["dO"],
                                           frac_out=t.frac["dW"], acc_w=PARAMS.acc_w).value
        np.testing.assert_array_equal(got, want, err_msg=f"{step.value}")
        assert np.count_nonzero(want), "a test whose result is all zero proves nothing"
        # The model's cycles are the contract at the core's unit rate (one UNIT per cycle, s.11.4, 12.9)
        assert run.cycles == run.cycles_contract, step
        # Section 2: the bit-accurate result is within the bound of the float64 result.
        err = np.abs(got * 2.0 ** -t.frac[t.result_name] - t.reference)
        assert np.all(err <= t.bound), f"{step.value}: worst error/bound {np.max(err / t.bound):.3f}"


def test_scale_choice_is_tight_and_never_saturates(seed):
    data = random_layer(np.random.default_rng(seed))
    lim = sat_limit(PARAMS.dw)
    c = compile_step(data, "forward", PARAMS)
    for name in ("I", "W"):
        x = np.abs(np.asarray(data.arrays[name], np.float64)).max()
        f = c.tensors.frac[name]
        assert x * 2.0 ** f <= lim < x * 2.0 ** (f + 1), name  # one more bit would overflow
        assert np.abs(c.tensors.q[name]).max() > lim // 2
    # The result's scale: chosen from the float result, so the stored maximum uses the top bit.
    ref = np.abs(c.tensors.reference).max()
    fo = c.tensors.frac["O"]
    assert ref * 2.0 ** fo <= lim < ref * 2.0 ** (fo + 1)
    assert c.tensors.shift == c.tensors.frac["I"] + c.tensors.frac["W"] - fo
    assert c.tensors.frac["b"] <= c.tensors.frac["I"] + c.tensors.frac["W"]


def test_program_structure(seed):
    data = random_layer(np.random.default_rng(seed), pruned=True)
    for step in Step:
        c = compile_step(data, step, PARAMS)
        words = [decode(w) for w in c.program]
        assert words[-1][0] == Opcode.END
        syncs = [i for i, (op, _) in enumerate(words) if op == Opcode.SYNC]
        assert len(syncs) == 1 and words[syncs[0]][1]["step"] == {Step.FORWARD: 0, Step.GTA: 1, Step.GTW: 2}[step]
        ops = list(layer_row_ops(c.shape, step))
        # one unit block (section 12.9): UNITS(count), the count UNIT words, then their OPs unit by unit
        h = syncs[0] + 1
        assert words[h][0] == Opcode.UNITS and words[h][1]["count"] == c.n_units
        unit_words = [words[h + 1 + q] for q in range(c.n_units)]
        assert all(op == Opcode.UNIT for op, _ in unit_words)
        i, seen_ops, slots = h + 1 + c.n_units, 0, []
        for _, u in unit_words:
            assert all(words[i + j][0] == Opcode.OP for j in range(u["n_ops"]))
            for j in range(u["n_ops"]):
                f = words[i + j][1]
                op = ops[seen_ops + j]
                assert f["mode"] == step.mode and f["k"] == c.shape.kernel
                # Port-1 row is the quantised operand row of the decomposition's op.
                src = c.tensors.q["dO"][op.n, op.f, op.out_row] if step is Step.GTA else c.tensors.q["I"][op.n, op.c, op.in_row]
                dense = np.zeros(src.size, np.int64)
                a = f["addr1"]
                while True:
                    v, o, last = entry_decode(c.buffer_image[a], PARAMS)
                    if o != PARAMS.off_end:
                        dense[o] = v
                    a += 1
                    if last:
                        break
                np.testing.assert_array_equal(dense, src)
                if step is not Step.GTW:  # weight rows: exactly K words, offsets 0..K-1, last on the K-th
                    wr = [entry_decode(c.buffer_image[f["addr2"] + q], PARAMS) for q in range(c.shape.kernel)]
                    assert [o for _, o, _ in wr] == list(range(c.shape.kernel)) and [l for *_, l in wr][-1] == 1
            seen_ops += u["n_ops"]
            slots.append((u["out_addr"], u["length"]))
            i += u["n_ops"]
        assert seen_ops == len(ops) and len(slots) == c.n_units
        assert words[i][0] in (Opcode.PPU, Opcode.END)   # the block ends at its last OP
        # Result slots lie above the operands and never overlap.
        starts = sorted(slots)
        assert starts[0][0] >= len(c.buffer_image)
        assert all(a + l <= b for (a, l), (b, _) in zip(starts, starts[1:]))
        assert c.buffer_words == len(c.buffer_image) + sum(l for _, l in slots) <= PARAMS.buf_depth
        ppu = [f for op, f in words if op == Opcode.PPU]
        if step is Step.GTA:  # restore the FIFO in every PPU, one seed per group; a pruned layer's
            # batch ends with END_BATCH on every group (the controller's threshold, section 11.3)
            end = [PPUOp.END_BATCH] if c.threshold["end_batch"] else []
            assert [f["op"] for f in ppu] == ([PPUOp.CLEAR_SLOT] + [PPUOp.PUSH_TAU] * PARAMS.n_f
                                              + [PPUOp.SEED] * PARAMS.groups + end)
            assert all(f["all"] for f in ppu[:1 + PARAMS.n_f])
            if end:
                assert ppu[-1]["all"] and (ppu[-1]["c_m"], ppu[-1]["c_shift"]) == (c.threshold["c_m"],
                                                                                   c.threshold["c_shift"])
                assert words[-2][0] == Opcode.PPU   # right before END
        else:
            assert ppu == []


def test_pruned_gta_keeps_large_values_and_prunes_small_ones(seed):
    data = random_layer(np.random.default_rng(seed), n=3, pruned=True, density=0.9)
    c = compile_step(data, "gta", PARAMS)
    run, got = model_result(c)
    t = c.tensors
    unpruned = rowconv.grad_input_int(c.shape, t.q["dO"], t.q["W"], frac_grad=t.frac["dO"], frac_w=t.frac["W"],
                                      frac_out=t.frac["dI"], mask=t.mask, acc_w=PARAMS.acc_w).value
    tau = restored_tau_pred(c.threshold["fifo"], PARAMS.n_f)  # the step's END_BATCH pushed since
    assert tau == (sum(c.threshold["fifo"]) + PARAMS.n_f // 2) >> 2 or abs(tau - sum(c.threshold["fifo"]) / 4) <= 0.5
    big = np.abs(unpruned) >= tau
    np.testing.assert_array_equal(got[big], unpruned[big])
    small = ~big
    assert np.all(np.isin(np.abs(got[small]), [0, tau]))
    assert np.all(np.sign(got[small & (got != 0)]) == np.sign(unpruned[small & (got != 0)]))
    assert np.count_nonzero(got[small] == 0) > 0 and np.count_nonzero(small) > 0


def _refusal(**kw):
    return pytest.raises(ValueError, **kw)


@pytest.mark.parametrize("change, message", [
    (dict(kernel_size=(3, 5)), "not square"),
    (dict(kernel_size=13, padding=0), "K_MAX"),
    (dict(stride=3), "stride"),
    (dict(stride=(1, 2)), "stride"),
    (dict(dilation=2), "dilation"),
    (dict(groups=3, in_channels=6, out_channels=6), "groups = 3"),
    (dict(padding_mode="reflect"), "padding_mode"),
    (dict(padding=(1, 0)), "padding"),
])
def test_refuses_layers_the_core_cannot_run(change, message):
    base = dict(in_channels=2, out_channels=2, kernel_size=3, stride=1, padding=1, dilation=1, groups=1, bias=False)
    conv = nn.Conv2d(**{**base, **change})
    c = conv.in_channels
    arrays = {"I": np.ones((1, c, 16, 16), np.float32), "W": conv.weight.detach().numpy()}
    with _refusal(match=message) as e:
        compile_step(LayerData.from_conv("bad", conv, "conv_relu", arrays), "forward", PARAMS)
    assert "layer bad" in str(e.value)


def test_refuses_a_block_kind_it_does_not_know():
    with _refusal(match=r"layer x: kind = 'conv_bn' is out of range; allowed: conv_relu, conv_bn_relu"):
        LayerData(ConvShape(1, 1, 1, 4, 4, 3, name="x"), "conv_bn", {})


def test_refuses_rows_longer_than_w_max():
    data = random_layer(np.random.default_rng(0), w=70, h=3)
    with _refusal(match=r"rows of 70 columns .* W_MAX = 64"):
        compile_step(data, "forward", PARAMS)


def test_refuses_accumulator_too_narrow():
    data = random_layer(np.random.default_rng(0), c=8, k=3)
    narrow = CoreParams(acc_w=40, buf_depth=1 << 14, imem_depth=1 << 14)
    need = acc_bits_needed(16, 8 * 9)
    compile_step(data, "forward", narrow)  # 72 terms: 2*16 + 7 + 1 = 40 bits, accepted
    assert need == 40
    wide = random_layer(np.random.default_rng(0), c=16, k=3)
    with _refusal(match=r"144 products .* ACC_W >= 41 .* ACC_W = 40"):
        compile_step(wide, "forward", narrow)
    with _refusal(match=r"gtw sums 126 products|gtw sums"):
        compile_step(random_layer(np.random.default_rng(0), n=40), "gtw", CoreParams(acc_w=40, buf_depth=1 << 16,
                                                                                    imem_depth=1 << 16))


def test_refuses_a_layer_that_does_not_fit_the_buffer_and_names_a_size():
    data = random_layer(np.random.default_rng(0))
    tiny = CoreParams(acc_w=48, buf_depth=16, imem_depth=1 << 14)
    with _refusal(match=r"layer rand: does not fit: needs (\d+) buffer words for one result row of forward and its "
                        r"operands, the core has BUF_DEPTH = 16; a core with BUF_DEPTH >= \1") as e:
        compile_step(data, "forward", tiny)
    # Following the named sizes (they grow with the largest unit met so far) ends in a program that fits.
    have = 16
    for _ in range(20):
        need = int(str(e.value).split("needs ")[1].split()[0])
        assert need > have
        have = need
        try:
            c = compile_step(data, "forward", CoreParams(acc_w=48, buf_depth=have, imem_depth=1 << 14))
            break
        except ValueError as err:
            e = type("E", (), {"value": err})
    assert max(ch.buffer_words for ch in c.chunks) <= have
    with _refusal(match=r"needs \d+ instruction words for one result row .* IMEM_DEPTH = 16"):
        compile_step(random_layer(np.random.default_rng(0), c=8), "forward",
                     CoreParams(acc_w=48, buf_depth=1 << 14, imem_depth=16))
    with _refusal(match="samples"):
        compile_step(data, "forward", PARAMS, samples=5)


def test_a_layer_larger_than_the_memories_is_split_into_programs_of_whole_units(seed):
    data = random_layer(np.random.default_rng(seed), n=3, pruned=False)
    small = CoreParams(acc_w=48, buf_depth=160, imem_depth=96, dir_depth=8, mask_depth=4)
    for step in Step:
        whole = compile_step(data, step, PARAMS)
        split = compile_step(data, step, small)
        assert len(whole.chunks) == 1 and len(split.chunks) > 2, step
        assert split.n_units == whole.n_units and split.n_ops == whole.n_ops
        for ch in split.chunks:
            assert len(ch.program) <= small.imem_depth and ch.buffer_words <= small.buf_depth
            assert len(ch.results) <= small.dir_depth and len(ch.masks) <= small.mask_depth
        runs = [run_program(ch.program, ch.buffer_image, small, masks=ch.masks) for ch in split.chunks]
        assert all(r.error == 0 for r in runs)
        got = split.decode(lambda r: runs[r.chunk].row(r.dir, r.length, small))
        _, want = model_result(whole)
        np.testing.assert_array_equal(got, want, err_msg=step.value)
    with pytest.raises(ValueError, match="split into"):
        split.program


def test_compile_network_every_conv_and_refusal_names_the_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 3, 3, stride=2, padding=1))
    rng = np.random.default_rng(1)
    x0 = np.maximum(rng.standard_normal((1, 1, 10, 10)), 0).astype(np.float32)
    with torch.no_grad():
        x1 = torch.relu(model[0](torch.from_numpy(x0))).numpy()
    layers = {}
    for name, x in (("0", x0), ("2", x1)):
        conv = dict(model.named_modules())[name]
        layers[name] = LayerData.from_conv(name, conv, "conv_relu",
                                           {"I": x, "W": conv.weight.detach().numpy(),
                                            "b": conv.bias.detach().numpy(),
                                            "dO": rng.standard_normal((1, conv.out_channels, 10 // conv.stride[0],
                                                                       10 // conv.stride[0])).astype(np.float32)})
    out = compile_network(model, layers, PARAMS)
    assert list(out) == ["0", "2"]
    assert set(out["0"]) == {Step.FORWARD, Step.GTW}          # the first conv has no GTA
    assert set(out["2"]) == {Step.FORWARD, Step.GTA, Step.GTW}
    assert out["2"][Step.FORWARD].shape.stride == 2
    model[2] = nn.Conv2d(2, 3, 3, padding=2, dilation=2)
    with _refusal(match=r"layer 2: dilation = \(2, 2\)"):
        compile_network(model, layers, PARAMS)


def test_program_builder_places_result_rows_either_way(seed):
    """The one ProgramBuilder: result slots after the rows written before the next instruction (the
    core tests' layout) or above every operand (the compiler's); the core model gives the same rows."""
    from sparsetrain.compiler import ProgramBuilder
    from sparsetrain.arch.fixedpoint import SparseRow
    from sparsetrain.arch.timing import Mode
    rng = np.random.default_rng(seed)
    rows = [rng.integers(-50, 50, 9) * (rng.random(9) < 0.5) for _ in range(4)]
    weights = [rng.integers(-50, 50, 3) for _ in range(4)]
    got = {}
    for last in (False, True):
        b = ProgramBuilder(PARAMS, results_last=last)
        b.instr(Opcode.SYNC, step=0)
        for u in range(2):
            ops = [b.op(Mode.SRC, 3, 9, 7, b.row(SparseRow.from_dense(rows[2 * u + i])), b.weights(weights[2 * u + i]))
                   for i in range(2)]
            b.unit(7, ops)
        b.instr(Opcode.END)
        program, image, masks = b.build()
        slots = [a for a, _ in b.results]
        operands = sum(max(1, np.count_nonzero(r)) for r in rows) + 4 * 3
        if last:
            assert len(image) == operands and slots == [operands, operands + 7]
        else:
            assert len(image) == operands + 14 and slots == [operands, operands + 7]  # placed at END
        run = run_program(program, image, PARAMS, masks=masks)
        assert run.error == 0, run.error_message
        got[last] = [run.row(d, 7, PARAMS) for d in range(2)]
    want = [sum(np.convolve(rows[2 * u + i], weights[2 * u + i][::-1], "valid") for i in range(2)) for u in range(2)]
    for last in (False, True):
        np.testing.assert_array_equal(np.array(got[last]), np.array(want))


def test_unit_blocks_fill_the_instruction_memory_exactly(monkeypatch, seed):
    """Programs cut by IMEM_DEPTH alone: each is unit blocks (section 12.9) of at most UNITS_MAX
    units (3 here, so a program has several blocks), fits the memory, and the next program's first
    unit would not have fitted (the packer counts every UNITS header word, no more, no less: over
    a range of depths some cut falls where one header word decides); the split programs give the
    same rows as one program."""
    from sparsetrain.compiler import emit, layout
    monkeypatch.setattr(layout, "UNITS_MAX", 3)
    monkeypatch.setattr(emit, "UNITS_MAX", 3)
    data = random_layer(np.random.default_rng(seed), n=1, pruned=False)

    def blocks(program):
        """[(count, [n_ops of each unit])] of a program's unit blocks, checked for their layout."""
        out, i = [], 0
        while decode(program[i])[0] != Opcode.END:
            op, f = decode(program[i])
            if op != Opcode.UNITS:
                i += 1
                continue
            units = [decode(program[i + 1 + q]) for q in range(f["count"])]
            assert all(o == Opcode.UNIT for o, _ in units)
            n_ops = [u["n_ops"] for _, u in units]
            i += 1 + f["count"]
            assert all(decode(program[i + q])[0] == Opcode.OP for q in range(sum(n_ops)))
            i += sum(n_ops)
            out.append((f["count"], n_ops))
        return out

    header_decided = 0
    for step in (Step.FORWARD, Step.GTW):
        whole = compile_step(data, step, PARAMS)
        for depth in range(36, 64):
            small = CoreParams(acc_w=48, buf_depth=1 << 14, imem_depth=depth, dir_depth=1 << 12, mask_depth=1 << 10)
            split = compile_step(data, step, small)
            assert len(split.chunks) > 2, step
            progs = [blocks(ch.program) for ch in split.chunks]
            for ch, bl, nxt in zip(split.chunks, progs, progs[1:] + [None]):
                units = sum(c for c, _ in bl)
                assert len(ch.program) <= depth and [c for c, _ in bl[:-1]] == [3] * (len(bl) - 1)
                assert units == len(ch.results)
                if nxt is not None:   # the next unit: its UNIT and OP words, and a header when a block is full
                    cost = 1 + nxt[0][1][0] + int(units % 3 == 0)
                    assert len(ch.program) + cost > depth, (step, depth)
                    header_decided += len(ch.program) + cost == depth + 1 and units % 3 == 0
        runs = [run_program(ch.program, ch.buffer_image, small, masks=ch.masks) for ch in split.chunks]
        assert all(r.error == 0 for r in runs)
        got = split.decode(lambda r: runs[r.chunk].row(r.dir, r.length, small))
        _, want = model_result(whole)
        np.testing.assert_array_equal(got, want, err_msg=step.value)
    assert header_decided > 0, "no cut where a header word decided: the accounting is untested"
