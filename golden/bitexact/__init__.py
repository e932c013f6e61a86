"""Bit-accurate reference of the hardware (numpy on Python ints, no torch): the PE row operations,
the PPU, the core running a program, and a conv layer decomposed into row operations. The RTL
must equal these bit for bit and cycle for cycle."""
