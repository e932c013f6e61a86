"""Bias gradients of a layer on the core: programs whose units add dO rows into the groups'
bias-gradient banks (docs/architecture.md section 11.6).

``db[f] = sum over n, y, x of dO[n, f, y, x]`` of the dO the layer's GTA and GTW consume
(``LayerData.grad_output``: for a Conv-ReLU layer the gradient after the ReLU and after the
pruning of the layer above, which is what torch's ``conv.bias.grad`` is the sum of). Each dO row
is one unit: one SRC op with K = 1 and the weight 1 passes the row through a PE unchanged, the
PPU finishes it with shift 0 (exact: a DW-bit value), and the unit's ``db`` names the channel's
bank entry, so the group adds the written row's sum into its bank; the host reads
(``host_rsel = 2``) the sum over the groups' banks. Channels are packed greedily into programs
that fit the core's memories and DB_DEPTH; a channel never spans two programs (a program run
starts with cleared banks), so every value read back is final: no host arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arch.fixedpoint import sat_limit
from ..arch.geometry import ConvShape
from ..arch.isa import CoreParams, Opcode
from ..arch.steps import Step
from ..arch.timing import Mode
from .emit import STEP_INDEX, Chunk, ProgramBuilder, ResultRow
from .geometry import check_fits
from .layout import block_headers, row_words


@dataclass
class BiasChunk:
    """One bias-gradient program: bank entry ``i`` holds channel ``channels[i]``."""

    chunk: Chunk
    channels: list[int]


@dataclass
class BiasGradient:
    """The compiled bias gradient of a layer: its programs, the integer scale (dO's frac bits),
    the float64 reference of the same dO values and the element-wise bound of section 11.6."""

    chunks: list[BiasChunk]
    frac: int                  # frac bits of the db sums (= dO's: no requantisation)
    reference: np.ndarray      # float64 sum of the float dO per channel (the compiled samples)
    bound: np.ndarray          # n * 2**-(frac+1) per channel (section 11.6)
    terms: int                 # dO elements summed per channel (N * H_out * W_out)
    abs_sum: np.ndarray        # sum |dO| per channel (float64), for torch's float32 summation term


def check_bank_width(shape: ConvShape, terms: int, p: CoreParams) -> None:
    """The exact sum of ``terms`` DW-bit values must fit G_W (the bank saturates otherwise)."""
    g_w = p.ppu_config().g_w
    if terms * sat_limit(p.dw) > sat_limit(g_w):
        raise ValueError(f"layer {shape.name}: a bias-gradient sum of {terms} dO values needs more than "
                         f"G_W = {g_w} bits; allowed: N * H_out * W_out * (2**(DW-1) - 1) <= 2**(G_W-1) - 1 "
                         f"(fewer samples)")


def compile_bias_gradient(shape: ConvShape, q_do: np.ndarray, g: np.ndarray, frac: int,
                          p: CoreParams) -> BiasGradient:
    """Programs for db of every output channel from the quantised dO ``q_do`` (N, F, H_out, W_out)
    with ``frac`` frac bits; ``g`` is the float dO they were quantised from."""
    n, f_all, h, w = q_do.shape
    terms = n * h * w
    check_bank_width(shape, terms, p)
    words = row_words(q_do)                      # (N, F, H_out) buffer words per row
    per_channel_words = words.sum(axis=(0, 2)) + n * h * max(1, w)   # operand rows + result slots
    rows = n * h
    dirs = 2 if p.skip_empty else 1             # directory entries per dO row: its result (+ itself, SKIP_EMPTY)
    chunks: list[BiasChunk] = []
    channels: list[int] = []
    used = 1                                     # the one weight word
    def instr_words(units: int) -> int:   # SYNC, END, the unit blocks' headers, UNIT + OP per unit
        return 2 + block_headers(units) + 2 * units

    for f in range(f_all):
        need = int(per_channel_words[f])
        fits = (len(channels) < p.db_depth and used + need <= p.buf_depth
                and instr_words(rows * (len(channels) + 1)) <= p.imem_depth
                and dirs * rows * (len(channels) + 1) <= p.dir_depth)
        if not fits and channels:
            chunks.append(_emit(len(chunks), q_do, channels, p))
            channels, used = [], 1
            fits = (used + need <= p.buf_depth and instr_words(rows) <= p.imem_depth and dirs * rows <= p.dir_depth)
        if not fits:
            what = "the dO rows of one channel and their result rows (bias gradient)"
            check_fits(shape, f"buffer words for {what}", 1 + need, p.buf_depth, "BUF_DEPTH", 1 << 20)
            check_fits(shape, f"instruction words for {what}", instr_words(rows), p.imem_depth, "IMEM_DEPTH",
                       1 << 20)
            check_fits(shape, f"directory entries for {what}", dirs * rows, p.dir_depth, "DIR_DEPTH", 1 << 16)
        channels.append(f)
        used += need
    if channels:
        chunks.append(_emit(len(chunks), q_do, channels, p))
    g64 = np.asarray(g, np.float64)
    return BiasGradient(chunks, frac, g64.sum(axis=(0, 2, 3)), np.full(f_all, terms * 2.0 ** -(frac + 1)), terms,
                        np.abs(g64).sum(axis=(0, 2, 3)))


def _emit(index: int, q_do: np.ndarray, channels: list[int], p: CoreParams) -> BiasChunk:
    """Operand rows (channel by channel), the weight 1, SYNC, one unit per dO row (a unit block,
    section 12.9), END."""
    n, _, h, w = q_do.shape
    b = ProgramBuilder(p, results_last=True)
    addr = {(i, f, y): b.row(q_do[i, f, y]) for f in channels for i in range(n) for y in range(h)}
    one = b.weights(np.array([1]))
    b.instr(Opcode.SYNC, step=STEP_INDEX[Step.GTA])
    op_word = b.op_encoder(Mode.SRC, 1, w, w)
    keys = []
    b.begin_block()
    for bank, f in enumerate(channels):
        for i in range(n):
            for y in range(h):
                b.unit(w, [op_word(addr[i, f, y], one)], db=bank)
                keys.append((i, f, y))
    b.instr(Opcode.END)
    buffer_words = b.buffer_words
    program, image, masks = b.build()
    results = [ResultRow(index, d, a, key, length) for d, ((a, length), key) in enumerate(zip(b.results, keys))]
    return BiasChunk(Chunk(program, image, masks, results, buffer_words, len(keys), directory=b.directory_image()),
                     list(channels))
