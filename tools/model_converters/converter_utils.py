"""Helpers shared by the checkpoint converters in this folder.

* :class:`Rule` tables rename keys by prefix templates in both directions
  (upstream -> ours for conversion, ours -> upstream for the round-trip
  tests), optionally changing the tensor (e.g. BarLeRIa's planar-flow
  ``(1, d)`` -> ``(d,)``);
* :func:`load_upstream` reads a released checkpoint with
  ``ris_plugins.utils.safe_torch_load`` (``weights_only=True``, a per-load
  allow-list, the file named in every error);
* :func:`model_state` unwraps ``{'state_dict' | 'model': ...}`` and the
  ``module.`` prefix of ``DistributedDataParallel``;
* :func:`build_model` / :func:`check_against_model` build the model of an
  mmseg config and compare a converted state dict with it;
* :func:`save_converted` writes ``{'state_dict', 'meta'}`` atomically.

The scripts are not a package; each imports this file with
:func:`import_sibling` (or ``sys.path``, which Python sets to this folder
when a script is run).
"""
import importlib.util
import os
import os.path as osp
import re
import sys
import tempfile
from collections import OrderedDict
from typing import (Any, Callable, Dict, Iterable, List, NamedTuple,
                    Optional, Sequence, Tuple)

import torch
from torch import Tensor

StateDict = Dict[str, Tensor]
_PLACEHOLDER = re.compile(r'\{([a-z])(\+1)?\}')


class Rule(NamedTuple):
    """Rename keys starting with ``upstream`` to ``ours`` (and back).

    Templates hold integer placeholders ``{i}``, ``{j}``, ``{k}``; ``{j+1}``
    stands for j + 1 (e.g. ETRIS ``ln_v.{j}.`` -> our
    ``stages.{j+1}.ladder_v.``). ``to_ours`` / ``to_upstream`` optionally
    change the tensor (they must be inverses of each other).
    """
    upstream: str
    ours: str
    to_ours: Optional[Callable[[Tensor], Tensor]] = None
    to_upstream: Optional[Callable[[Tensor], Tensor]] = None


def _regex(template: str, exact: bool) -> 're.Pattern':
    """A regex for ``template``: each placeholder becomes a digit group."""
    parts, pos = [], 0
    for m in _PLACEHOLDER.finditer(template):
        parts.append(re.escape(template[pos:m.start()]))
        name = m.group(1) + ('_plus1' if m.group(2) else '')
        parts.append(f'(?P<{name}>\\d+)')
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    return re.compile('^' + ''.join(parts) + ('$' if exact else ''))


def _fill(template: str, values: Dict[str, int]) -> str:
    """Substitute the placeholder values (``{j+1}`` -> j + 1)."""

    def sub(m: 're.Match') -> str:
        return str(values[m.group(1)] + (1 if m.group(2) else 0))

    return _PLACEHOLDER.sub(sub, template)


def _values(match: 're.Match') -> Dict[str, int]:
    values = {}
    for name, text in match.groupdict().items():
        if name.endswith('_plus1'):
            values[name[0]] = int(text) - 1
        else:
            values[name] = int(text)
    return values


def apply_rule(table: Sequence[Rule], key: str, value: Optional[Tensor],
               reverse: bool = False,
               exact: bool = False) -> Optional[Tuple[str, Tensor]]:
    """Rename ``key`` (and transform ``value``) by the first matching rule
    of ``table`` (upstream -> ours, or ours -> upstream with ``reverse``);
    None when no rule matches. With ``exact`` the whole key must match the
    template (used for non-prefix rules such as single tensors)."""
    for rule in table:
        src, dst = ((rule.ours, rule.upstream) if reverse else
                    (rule.upstream, rule.ours))
        m = _regex(src, exact).match(key)
        if m is None:
            continue
        new = _fill(dst, _values(m)) + key[m.end():]
        fn = rule.to_upstream if reverse else rule.to_ours
        if fn is not None and value is not None:
            value = fn(value)
        return new, value
    return None


def rename(table: Sequence[Rule], state: StateDict,
           reverse: bool = False, what: str = 'checkpoint') -> StateDict:
    """Rename every key of ``state`` by ``table``.

    Raises:
        KeyError: A key without a rule (names the key and ``what``).
    """
    out = OrderedDict()
    for key, value in state.items():
        hit = apply_rule(table, key, value, reverse)
        if hit is None:
            side = 'our' if reverse else 'upstream'
            raise KeyError(f'{what}: no conversion rule for {side} key '
                           f'{key!r}')
        out[hit[0]] = hit[1]
    return out


