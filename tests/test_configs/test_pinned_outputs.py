"""Outputs of every tiny config, pinned across refactors.

``tests/data/pinned_logits.pth`` holds the raw head outputs
(``mode='tensor'``) of the demo and tiny mix configs for two sentences of
different lengths on a fixed image, computed by the code *before* the
explicit-text refactor (commit 0a4c32a). Weights are set by parameter name
(:func:`name_seeded_`), not by construction order, so a refactor that keeps
the state-dict keys and the arithmetic must reproduce them to float32
round-off. Regenerate only when a change of outputs is intended:
``python -m tests.test_configs.test_pinned_outputs``. The two sentences
and the weights come from ``tests/conftest.py`` (``demo_inputs``,
``name_seeded_``).
"""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmseg.registry import MODELS
from ris_plugins.utils import safe_torch_load

from ..conftest import ROOT, demo_inputs, name_seeded_

PINNED = osp.join(ROOT, 'tests', 'data', 'pinned_logits.pth')
CONFIGS = sorted(
    glob.glob(osp.join(ROOT, 'configs', 'demo', '*.py')) +
    glob.glob(osp.join(ROOT, 'configs', 'mix', 'mix-small_*.py')))


def logits(path: str) -> torch.Tensor:
    cfg = Config.fromfile(path)
    model = name_seeded_(MODELS.build(cfg.model)).eval()
    img, tokens, mask = demo_inputs(cfg)
    with torch.no_grad():
        return model(img, tokens, mask)  # (2, C, h, w)


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_outputs_equal_the_pinned_ones(path):
    pinned = safe_torch_load(PINNED)[osp.basename(path)]
    # The pin covers the text path: the two sentences' outputs differ.
    assert (pinned[0] - pinned[1]).abs().max() > 1e-3 * pinned.abs().max()
    torch.testing.assert_close(logits(path), pinned, rtol=1e-4, atol=1e-5)


if __name__ == '__main__':
    from mmseg.utils import register_all_modules
    import ris_plugins  # noqa: F401
    register_all_modules()
    torch.save({osp.basename(p): logits(p) for p in CONFIGS}, PINNED)
    print(f'wrote {PINNED}')
