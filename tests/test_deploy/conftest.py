"""Fixtures of the deployment tests."""
import pytest

from ..conftest import tiny_cfg


@pytest.fixture
def tiny_model_cfg(tmp_path):
    """The tiny baseline of ``tiny_cfg`` (ResNet 8-channel stem, 1-layer
    BERT, 64x64); only its model and tokenizer are used (no data)."""
    return tiny_cfg(str(tmp_path / 'no_data'), str(tmp_path / 'work'))
