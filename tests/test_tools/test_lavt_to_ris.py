"""tools/model_converters/lavt_to_ris.py on files written the way LAVT's
train.py writes them (yz93/LAVT-RIS: model, bert_model, optimizer,
lr_scheduler state dicts, epoch and the argparse.Namespace of the run), on
LAVT-One's layout, and on hostile files; Swin's patch-merging order, an
exact round trip through LAVT-One's layout and key-mismatch reports."""
import argparse
import os
import pickle
import sys

import pytest
import torch

from ris_plugins.models import MultiModalSwin
from ris_plugins.utils.state_dict import load_state_dict_strict

from ..conftest import TINY_SWIN, load_tool, samples, text_of, tiny_lavt


def converter():
    return load_tool('model_converters/lavt_to_ris.py')


def train_py_extras(params) -> dict:
    """optimizer / lr_scheduler / epoch / args entries as LAVT's train.py
    saves them (AdamW + LambdaLR, args from its argparse parser)."""
    opt = torch.optim.AdamW(params, lr=5e-5, weight_decay=1e-2)
    for p in opt.param_groups[0]['params']:
        p.grad = torch.ones_like(p)
    opt.step()  # non-empty state (exp_avg, step, ...)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda x: (1 - x / 1000)**0.9)
    args = argparse.Namespace(
        model='lavt', swin_type='base', epochs=40, lr=5e-5, img_size=480,
        mha='', fusion_drop=0.0, window12=True, device='cuda:0',
        local_rank=0, output_dir='./checkpoints/', resume='')
    return dict(optimizer=opt.state_dict(), epoch=12, args=args,
                lr_scheduler=sched.state_dict())


def run_main(monkeypatch, *argv):
    monkeypatch.setattr(sys, 'argv', ['lavt_to_ris.py', *map(str, argv)])
    converter().main()


@pytest.mark.parametrize('layout', ['lavt', 'lavt_one'])
def test_train_py_checkpoint_converts(tmp_path, monkeypatch, layout):
    conv = converter()
    model = tiny_lavt()
    upstream = conv.to_upstream_lavt_one(model.state_dict())['model']
    if layout == 'lavt':  # BERT beside the model, as single_bert_model
        ckpt = {'model': {k: v for k, v in upstream.items()
                          if not k.startswith('text_encoder.')},
                'bert_model': {k[len('text_encoder.'):]: v
                               for k, v in upstream.items()
                               if k.startswith('text_encoder.')}}
    else:  # LAVT-One: BERT inside 'model' as text_encoder.*
        ckpt = {'model': dict(upstream)}
    ckpt.update(train_py_extras([torch.nn.Parameter(torch.randn(3))]))
    src, dst = tmp_path / 'model_best_refcoco.pth', tmp_path / 'out.pth'
    torch.save(ckpt, src)
    run_main(monkeypatch, src, dst)
    out = torch.load(dst, map_location='cpu', weights_only=True)
    assert out['meta']['source'] == str(src)
    fresh = tiny_lavt()
    load_state_dict_strict(fresh, out['state_dict'], str(dst))
    inputs = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh(inputs, *text_of(samples(2))),
                                   model(inputs, *text_of(samples(2))),
                                   rtol=0, atol=0)


