"""Outputs of every tiny config, pinned across refactors.

``tests/data/pinned_logits.pth`` holds the raw head outputs
(``mode='tensor'``) of the demo and tiny mix configs for two sentences of
different lengths on a fixed image, computed by the code *before* the
explicit-text refactor (commit 0a4c32a). Weights are set by parameter name
(:func:`name_seeded_`), not by construction order, so a refactor that keeps
the state-dict keys and the arithmetic must reproduce them to float32
round-off. Regenerate only when a change of outputs is intended:
``python -m tests.test_models.test_pinned_outputs``.
"""
import glob
import os.path as osp
import zlib

import pytest
import torch
from mmengine.config import Config

from mmseg.registry import MODELS
from ris_plugins.utils import safe_torch_load
from ris_plugins.utils.synthetic import tokenize

from ..conftest import ROOT

PINNED = osp.join(ROOT, 'tests', 'data', 'pinned_logits.pth')
CONFIGS = sorted(
    glob.glob(osp.join(ROOT, 'configs', 'demo', '*.py')) +
    glob.glob(osp.join(ROOT, 'configs', 'mix', 'mix-small_*.py')))
SENTENCES = ('the small red circle', 'the blue square right of the large '
             'green star at the top')


def name_seeded_(model: torch.nn.Module) -> torch.nn.Module:
    """Overwrite every floating parameter and buffer in place with values
    drawn from a generator seeded by its name: norm weights 1 + N(0, 0.1),
    BN running variances in [0.5, inf), matrices N(0, 1 / fan_in), other
    vectors N(0, 0.1)."""
    norms = {
        name for name, m in model.named_modules()
        if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm,
                          torch.nn.LayerNorm, torch.nn.GroupNorm))
    }
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            values = torch.randn(t.shape, generator=g)
            owner, _, leaf = name.rpartition('.')
            if owner in norms and leaf == 'weight':
                values = 1 + 0.1 * values
            elif leaf == 'running_var':
                values = values.abs() + 0.5
            elif t.dim() >= 2:
                values = values / t[0].numel()**0.5
            else:
                values = 0.1 * values
            t.copy_(values)
    return model


def inputs(cfg: Config):
    """One image twice (2, 3, 160, 160) and two sentences' tokens / mask
    (2, L): the two outputs differ only through the text."""
    g = torch.Generator().manual_seed(0)
    img = torch.randn(1, 3, 160, 160, generator=g).expand(2, -1, -1, -1)
    texts = [tokenize(cfg, s) for s in SENTENCES]
    tokens = torch.stack([t['text_tokens'] for t in texts])
    mask = torch.stack([t['text_mask'] for t in texts])
    return img, tokens, mask


def logits(path: str) -> torch.Tensor:
    cfg = Config.fromfile(path)
    model = name_seeded_(MODELS.build(cfg.model)).eval()
    img, tokens, mask = inputs(cfg)
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