def squeeze_leading(value: Tensor) -> Tensor:
    """(1, d) -> (d,)."""
    if value.dim() != 2 or value.shape[0] != 1:
        raise ValueError(f'expected a (1, d) tensor, got shape '
                         f'{tuple(value.shape)}')
    return value[0]


def unsqueeze_leading(value: Tensor) -> Tensor:
    """(d,) -> (1, d)."""
    return value[None]


def split_prefix(state: StateDict, prefix: str
                 ) -> Tuple[StateDict, StateDict]:
    """(keys under ``prefix`` with it removed, all other keys)."""
    inside, rest = OrderedDict(), OrderedDict()
    for k, v in state.items():
        if k.startswith(prefix):
            inside[k[len(prefix):]] = v
        else:
            rest[k] = v
    return inside, rest


def add_prefix(state: StateDict, prefix: str) -> StateDict:
    """Every key of ``state`` with ``prefix`` prepended."""
    return OrderedDict((prefix + k, v) for k, v in state.items())


def load_upstream(path: str, allowed_globals: Sequence[Any] = ()) -> Any:
    """Read a released checkpoint with ``weights_only=True``.

    Args:
        path (str): The file.
        allowed_globals (sequence): Classes allowed for this load only
            (e.g. exactly ``argparse.Namespace`` for LAVT's ``args``).

    Raises:
        FileNotFoundError, RuntimeError, pickle.UnpicklingError: From
            ``ris_plugins.utils.safe_torch_load``; each names ``path``.
    """
    from ris_plugins.utils import safe_torch_load
    return safe_torch_load(path, map_location='cpu',
                           allowed_globals=allowed_globals)


def model_state(ckpt: Any, path: str,
                entries: Sequence[str] = ('state_dict', )) -> StateDict:
    """The model's state dict in a training checkpoint: the first of
    ``entries`` present (CRIS / ETRIS / BarLeRIa ``train.py``:
    ``'state_dict'``), with the ``module.`` prefix of
    ``DistributedDataParallel`` removed when every key has it.

    Raises:
        KeyError: ``ckpt`` is not a dict, has none of ``entries``, or holds
            a non-tensor under a model key; names ``path`` and what it has.
    """
    if not isinstance(ckpt, dict):
        raise KeyError(f'{path}: expected a checkpoint dict with '
                       f'{list(entries)}, got {type(ckpt).__name__}')
    found = next((e for e in entries if e in ckpt), None)
    if found is None:
        raise KeyError(f'{path}: no {" / ".join(map(repr, entries))} entry; '
                       f'the checkpoint has {sorted(map(str, ckpt))}')
    state = ckpt[found]
    if not isinstance(state, dict) or not state:
        raise KeyError(f'{path}: {found!r} is not a non-empty state dict')
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise KeyError(f'{path}: {found!r} holds non-tensor entries '
                       f'{bad[:5]}')
    return strip_ddp(state)


def strip_ddp(state: StateDict) -> StateDict:
    """Remove ``module.`` when every key starts with it (DDP)."""
    if all(k.startswith('module.') for k in state):
        return OrderedDict((k[len('module.'):], v) for k, v in state.items())
    return OrderedDict(state)


