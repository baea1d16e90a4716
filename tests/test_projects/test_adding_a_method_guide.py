"""Every Python snippet of projects/README.md ("how to add a method") runs:
the file snippets (first line ``# projects/...``) are written into a
temporary repository root, the other snippets are executed there in order,
and the guide's own test file is run. The bash commands are checked to
name files the guide creates."""
import importlib
import os
import os.path as osp
import re
import sys

import pytest

from mmseg.registry import MODELS
from ris_plugins.models.backbones import VISUAL_TOWER_DRIVERS

from ..conftest import ROOT

GUIDE = osp.join(ROOT, 'projects', 'README.md')
FENCE = re.compile(r'^```(\w*)\n(.*?)^```', re.M | re.S)
# What the guide registers (removed again after the test).
GUIDE_MODULES = ('SentenceGate', 'SentenceDotHead', 'WrappedCLIPViT')


def snippets(lang: str):
    """The guide's fenced code blocks in language ``lang``, in order."""
    with open(GUIDE) as f:
        text = f.read()
    return [body for kind, body in FENCE.findall(text) if kind == lang]


def split_files(blocks):
    """(files {relative path: source}, other snippets)."""
    files, runs = {}, []
    for body in blocks:
        first = body.splitlines()[0]
        if first.startswith('# projects/'):
            files[first[2:].strip()] = body
        else:
            runs.append(body)
    return files, runs


@pytest.fixture
def guide_root(tmp_path, monkeypatch):
    """A temporary repository root with the guide's files, ../configs
    linked to the real configs; registries and modules restored after."""
    os.symlink(osp.join(ROOT, 'configs'), tmp_path / 'configs')
    files, _ = split_files(snippets('python'))
    for rel, body in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    drivers = dict(VISUAL_TOWER_DRIVERS)
    yield tmp_path
    for name in GUIDE_MODULES:
        MODELS._module_dict.pop(name, None)
    VISUAL_TOWER_DRIVERS.clear()
    VISUAL_TOWER_DRIVERS.update(drivers)
    for mod in [m for m in sys.modules if m.startswith('projects.my_method')]:
        del sys.modules[mod]


def test_guide_has_the_files_it_describes():
    files, runs = split_files(snippets('python'))
    assert sorted(files) == [
        'projects/my_method/configs/'
        'my-method_tiny-rn-minilm_1xb16-2k_refshapes-160x160.py',
        'projects/my_method/my_method/__init__.py',
        'projects/my_method/my_method/fusion.py',
        'projects/my_method/my_method/head.py',
        'projects/my_method/tests/test_my_method.py',
    ]
    assert len(runs) == 2  # the width-check and the visual-tower snippets
    # The shell commands name the guide's own files.
    for cmd in snippets('bash'):
        for path in re.findall(r'projects/\S+', cmd):
            assert any(f.startswith(path.rstrip('/')) for f in files), path


def test_guide_snippets_and_test_file_run(guide_root, capsys):
    _, runs = split_files(snippets('python'))
    for body in runs:
        exec(compile(body, GUIDE, 'exec'), {'__name__': 'guide_snippet'})
    # What the snippets print (the model build also logs its parameter
    # table to stdout).
    expected = ['SentenceGate 64', '(32, 32, 32, 32, 32)']
    printed = capsys.readouterr().out.splitlines()
    assert [line for line in printed if line in expected] == expected
    tests = importlib.import_module('projects.my_method.tests.test_my_method')
    names = [n for n in dir(tests) if n.startswith('test_')]
    assert len(names) == 3
    for name in names:
        getattr(tests, name)()
