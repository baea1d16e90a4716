"""RefSegmentor with BarLeRIa's backbone (SNF, LIM, GST side network): forward
/ backward of both variants, the side output, batch independence."""
import pytest
import torch

from ...conftest import (LIM_HOOK, TINY_SNF, run_samples, text_of, tiny_etris,
                         token_samples, tokens)

TINY_GST = dict(type='GSTSideNet', visual_dim=32, text_dim=24, width=12,
                depth=2, num_heads=3, num_queries=4,
                fusion_map=((1, 0), (2, 1), (3, 2)), grid=4, out_dim=16)


POS = ('pos_embed', 'position_embedding.weight')


def _barleria(side: bool):
    bb = dict(interactions=[LIM_HOOK], shortcuts=TINY_SNF)
    if side:
        bb['side_net'] = TINY_GST
    return tiny_etris(bb, extra_input=side)


@pytest.mark.parametrize('side', [False, True], ids=['no-gst', 'full'])
def test_barleria_variants_forward_backward(side):
    model = _barleria(side).train()
    img, ds = torch.randn(2, 3, 64, 64), token_samples(tokens(5, 8))
    losses = run_samples(model, img, ds, mode='loss')
    want = {'decode.loss_ce', 'decode.acc_seg'}
    if side:
        want.add('backbone.loss_side')
    assert set(losses) == want
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    for name, p in model.named_parameters():
        if name.startswith(('backbone.visual', 'backbone.text')):
            if name.endswith(POS):
                assert float(p.grad.abs().sum()) > 0, name
            else:
                assert not p.requires_grad and p.grad is None, name
    adapters = [model.backbone.shortcut_module, model.backbone.interactions]
    for module in adapters:
        for name, p in module.named_parameters():
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, \
                name
    if side:
        side_net = model.backbone.side_net
        for name, p in side_net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert float(side_net.out_proj.weight.grad.abs().sum()) > 0
    model.eval()
    with torch.no_grad():
        pred = run_samples(model, img, token_samples(tokens(5, 8)),
                           mode='predict')
    assert pred[0].pred_sem_seg.data.shape == (1, 64, 64)


def test_side_output_is_added_to_the_neck_output():
    model = _barleria(True).eval()
    img, ds = torch.randn(2, 3, 64, 64), token_samples(tokens(5, 8))
    with torch.no_grad():
        (x, ), _ = model.extract_feat(img, *text_of(ds))
        out = model.backbone(img, tokens(5, 8))
        model.fusion.extra_input = False
        (base, ), _ = model.fusion(out.visual[:3], out.text)
    assert out.visual[3].shape == base.shape == (2, 16, 4, 4)
    torch.testing.assert_close(x, base + out.visual[3])


@pytest.mark.parametrize('batch_axis', [False, True])
def test_prediction_does_not_depend_on_batch_composition(batch_axis):
    """Fixed global prior: a sample's logits alone equal its logits in a
    batch; the released batch-axis normalisation breaks this."""
    model = tiny_etris(
        dict(interactions=[LIM_HOOK], shortcuts=TINY_SNF,
             side_net=dict(TINY_GST, batch_axis_prior=batch_axis)),
        extra_input=True).eval()
    img, tok = torch.randn(3, 3, 64, 64), tokens(5, 8, 6)
    with torch.no_grad():
        batch = model(img, *text_of(token_samples(tok)))
        alone = model(img[:1], *text_of(token_samples(tok[:1])))
    same = torch.allclose(batch[:1], alone, atol=1e-5, rtol=1e-4)
    assert same != batch_axis
