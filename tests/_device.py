"""A second device on a CPU-only machine, to test where stalign sends tensors and modules.

:class:`VirtualDevice` runs every torch operation on the CPU while tracking, for each tensor, the device the code
*meant* it to be on: ``torch.device("cpu", 0)`` (the "virtual" device, a real device that torch accepts
everywhere) or the host (``torch.device("cpu")``). A tensor goes to the virtual device only through
``.to(device)`` or a factory call with ``device=``; every other result inherits the device of its inputs. Passing
``device=torch.device("cpu", 0)`` to a stalign function then shows, on a machine without a GPU, what would happen
on one:

- ``mismatches``: operations that mix tensors of the two devices (on CUDA: "Expected all tensors to be on the same
  device"), e.g. a batch left on the host fed to a model on the device, or a tensor created without ``device=``;
- ``syncs``: operations that read a device tensor on the host (``bool``, ``item``, ``tolist``, ``nonzero``, copies
  to the host), each of which makes the host wait for a GPU;
- ``errors``: ``.numpy()`` of a device tensor (a ``TypeError`` on CUDA).

``tensor.device`` answers the tracked device, so code that follows a tensor's or a model's device behaves as on a
GPU. Zero-dimensional host tensors mix with device tensors freely, as on CUDA.
"""

from __future__ import annotations

import traceback
import types

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

HOST = torch.device("cpu")
#: The device the tests pass as ``device=``: real (torch accepts it), but distinct from the host.
VIRTUAL = torch.device("cpu", 0)

_TO = {torch.Tensor.to}
_TO_HOST = {torch.Tensor.cpu, torch.Tensor.numpy}
_SYNC = {
    torch.Tensor.__bool__, torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__index__, torch.Tensor.item,
    torch.Tensor.tolist, torch.Tensor.nonzero, torch.nonzero,
}  # fmt: skip
# ops that legitimately take tensors of two devices: copies, and indexing with host indices
_CROSS = {torch.Tensor.to, torch.Tensor.copy_, torch.Tensor.__getitem__, torch.Tensor.__setitem__}


def device_of(t: torch.Tensor) -> torch.device:
    """The tracked device of ``t``: :data:`VIRTUAL` when the code sent it there, else the host."""
    return t.__dict__.get("_vdev", HOST)


def _where() -> str:
    """The innermost stalign frame of the current stack (where the offending call was made)."""
    for frame in reversed(traceback.extract_stack()):
        if "/stalign/" in frame.filename and "/tests/" not in frame.filename:
            return f"{frame.filename.split('/src/')[-1]}:{frame.lineno} {frame.line}"
    return "?"


class VirtualDevice(TorchFunctionMode):
    """Track which tensors the code sent to :data:`VIRTUAL` (see the module docstring); use as a context manager."""

    def __init__(self) -> None:
        super().__init__()
        self.mismatches: list[str] = []
        self.syncs: list[str] = []
        self.errors: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        attr = _attribute(func)
        if attr == ("device", "__get__"):
            return device_of(args[0])
        if attr == ("is_cuda", "__get__"):
            return False
        if attr is not None and attr[1] == "__set__":  # t.data = x, t.grad = x: t takes x's device
            func(*args, **kwargs)
            _tag(args[0], device_of(args[1]) if isinstance(args[1], torch.Tensor) else device_of(args[0]))
            return None
        if func is torch._has_compatible_shallow_copy_type:
            return func(*args, **kwargs)
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        devs = {device_of(t) for t in tensors if t.dim() > 0 or device_of(t) != HOST}
        on_device = bool(tensors) and device_of(tensors[0]) == VIRTUAL
        if len(devs) > 1 and func not in _CROSS:
            self.mismatches.append(f"{getattr(func, '__name__', func)} at {_where()}")
        if on_device and func in _SYNC:
            self.syncs.append(f"{func.__name__} at {_where()}")
        if on_device and func is torch.Tensor.numpy and not kwargs.get("force", args[1] if len(args) > 1 else False):
            self.errors.append(f"numpy() of a device tensor at {_where()}")
        out = func(*args, **kwargs)
        if func in _TO:
            target = torch._C._nn._parse_to(*args[1:], **kwargs)[0]
            dev = device_of(args[0]) if target is None else torch.device(target)
            if on_device and dev == HOST:
                self.syncs.append(f"to(host) at {_where()}")
        elif func in _TO_HOST:
            if on_device:
                self.syncs.append(f"{func.__name__} at {_where()}")
            dev = HOST
        elif kwargs.get("device") is not None:
            dev = torch.device(kwargs["device"])
        elif func is torch.Tensor.copy_:
            dev = device_of(args[0])
        else:
            dev = VIRTUAL if VIRTUAL in devs else HOST
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                _tag(t, dev)
        return out


def _attribute(func) -> tuple[str, str] | None:
    """``(name, "__get__" | "__set__")`` when ``func`` reads or writes a tensor attribute (``t.device``, ``t.data``)."""
    owner = getattr(func, "__self__", None)
    if isinstance(owner, types.GetSetDescriptorType):
        return owner.__name__, func.__name__
    return None


def _tag(t: torch.Tensor, dev: torch.device) -> None:
    if dev == HOST:
        t.__dict__.pop("_vdev", None)
    else:
        t.__dict__["_vdev"] = dev
