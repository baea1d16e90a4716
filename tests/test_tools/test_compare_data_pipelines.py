"""compare_data_pipelines: our LAVT pipeline against LAVT's own on a small
RefShapes."""
import os.path as osp

import pytest

from ..conftest import ROOT, load_tool

LAVT = osp.join(ROOT, 'configs', 'lavt',
                'lavt_swin-b_8xb4-40e_refcoco-480x480.py')
UPSTREAM = osp.join(ROOT, 'configs', 'lavt',
                    'lavt-upstream-data_swin-b_8xb4-40e_refcoco-480x480.py')


@pytest.fixture(scope='module')
def tool():
    return load_tool('analysis_tools/compare_data_pipelines.py')


def _options(refshapes_root):
    return {'test_dataloader.dataset.data_root': refshapes_root,
            'test_dataloader.dataset.dataset': 'refshapes',
            'test_dataloader.dataset.split': 'val'}


def test_same_config_differs_nowhere(tool, refshapes_root):
    opts = _options(refshapes_root)
    a = tool.build_dataset(LAVT, opts)
    out = tool.compare(a, tool.build_dataset(LAVT, opts), limit=6)
    assert out['samples'] == 6
    assert out['mask_pixels'] == 6 * 480 * 480
    assert out['mask_pixels_differ'] == out['token_sequences_differ'] == 0
    assert out['img_mean_abs_diff'] == 0


def test_upstream_pipeline_changes_masks_not_short_sentences(
        tool, refshapes_root):
    opts = _options(refshapes_root)
    out = tool.compare(tool.build_dataset(LAVT, opts),
                       tool.build_dataset(UPSTREAM, opts), limit=6)
    # upscaling to 480: cv2 and PIL nearest pick different source pixels
    # along every mask edge; RefShapes sentences are < 20 tokens
    assert 0 < out['mask_pixels_differ'] < 0.01 * out['mask_pixels']
    assert out['img_mean_abs_diff'] > 0
    assert out['token_sequences_differ'] == 0


def test_mismatched_datasets_are_an_error(tool, refshapes_root):
    opts = _options(refshapes_root)
    a = tool.build_dataset(LAVT, opts)
    b = tool.build_dataset(LAVT, dict(opts, **{
        'test_dataloader.dataset.split': 'testA'}))
    with pytest.raises(ValueError, match='differ'):
        tool.compare(a, b)