class _Hostile:
    """Pickles as a call to os.mkdir(marker): visible if it ever runs."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker, )


@pytest.mark.parametrize('force_unsafe', [False, True])
def test_hostile_checkpoint_is_refused(tmp_path, monkeypatch, force_unsafe):
    marker = str(tmp_path / 'ran')
    src, dst = tmp_path / 'evil.pth', tmp_path / 'out.pth'
    torch.save({'model': {}, 'args': _Hostile(marker)}, src)
    if force_unsafe:  # torch's switch must not turn the check off
        monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    with pytest.raises((pickle.UnpicklingError, RuntimeError)) as err:
        run_main(monkeypatch, src, dst)
    assert str(src) in str(err.value)
    assert not os.path.exists(marker)
    assert not dst.exists()


def test_only_namespace_is_allowed(tmp_path, monkeypatch):
    """A harmless class other than argparse.Namespace is still refused
    (the allow-list is exactly Namespace)."""
    src = tmp_path / 'other.pth'
    torch.save({'model': {}, 'args': argparse.Action(['-x'], 'x')}, src)
    with pytest.raises(pickle.UnpicklingError, match='argparse.Action'):
        run_main(monkeypatch, src, tmp_path / 'out.pth')


def test_bad_files_are_named(tmp_path, monkeypatch):
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(RuntimeError, match='empty.pth'):
        run_main(monkeypatch, empty, tmp_path / 'out.pth')
    no_model = tmp_path / 'no_model.pth'
    torch.save({'state_dict': {}}, no_model)
    with pytest.raises(KeyError, match="no_model.pth.*no 'model'"):
        run_main(monkeypatch, no_model, tmp_path / 'out.pth')


def test_patch_merging_reorder_matches_swin_semantics():
    """Upstream Swin merges cat[x(0::2,0::2), x(1::2,0::2), x(0::2,1::2),
    x(1::2,1::2)]; the converted weights must give the same output through
    mmpretrain's Unfold-based PatchMerging."""
    conv = converter()
    swin = MultiModalSwin(text_channels=32, **TINY_SWIN).eval()
    merge = swin.stages[0].downsample
    c = 16
    w_up = torch.randn(2 * c, 4 * c)
    ln_w, ln_b = torch.randn(4 * c), torch.randn(4 * c)
    merge.reduction.weight.data = conv.merging_unfold_order(w_up)
    merge.norm.weight.data = conv.merging_unfold_order(ln_w)
    merge.norm.bias.data = conv.merging_unfold_order(ln_b)
    x = torch.randn(1, 4, 4, c)
    cat = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2],
                     x[:, 1::2, 1::2]], dim=-1)  # (1, 2, 2, 4C)
    ref = torch.nn.functional.layer_norm(cat, (4 * c, ), ln_w, ln_b) @ w_up.T
    out, _ = merge(x.reshape(1, 16, c), (4, 4))
    torch.testing.assert_close(out, ref.reshape(1, 4, 2 * c))
    torch.testing.assert_close(
        conv.merging_swin_order(conv.merging_unfold_order(w_up)), w_up)


def test_converter_round_trip_is_exact():
    conv = converter()
    model = tiny_lavt()
    upstream = conv.to_upstream_lavt_one(model.state_dict())
    keys = list(upstream['model'])
    assert any(k.startswith('backbone.layers.0.fusion.image_lang_att.')
               for k in keys)
    assert 'classifier.conv1_4.weight' in keys
    assert 'classifier.bn2_2.running_var' in keys
    assert 'backbone.layers.1.downsample.reduction.weight' in keys
    fresh = tiny_lavt()
    load_state_dict_strict(fresh, conv.convert_lavt(upstream))
    inputs = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            fresh(inputs, *text_of(samples(2))),
            model(inputs, *text_of(samples(2))))
    # the lavt (two-entry) layout with a DDP-prefixed BERT converts too
    bert = {k[len('text_encoder.'):]: v for k, v in upstream['model'].items()
            if k.startswith('text_encoder.')}
    two = {'model': {k: v for k, v in upstream['model'].items()
                     if not k.startswith('text_encoder.')},
           'bert_model': {'module.' + k: v for k, v in bert.items()}}
    assert conv.convert_lavt(two).keys() == conv.convert_lavt(
        upstream).keys()


def test_key_mismatch_is_reported_by_module():
    conv = converter()
    model = tiny_lavt()
    state = conv.convert_lavt(conv.to_upstream_lavt_one(model.state_dict()))
    del state['decode_head.conv_seg.weight']
    state['backbone.extra.weight'] = torch.zeros(1)
    with pytest.raises(KeyError) as err:
        load_state_dict_strict(model, state, 'lavt.pth')
    msg = str(err.value)
    assert 'missing in decode_head.conv_seg' in msg
    assert 'unexpected in backbone.extra' in msg
    with pytest.raises(KeyError, match='no conversion rule'):
        conv.convert_lavt({'model': {'backbone.layers.0.mystery.w': 1,
                                     'text_encoder.x': 1}})