def import_sibling(name: str):
    """Import ``<name>.py`` from this folder (tools/ is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    path = osp.join(osp.dirname(osp.abspath(__file__)), name + '.py')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_model(config: str, meta: bool = False) -> torch.nn.Module:
    """The ``model`` of the mmseg config file ``config`` (on the meta device
    with ``meta``: names and shapes only, no memory, no init)."""
    from mmengine.config import Config

    import ris_plugins  # noqa: F401
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(config).model
    if meta:
        with torch.device('meta'):
            return MODELS.build(cfg)
    return MODELS.build(cfg)


def model_shapes(config: str) -> Dict[str, Tuple[int, ...]]:
    """Key -> shape of the state dict of ``config``'s model, built on the
    meta device when the model allows it (else on the CPU)."""
    try:
        model = build_model(config, meta=True)
    except (NotImplementedError, RuntimeError):
        model = build_model(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_against_model(converted: StateDict,
                        target: Dict[str, Tuple[int, ...]], source: str,
                        prefixes: Iterable[str] = ('', ),
                        may_miss: Optional['re.Pattern'] = None,
                        resizable: Optional['re.Pattern'] = None) -> None:
    """Compare ``converted`` with the model keys and shapes ``target``.

    Args:
        converted (dict): Our-layout tensors.
        target (dict): Key -> shape of the model (:func:`model_shapes`).
        source (str): Names the conversion in messages (file / config).
        prefixes (iterable of str): Model keys under these prefixes must
            all be converted (others may stay at the model's init).
        may_miss (re.Pattern, optional): Model keys allowed to be missing.
        resizable (re.Pattern, optional): Keys whose shape may differ in
            their middle dimension(s) (positional tables resized on load).

    Raises:
        KeyError: Converted keys the model lacks, or required model keys
            not converted (the first of each named).
        ValueError: A shape differs (key and both shapes named).
    """
    prefixes = tuple(prefixes)
    unexpected = sorted(set(converted) - set(target))
    missing = sorted(
        k for k in target if k.startswith(prefixes) and k not in converted
        and not (may_miss is not None and may_miss.search(k)))
    if unexpected or missing:
        raise KeyError(f'{source}: the converted keys do not match the '
                       f'model: unexpected {unexpected[:5]} '
                       f'({len(unexpected)} in all), missing {missing[:5]} '
                       f'({len(missing)} in all)')
    bad = []
    for k, v in converted.items():
        want = target[k]
        if tuple(v.shape) == want:
            continue
        if (resizable is not None and resizable.search(k)
                and v.dim() == len(want) and v.shape[-1] == want[-1]):
            continue
        bad.append((k, tuple(v.shape), want))
    if bad:
        raise ValueError(f'{source}: shape mismatch (key, converted, model): '
                         f'{bad[:5]}')


def save_converted(converted: StateDict, dst: str, source: Any) -> None:
    """Write ``{'state_dict': converted, 'meta': {'source': source}}`` to
    ``dst`` through a temporary file in the same folder, so an
    interrupted run leaves no half-written ``dst``."""
    folder = osp.dirname(osp.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix='.tmp', dir=folder)
    os.close(fd)
    try:
        torch.save({'state_dict': converted, 'meta': {'source': source}},
                   tmp)
        os.replace(tmp, dst)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    print(f'wrote {len(converted)} tensors to {dst}')


def merge_disjoint(*parts: StateDict) -> StateDict:
    """Union of state dicts that must not share a key.

    Raises:
        KeyError: A key produced twice (two rules collide).
    """
    out: StateDict = OrderedDict()
    for part in parts:
        dup = [k for k in part if k in out]
        if dup:
            raise KeyError(f'conversion produced {dup[:5]} twice')
        out.update(part)
    return out


def keys_matching(state: StateDict, pattern: str) -> List[str]:
    """Keys of ``state`` matching the regex ``pattern`` (search)."""
    rx = re.compile(pattern)
    return [k for k in state if rx.search(k)]


# ------------------------------------------------ TorchScript archives
# OpenAI ships CLIP as TorchScript archives (RN50.pt, ViT-B-16.pt). Loading
# one with torch.jit.load compiles the archive's TorchScript code and runs
# its __setstate__ methods, i.e. code from the file. The weights are plain
# tensors in <root>/data.pkl (+ <root>/data/<key> storages), so they are
# read here with a restricted unpickler instead: TorchScript objects become
# inert attribute records, tensors are rebuilt from the raw storages, and
# any other global is refused. Which attributes are parameters / buffers is
# read from the `__parameters__` / `__buffers__` lists in the archive's
# code/ text (parsed, never executed).
_STORAGE_DTYPES = {
    'FloatStorage': torch.float32, 'DoubleStorage': torch.float64,
    'HalfStorage': torch.float16, 'BFloat16Storage': torch.bfloat16,
    'LongStorage': torch.int64, 'IntStorage': torch.int32,
    'ShortStorage': torch.int16, 'CharStorage': torch.int8,
    'ByteStorage': torch.uint8, 'BoolStorage': torch.bool,
}
_CLASS_RE = re.compile(r'^class (\w+)\(Module\):', re.M)
_LIST_RE = re.compile(r'^\s+(__parameters__|__buffers__) = \[(.*?)\]', re.M)


class _ScriptObject:
    """An unpickled TorchScript object: only its attributes, no code."""
    qualname = ''

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle_error(f'TorchScript object {self.qualname} has a '
                               f'{type(state).__name__} state (only '
                               'attribute dicts are read)')
        self.__dict__.update(state)


def pickle_error(msg: str) -> Exception:
    import pickle
    return pickle.UnpicklingError(msg)


def _module_states(zf, root: str) -> Dict[str, List[str]]:
    """Qualified class name -> its parameter and buffer names, from the
    class bodies in ``<root>/code/**.py``."""
    states: Dict[str, List[str]] = {}
    code = f'{root}/code/'
    for name in zf.namelist():
        if not (name.startswith(code) and name.endswith('.py')):
            continue
        module = name[len(code):-len('.py')].replace('/', '.')
        text = zf.read(name).decode('utf-8', errors='replace')
        starts = [(m.start(), m.group(1)) for m in _CLASS_RE.finditer(text)]
        for n, (start, cls) in enumerate(starts):
            end = starts[n + 1][0] if n + 1 < len(starts) else len(text)
            names: List[str] = []
            for m in _LIST_RE.finditer(text, start, end):
                names += re.findall(r'"([^"]+)"', m.group(2))
            states[f'{module}.{cls}'] = names
    return states


def read_torchscript_state_dict(path: str) -> StateDict:
    """The ``state_dict()`` of the module in a TorchScript archive, read
    without ``torch.jit.load`` (no code from the file runs).

    Returns:
        dict: Parameter / buffer name -> tensor, as
        ``torch.jit.load(path).state_dict()`` (non-parameter tensor
        attributes such as CLIP's ``attn_mask`` are left out).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Not a TorchScript archive, or a big-endian one.
        pickle.UnpicklingError: ``data.pkl`` holds a global other than
            TorchScript classes, ``_rebuild_tensor_v2``, storages and
            ``OrderedDict`` (the message names the file and the global).
    """
    import pickle
    import zipfile
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint file {path!r} does not exist')
    if not zipfile.is_zipfile(path):
        raise ValueError(f'{path!r} is not a TorchScript archive (not a zip '
                         'file)')
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        roots = sorted({n.split('/')[0] for n in names
                        if n.count('/') == 1 and n.endswith('/data.pkl')})
        if len(roots) != 1 or f'{roots[0]}/constants.pkl' not in names:
            raise ValueError(f'{path!r} is not a TorchScript archive (no '
                             '<root>/data.pkl + constants.pkl)')
        root = roots[0]
        order = f'{root}/byteorder'
        if order in names and zf.read(order).strip() != b'little':
            raise ValueError(f'{path!r}: big-endian archives are not '
                             'supported')
        states = _module_states(zf, root)
        classes: Dict[str, type] = {}

        def storage(pid: Any) -> Tensor:
            if (not isinstance(pid, tuple) or len(pid) != 5
                    or pid[0] != 'storage'):
                raise pickle_error(f'{path!r}: unexpected persistent id '
                                   f'{pid!r}')
            _, dtype, key, _, numel = pid
            raw = bytearray(zf.read(f'{root}/data/{key}'))
            flat = (torch.frombuffer(raw, dtype=dtype) if raw else
                    torch.empty(0, dtype=dtype))
            if flat.numel() != numel:
                raise pickle_error(f'{path!r}: storage {key} holds '
                                   f'{flat.numel()} elements, expected '
                                   f'{numel}')
            return flat

        def rebuild(flat: Tensor, offset: int, size: Tuple[int, ...],
                    stride: Tuple[int, ...], *_) -> Tensor:
            return flat.as_strided(size, stride, offset).clone()

        class Restricted(pickle.Unpickler):

            def find_class(self, module: str, name: str) -> Any:
                full = f'{module}.{name}'
                if module == '__torch__' or module.startswith('__torch__.'):
                    if full not in classes:
                        classes[full] = type(name, (_ScriptObject, ),
                                             dict(qualname=full))
                    return classes[full]
                if full == 'torch._utils._rebuild_tensor_v2':
                    return rebuild
                if full == 'collections.OrderedDict':
                    return OrderedDict
                if module == 'torch' and name in _STORAGE_DTYPES:
                    return _STORAGE_DTYPES[name]
                raise pickle_error(
                    f'{path!r}: refused global {full!r} in the TorchScript '
                    'data (only module records, tensors and storages are '
                    'read)')

            def persistent_load(self, pid: Any) -> Tensor:
                return storage(pid)

        with zf.open(f'{root}/data.pkl') as f:
            obj = Restricted(f).load()
    out: StateDict = OrderedDict()
    _collect(obj, '', states, out, path)
    return out


def _collect(obj: Any, prefix: str, states: Dict[str, List[str]],
             out: StateDict, path: str) -> None:
    """Add the parameters / buffers of the module record ``obj`` and its
    submodules to ``out`` in attribute order."""
    if obj.qualname not in states:
        raise ValueError(f'{path!r}: no class definition for '
                         f'{obj.qualname!r} in the archive code')
    own = set(states[obj.qualname])
    for name, value in obj.__dict__.items():
        if isinstance(value, _ScriptObject):
            _collect(value, f'{prefix}{name}.', states, out, path)
        elif name in own and isinstance(value, Tensor):
            out[prefix + name] = value
