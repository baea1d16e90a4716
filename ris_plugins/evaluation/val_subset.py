"""The config's validation loader and evaluator on its first N samples, as
the analysis tools score models (PTQ accuracy, sensitivity curves, the
deployment benchmark)."""
import copy
from typing import Optional, Tuple

from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.runner import Runner
from torch.utils.data import DataLoader


def build_val_subset(cfg: Config,
                     num: Optional[int] = None,
                     batch_size: int = 1,
                     num_workers: Optional[int] = None
                     ) -> Tuple[DataLoader, Evaluator]:
    """``(loader, evaluator)`` for the first ``num`` samples of
    ``cfg.val_dataloader`` (all of them for None / 0), scored by
    ``cfg.val_evaluator`` with the dataset's metainfo set. ``cfg`` is not
    modified; workers are not persistent (one pass per loader).

    Args:
        cfg (Config): A config with ``val_dataloader`` and
            ``val_evaluator``.
        num (int, optional): Samples (mmengine ``dataset.indices``).
        batch_size (int): Images per batch. Defaults to 1.
        num_workers (int, optional): Overrides the config's workers.

    Raises:
        KeyError / mmengine's build errors: the config lacks a val
            dataloader or evaluator, or names an unknown type.
    """
    loader_cfg = copy.deepcopy(cfg.val_dataloader)
    loader_cfg.batch_size = batch_size
    loader_cfg.persistent_workers = False
    if num_workers is not None:
        loader_cfg.num_workers = num_workers
    if num:
        loader_cfg.dataset.indices = num
    loader = Runner.build_dataloader(loader_cfg)
    evaluator = Evaluator(cfg.val_evaluator)
    evaluator.dataset_meta = loader.dataset.metainfo
    return loader, evaluator
