"""The architecture contract: every parameter, format, opcode and timing rule that the RTL
(``hw``), the bit-accurate model (``golden.bitexact``), the compiler, the testbenches and the
performance model share. docs/architecture.md states it in prose; this package is its code.

Nothing here imports torch or a simulator, so every layer above can use it.
"""
