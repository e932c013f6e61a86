"""Geometry of one conv layer: the one class the golden model, the compiler and the performance
model share (docs/architecture.md sections 8 and 10).

``ConvShape`` describes I (batch, in_channels, height, width), W (out_channels, in_channels/groups,
kernel, kernel) and O / dO (batch, out_channels, out_height, out_width) of a square-kernel
convolution with zero padding, ``groups`` 1 (ordinary) or in_channels (depthwise). What PyTorch
can describe and the row decomposition cannot (a non-square kernel, stride or padding, dilation,
other padding modes) is refused where a layer is read from PyTorch (``ConvShape.from_conv``);
the limits of one particular core (K_MAX, W_MAX, stride) are the compiler's refusals
(``sparsetrain.compiler.geometry``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from .fixedpoint import check_param
from .steps import Step

K_LIMIT = 16        # largest K of the contract (K_MAX range, section 1)
W_LIMIT = 4096      # longest row of the contract (W_MAX range, section 1)


@dataclass(frozen=True)
class ConvShape:
    """Geometry of one conv layer: I is (batch, in_channels, height, width), W is
    (out_channels, in_channels/groups, kernel, kernel), O and dO are (batch, out_channels,
    out_height, out_width). ``groups`` is 1 (ordinary) or in_channels (depthwise).

    ``name`` is the layer's name in its network (it prefixes every refusal); ``first`` marks the
    layer that reads the network input (it has no GTA step: no gradient of the image). The
    performance model's one-sample shapes have batch 1.
    """

    batch: int
    in_channels: int
    out_channels: int
    height: int
    width: int
    kernel: int
    stride: int = 1
    pad: int = 0
    groups: int = 1
    name: str = ""
    first: bool = False

    def __post_init__(self) -> None:
        w = f"layer {self.name}: " if self.name else ""
        check_param(w + "batch", self.batch, 1, 1 << 20)
        check_param(w + "in_channels", self.in_channels, 1, 1 << 16)
        check_param(w + "out_channels", self.out_channels, 1, 1 << 16)
        check_param(w + "height", self.height, 1, W_LIMIT)
        check_param(w + "width", self.width, 1, W_LIMIT)
        check_param(w + "K", self.kernel, 1, K_LIMIT)
        check_param(w + "stride", self.stride, 1, 2)
        check_param(w + "pad", self.pad, 0, self.kernel - 1)
        smallest = min(self.height, self.width) + 2 * self.pad
        check_param(w + "K", self.kernel, 1, smallest,
                    allowed=f"1 .. {smallest} (the padded {self.height} x {self.width} input)")
        if self.groups not in (1, self.in_channels):
            raise ValueError(f"{w}groups = {self.groups} is out of range; allowed: 1 or in_channels "
                             f"({self.in_channels})")
        if self.out_channels % self.groups:
            raise ValueError(f"{w}out_channels = {self.out_channels} is out of range; allowed: a multiple "
                             f"of groups ({self.groups})")

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_tensors(cls, input_shape: tuple[int, ...], weight_shape: tuple[int, ...], *, stride: int = 1,
                     pad: int = 0, groups: int = 1, name: str = "") -> "ConvShape":
        """From the shapes of I (N, C, H, W) and W (F, C/groups, K, K)."""
        input_shape, weight_shape = tuple(input_shape), tuple(weight_shape)
        _check_ndim("I", input_shape, "(N, C, H, W)")
        _check_ndim("W", weight_shape, "(F, C/groups, K, K)")
        f, cg, kh, kw = weight_shape
        where = f"layer {name}: " if name else ""
        if kh != kw:
            raise ValueError(f"{where}W shape = {weight_shape} is out of range; allowed: a square kernel "
                             f"(K, K), got {kh} x {kw}")
        n, c, h, w = input_shape
        shape = cls(n, c, f, h, w, kh, stride, pad, groups, name)
        if cg != shape.in_per_group:
            raise ValueError(f"{where}W shape = {weight_shape} does not match the layer; allowed: "
                             f"{shape.weight_shape}")
        return shape

    @classmethod
    def from_conv(cls, conv: Any, input_shape: tuple[int, ...], *, name: str = "",
                  first: bool = False) -> "ConvShape":
        """From an ``nn.Conv2d`` (duck-typed: no torch import) and the shape of its input
        (N, C, H, W); refuses what the row decomposition cannot run, naming the layer."""
        where = f"layer {name}: " if name else ""
        kh, kw = _pair(conv.kernel_size)
        if kh != kw:
            raise ValueError(f"{where}kernel = {kh} x {kw} is not square; allowed: K x K (the PE runs one "
                             f"kernel row of K weights per op)")
        stride = _pair(conv.stride)
        if stride[0] != stride[1]:
            raise ValueError(f"{where}stride = {stride} is out of range; allowed: the same in both dimensions")
        dilation = _pair(conv.dilation)
        if dilation != (1, 1):
            raise ValueError(f"{where}dilation = {dilation} is out of range; allowed: (1, 1) (the PE has no "
                             f"dilated row operation)")
        mode = str(getattr(conv, "padding_mode", "zeros"))
        if mode != "zeros":
            raise ValueError(f"{where}padding_mode = {mode!r} is out of range; allowed: 'zeros'")
        padding = conv.padding
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            if kh % 2 == 0:  # PyTorch pads an even kernel unevenly
                raise ValueError(f"{where}padding = 'same' with K = {kh} is out of range; allowed: an odd K "
                                 f"or explicit integers")
            padding = ((kh - 1) // 2,) * 2
        elif isinstance(padding, str):
            raise ValueError(f"{where}padding = {padding!r} is out of range; allowed: explicit integers")
        padding = _pair(padding)
        if padding[0] != padding[1]:
            raise ValueError(f"{where}padding = {padding} is out of range; allowed: the same P in both dimensions")
        if len(tuple(input_shape)) != 4:
            raise ValueError(f"{where}input shape = {tuple(input_shape)} is out of range; allowed: (N, C, H, W)")
        n, c, h, w = (int(v) for v in input_shape)
        if c != int(conv.in_channels):
            raise ValueError(f"{where}input shape = {tuple(input_shape)} does not match the layer; allowed: "
                             f"{int(conv.in_channels)} channels")
        return cls(n, c, int(conv.out_channels), h, w, kh, stride[0], padding[0], int(conv.groups), name, first)

    @classmethod
    def from_manifest(cls, name: str, entry: dict[str, Any]) -> "ConvShape":
        """From a golden manifest entry (section 9): I's and W's shapes, stride, padding, groups."""
        return cls.from_tensors(entry["arrays"]["I"]["shape"], entry["arrays"]["W"]["shape"],
                                stride=int(entry.get("stride", 1)), pad=int(entry.get("padding", 0)),
                                groups=int(entry.get("groups", 1)), name=name)

    def with_batch(self, batch: int) -> "ConvShape":
        return replace(self, batch=batch)

    # ------------------------------------------------------------------ derived sizes

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def out_per_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def out_height(self) -> int:
        return (self.height + 2 * self.pad - self.kernel) // self.stride + 1

    @property
    def out_width(self) -> int:
        return (self.width + 2 * self.pad - self.kernel) // self.stride + 1

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.in_channels, self.height, self.width)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_per_group, self.kernel, self.kernel)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.out_channels, self.out_height, self.out_width)

    def in_channels_of(self, f: int) -> range:
        g = f // self.out_per_group
        return range(g * self.in_per_group, (g + 1) * self.in_per_group)

    def out_channels_of(self, c: int) -> range:
        g = c // self.in_per_group
        return range(g * self.out_per_group, (g + 1) * self.out_per_group)

    def weight_channel(self, c: int) -> int:
        """Index of input channel c along W's second axis."""
        return c % self.in_per_group

    def terms(self, step: Step | str) -> int:
        """Largest number of products summed into one result of the step (section 2)."""
        step = Step(step)
        if step is Step.FORWARD:
            return self.in_per_group * self.kernel * self.kernel
        if step is Step.GTA:
            return self.out_per_group * self.kernel * self.kernel
        return self.batch * self.out_height * self.out_width

    def macs(self) -> int:
        """Dense multiply-accumulates of the forward step per sample (padding excluded)."""
        ty = valid_taps(self.height, self.out_height, self.kernel, self.stride, self.pad)
        tx = valid_taps(self.width, self.out_width, self.kernel, self.stride, self.pad)
        return self.out_channels * self.in_per_group * ty * tx

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "out_height": self.out_height, "out_width": self.out_width}

    # ------------------------------------------------------------------ the performance model's short names

    @property
    def c_in(self) -> int:
        return self.in_channels

    @property
    def c_out(self) -> int:
        return self.out_channels

    @property
    def h_in(self) -> int:
        return self.height

    @property
    def w_in(self) -> int:
        return self.width

    @property
    def h_out(self) -> int:
        return self.out_height

    @property
    def w_out(self) -> int:
        return self.out_width

    @property
    def k(self) -> int:
        return self.kernel

    @property
    def c_per_group(self) -> int:
        """Input channels summed into one output channel (C/groups)."""
        return self.in_per_group

    @property
    def f_per_group(self) -> int:
        return self.out_per_group


def valid_taps(n_in: int, n_out: int, k: int, stride: int, pad: int) -> int:
    """Pairs (output index, kernel tap) that land on a real input index (not padding)."""
    return sum(1 for y in range(n_out) for t in range(k) if 0 <= y * stride + t - pad < n_in)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _check_ndim(name: str, shape: tuple[int, ...], allowed: str) -> None:
    if len(shape) != 4:
        raise ValueError(f"{name} shape = {shape} is out of range; allowed: 4 dimensions {allowed}")
