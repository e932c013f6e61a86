"""The architecture contract: every parameter, format, opcode and timing rule that the RTL
(``hw``), the bit-accurate model (``golden.bitexact``), PyTorch training (``golden.training``),
the compiler, the testbenches and the performance model share. docs/architecture.md states it
in prose; this package is its code. Nothing here imports torch or a simulator (of Amaranth it
uses only ``amaranth.lib.enum``, so that the enumerations are shapes the RTL uses directly), so
every layer above can import it; ``make imports`` checks that.

Modules:

* ``fixedpoint``: the number format (section 2), ``DatapathParams`` (DW, K_MAX, W_MAX, ACC_W),
  ``check_param`` (the one out-of-range message), the sparse row format ``SparseRow`` (section 3).
* ``pe``: ``HwParams``, the PE's elaboration parameters.
* ``timing``: ``Mode`` (SRC, MSRC, OSRC) and the PE timing contract ``pe_cycles`` (section 6).
* ``steps``: ``Step`` (forward, GTA, GTW), the PE mode of each, ``STEP_NAMES``.
* ``ppu``: ``PPUConfig``, ``Op``, ``PPUCommand``, ``N_PE``, ``PPU_LAT``, ``command_cycles``
  (sections 7, 7.1).
* ``dbtd``: the DBTD threshold (``threshold_coefficient``, the estimator table) and the
  ``ThresholdFIFO`` of SparseTrain's Algorithm 1.
* ``isa``: the core's instruction set (``Opcode``, ``FIELDS``, ``encode``, ``decode``),
  ``ErrorCode``, ``CoreParams`` (section 11).
* ``schedule``: ``ArchParams`` and the layer schedule ``schedule_units`` (section 10).

Glossary (paper term -> where it is implemented; the full table with the RTL, model and
training columns is docs/glossary.md):

==========================  =====================================================================
PE                          ``hw/pe.py`` ``PE``; reference ``golden/bitexact/rowops.py``
                            (``src``, ``msrc``, ``osrc``); ``arch.pe.HwParams``,
                            ``arch.timing.pe_cycles``
Reg-1                       ``hw/pe.py`` ``PE`` (``reg1``: K weights, or the OSRC dO window)
Reg-2                       ``hw/pe.py`` ``PE`` (``reg2``); ``golden/bitexact/rowops.py``
                            ``_Window``
Port-1 / Port-2 / Port-3    ``hw/pe.py`` ``PE.port1`` (sparse row), ``PE.port2`` (weights or
                            dO row), ``PE.port3`` (MSRC mask); row format ``arch.fixedpoint.SparseRow``
SRC / MSRC / OSRC           ``arch.timing.Mode``; ``golden/bitexact/rowops.py`` ``src`` /
                            ``msrc`` / ``osrc``
PPU                         ``hw/ppu.py`` ``PPU``; ``golden/bitexact/ppu_model.py``
                            ``PPUModel``; ``arch.ppu`` (``PPUConfig``, ``Op``, ``PPUCommand``,
                            ``command_cycles``)
threshold FIFO              ``arch.dbtd.ThresholdFIFO``; integer form
                            ``golden/bitexact/ppu_model.py`` ``PPUThresholdFIFO``; RTL in
                            ``hw/ppu.py``
SparseTrain Algorithm 1     "Overall Pruning Scheme" (Dai et al. 2020):
                            ``golden/training/pruning.py`` ``GradientPruner`` (float);
                            ``PPUModel.finish`` / ``end_batch`` and ``hw/ppu.py`` (integer)
GTA                         ``arch.steps.Step.GTA`` (dI, MSRC);
                            ``golden/bitexact/rowconv.py`` ``grad_input_int``
GTW                         ``arch.steps.Step.GTW`` (dW, OSRC);
                            ``golden/bitexact/rowconv.py`` ``grad_weight_int``
DBTD                        ``arch.dbtd.threshold_coefficient`` (``c_p``);
                            ``golden/training/pruning.py`` ``dbtd_threshold``;
                            ``golden/bitexact/ppu_model.py`` ``threshold_constant``,
                            ``tau_batch``
==========================  =====================================================================

Not to be confused: Ye et al.'s Algorithm 1 is "Stochastic Pruning"
(``golden/training/pruning.py`` ``stochastic_prune``, ``ppu_model.prune_value``); Campfire's
Algorithm 1 is CK pruning (``golden/training/campfire.py``). The PPU flag ``acc_g``
("accumulate g") is not the GTA step.
"""
