"""The compiler: a conv layer and its float tensors -> core programs, buffer images and masks.

Modules by job (docs/usage.md):

* ``geometry``: the compiler's refusals (what this core cannot run); the layer's geometry itself
  is ``sparsetrain.arch.geometry.ConvShape``.
* ``quantise``: scales, integer operands, float64 references and error bounds of a step.
* ``layout``: which operand rows, weight rows and masks each program holds (buffer allocation,
  splitting a step into programs that fit the memories).
* ``emit``: instruction words and buffer images; ``ProgramBuilder``, the one program builder
  (also used by ``random_programs`` for the core's directed and random tests).
* ``compile``: ``LayerData``, ``compile_step`` / ``compile_layer`` / ``compile_network``.

Running a compiled step on the RTL and the model is ``sparsetrain.check``.
"""
from __future__ import annotations

from ..arch.geometry import ConvShape
from .compile import STEP_NAMES, CompiledStep, LayerData, compile_layer, compile_network, compile_step, result_units
from .emit import PRUNE_SLOT, Chunk, ProgramBuilder, ResultRow
from .geometry import KINDS, acc_bits_needed


__all__ = ["ConvShape", "STEP_NAMES", "CompiledStep", "LayerData", "compile_layer", "compile_network", "compile_step",
           "result_units", "PRUNE_SLOT", "Chunk", "ProgramBuilder", "ResultRow", "KINDS", "acc_bits_needed"]
