"""build_val_subset: the first N val samples of a config, its evaluator
ready to score them, and the config left as it was."""
from ris_plugins.evaluation import build_val_subset

from ..conftest import tiny_cfg


def test_first_n_samples_and_config_untouched(refshapes_root, tmp_path):
    cfg = tiny_cfg(refshapes_root, str(tmp_path))
    before = cfg.val_dataloader.to_dict()
    loader, evaluator = build_val_subset(cfg, 3, batch_size=2,
                                         num_workers=0)
    assert len(loader.dataset) == 3 and loader.batch_size == 2
    assert evaluator.dataset_meta == loader.dataset.metainfo
    assert cfg.val_dataloader.to_dict() == before
    # 0 / None: the whole split (tiny_cfg limits val to 8 samples)
    full, _ = build_val_subset(cfg)
    assert len(full.dataset) == 8 and full.batch_size == 1
