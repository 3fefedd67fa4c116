"""Lowerings of plain torch layers (per-step tensors have no batch axis, channels first)."""
from __future__ import annotations

from torch import nn

from step_deploy import ir

from .builder import Builder, CaptureError, array, child, lower, lowers


def _ints(v, n=2):
    return tuple(int(i) for i in v) if isinstance(v, (tuple, list)) else (int(v),) * n


def _check_conv(m, path):
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise CaptureError(f"module {path!r} ({type(m).__name__}): padding={m.padding!r}, "
                           f"padding_mode={m.padding_mode!r} not supported; use integer zero padding")


@lowers(nn.Conv2d)
def _conv2d(b: Builder, m: nn.Conv2d, path: str, x: str) -> str:
    _check_conv(m, path)
    return b.add(ir.Conv2d, path, (x,), weight=array(m.weight), bias=array(m.bias), stride=_ints(m.stride),
                 padding=_ints(m.padding), dilation=_ints(m.dilation), groups=int(m.groups))


@lowers(nn.Conv1d)
def _conv1d(b: Builder, m: nn.Conv1d, path: str, x: str) -> str:
    _check_conv(m, path)
    return b.add(ir.Conv1d, path, (x,), weight=array(m.weight), bias=array(m.bias), stride=int(m.stride[0]),
                 padding=int(m.padding[0]), dilation=int(m.dilation[0]), groups=int(m.groups))


@lowers(nn.Linear)
def _linear(b: Builder, m: nn.Linear, path: str, x: str) -> str:
    return b.add(ir.Linear, path, (x,), weight=array(m.weight), bias=array(m.bias))


def batchnorm(b: Builder, m: nn.modules.batchnorm._BatchNorm, path: str, x: str, axis: int = 0) -> str:
    if not m.track_running_stats or m.running_mean is None:
        raise CaptureError(f"module {path!r} ({type(m).__name__}) has no running statistics; "
                           f"inference capture needs track_running_stats=True")
    c = m.num_features
    gamma = array(m.weight) if m.affine else __import__("numpy").ones(c, "float32")
    beta = array(m.bias) if m.affine else __import__("numpy").zeros(c, "float32")
    return b.add(ir.BatchNorm, path, (x,), gamma=gamma, beta=beta, mean=array(m.running_mean),
                 var=array(m.running_var), eps=float(m.eps), axis=axis)


@lowers(nn.BatchNorm1d, nn.BatchNorm2d)
def _bn(b, m, path, x):
    return batchnorm(b, m, path, x, axis=0)


@lowers(nn.MaxPool2d)
def _maxpool(b: Builder, m: nn.MaxPool2d, path: str, x: str) -> str:
    if m.ceil_mode or _ints(m.dilation) != (1, 1):
        raise CaptureError(f"module {path!r} (MaxPool2d): ceil_mode / dilation are not supported")
    return b.add(ir.MaxPool2d, path, (x,), kernel_size=_ints(m.kernel_size),
                 stride=_ints(m.stride if m.stride is not None else m.kernel_size), padding=_ints(m.padding))


@lowers(nn.AvgPool2d)
def _avgpool(b: Builder, m: nn.AvgPool2d, path: str, x: str) -> str:
    if m.ceil_mode or not m.count_include_pad or m.divisor_override:
        raise CaptureError(f"module {path!r} (AvgPool2d): only ceil_mode=False, count_include_pad=True is supported")
    return b.add(ir.AvgPool2d, path, (x,), kernel_size=_ints(m.kernel_size),
                 stride=_ints(m.stride if m.stride is not None else m.kernel_size), padding=_ints(m.padding))


@lowers(nn.Flatten)
def _flatten(b: Builder, m: nn.Flatten, path: str, x: str) -> str:
    if m.start_dim == 0:
        raise CaptureError(f"module {path!r} (Flatten): start_dim=0 would merge the batch axis")
    end = m.end_dim - 1 if m.end_dim > 0 else m.end_dim
    return b.add(ir.Flatten, path, (x,), start_dim=m.start_dim - 1, end_dim=end)


@lowers(nn.Identity, nn.Dropout)
def _identity(b, m, path, x):
    return x


@lowers(nn.Sequential)
def _sequential(b: Builder, m: nn.Sequential, path: str, x: str) -> str:
    for name, sub in m.named_children():
        x = lower(b, sub, child(path, name), x)
    return x
