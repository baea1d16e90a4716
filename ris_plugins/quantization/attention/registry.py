"""Registry of attention adapters and the model-level conversion.

An adapter turns one attention module whose products are written inline
(``q @ k.transpose(-2, -1)``, ``F.scaled_dot_product_attention`` ...) into
an FP-equivalent module that computes them with two :class:`MatMul`
children: ``matmul1(q, kᵀ)`` (q (B, H, N, d), kᵀ (B, H, d, M)) and
``matmul2(p, v)`` (p (B, H, N, M) post-softmax, v (B, H, M, d)).

Our own attention modules (``PixelWordAttention``,
``DenseAttentionPool2d``) have these children natively and need no
adapter; when built with a fused-attention switch ``use_sdpa=True``,
conversion turns it off so the products run through the children.
Every conversion records how to undo it (:func:`convert_attention`'s
``undo`` list), next to the conversion itself.
"""
from functools import partial
from typing import Callable, Dict, List, Optional

import torch.nn as nn

from ..matmul import MatMul

Adapter = Callable[[nn.Module], nn.Module]
Undo = Callable[[], None]
ATTENTION_ADAPTERS: Dict[type, Adapter] = {}


def swap_class(module: nn.Module, adapted_cls: type) -> nn.Module:
    """Make ``module`` an ``adapted_cls`` in place and give it ``matmul1`` /
    ``matmul2``. Parameters and buffers are the same objects, so
    ``state_dict`` keys and values are unchanged. Undone by
    :func:`unswap_class`.

    Raises:
        TypeError: ``adapted_cls`` is not a subclass of ``type(module)``.
    """
    if not issubclass(adapted_cls, type(module)):
        raise TypeError(f'{adapted_cls.__name__} does not subclass '
                        f'{type(module).__name__}')
    module.__class__ = adapted_cls
    module.matmul1 = MatMul()
    module.matmul2 = MatMul()
    return module


def unswap_class(module: nn.Module, float_cls: type) -> None:
    """Undo :func:`swap_class`: drop ``matmul1`` / ``matmul2`` (or their
    quantized replacements) and give ``module`` back its class
    ``float_cls``."""
    for child in ('matmul1', 'matmul2'):
        module._modules.pop(child, None)
    module.__class__ = float_cls


def _explicit_products(module: nn.Module) -> Optional[Undo]:
    """A module with native ``matmul1`` / ``matmul2`` children and
    ``use_sdpa=True``: switch it to the explicit products. Returns the
    undo, or None when there is nothing to switch."""
    if not (is_converted(module) and getattr(module, 'use_sdpa', False)):
        return None
    module.use_sdpa = False
    return partial(setattr, module, 'use_sdpa', True)


def register_attention_adapter(cls: type, force: bool = False):
    """Decorator registering an adapter for modules of EXACT type ``cls``.

    The decorated object is either a callable ``adapter(module) -> module``
    or an ``nn.Module`` subclass of ``cls`` (then the adapter is
    :func:`swap_class` to it). Returns the decorated object unchanged.

    Raises:
        KeyError: ``cls`` already has an adapter and ``force`` is False.
        TypeError: a decorated class does not subclass ``cls``.
    """

    def decorator(obj):
        if cls in ATTENTION_ADAPTERS and not force:
            raise KeyError(f'an attention adapter for {cls.__qualname__} is '
                           'already registered (pass force=True to replace)')
        if isinstance(obj, type):
            if not issubclass(obj, cls):
                raise TypeError(f'adapter class {obj.__name__} must '
                                f'subclass {cls.__qualname__}')
            ATTENTION_ADAPTERS[cls] = lambda m: swap_class(m, obj)
        else:
            ATTENTION_ADAPTERS[cls] = obj
        return obj

    return decorator


def is_converted(module: nn.Module) -> bool:
    """True when ``module`` has ``MatMul`` children ``matmul1``/``matmul2``
    (or quantized replacements registered under those names)."""
    return 'matmul1' in module._modules and 'matmul2' in module._modules


def convert_attention(model: nn.Module,
                      undo: Optional[List[Undo]] = None) -> List[str]:
    """Replace every submodule whose exact type has a registered adapter,
    and switch modules with native ``matmul1`` / ``matmul2`` children and
    ``use_sdpa=True`` to their explicit products.

    Modules are converted in place (class swap) or, when an adapter returns
    a new module, set on their parent under the same name. Already
    converted modules are left alone, so calling twice is harmless.

    Args:
        model (nn.Module): Any model; ``model`` itself may be converted
            only in place.
        undo (list, optional): Receives one callable per conversion that
            undoes it (class swap, replaced module or ``use_sdpa``); call
            them in reverse order to restore the model.

    Returns:
        list[str]: ``named_modules`` names of converted modules ('' for
        ``model`` itself), in traversal order.

    Raises:
        ValueError: the adapter for ``model`` itself returned a new module.
    """
    undo = [] if undo is None else undo
    converted = []
    for name, mod in list(model.named_modules()):
        if type(mod) not in ATTENTION_ADAPTERS:
            switched = _explicit_products(mod)
            if switched is not None:
                undo.append(switched)
                converted.append(name)
            continue
        cls = type(mod)
        new = ATTENTION_ADAPTERS[cls](mod)
        converted.append(name)
        if new is mod:
            if type(mod) is not cls:
                undo.append(partial(unswap_class, mod, cls))
            continue
        if not name:
            raise ValueError('the root module cannot be replaced; its '
                             'adapter must convert it in place')
        parent_name, _, child = name.rpartition('.')
        parent = model.get_submodule(parent_name)
        setattr(parent, child, new)
        undo.append(partial(setattr, parent, child, mod))
    return converted


def looks_like_attention(module: nn.Module) -> bool:
    """Class name contains 'Attention' or 'MSA', or nn.MultiheadAttention."""
    name = type(module).__name__
    return (isinstance(module, nn.MultiheadAttention) or 'Attention' in name
            or 'MSA' in name)


def find_unconverted_attention(model: nn.Module) -> List[str]:
    """Names of modules that look like attention (see
    :func:`looks_like_attention`) but have no registered adapter and are
    not converted. Containers are not reported: a module with a converted
    or adaptable descendant (e.g. ``BertAttention`` around
    ``BertSelfAttention``, ``ShiftWindowMSA`` around ``WindowMSA``) is
    taken to delegate to it.

    Returns:
        list[str]: ``named_modules`` names, in traversal order.
    """

    def handled(mod: nn.Module) -> bool:
        return is_converted(mod) or type(mod) in ATTENTION_ADAPTERS

    return [
        name for name, mod in model.named_modules()
        if looks_like_attention(mod) and not any(map(handled, mod.modules()))
    ]
