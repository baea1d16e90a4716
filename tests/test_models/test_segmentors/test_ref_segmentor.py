"""RefSegmentor with the baseline modules: loss / tensor / predict modes,
letterbox cropping, output size, text dependence, missing text and width checks
at build."""
import pytest
import torch

from mmseg.structures import SegDataSample

from ...conftest import run_samples, samples, text_of, tiny_model


def test_modes_and_shapes():
    model = tiny_model()
    inputs = torch.randn(2, 3, 64, 64)
    ds = samples(2)
    losses = run_samples(model, inputs, ds, mode='loss')
    assert set(losses) == {'decode.loss_ce', 'decode.acc_seg'}
    assert losses['decode.loss_ce'].requires_grad
    logits = model(inputs, *text_of(ds))
    assert logits.shape == (2, 1, 16, 16)  # stride 4
    model.eval()
    with torch.no_grad():
        preds = run_samples(model, inputs, samples(2), mode='predict')
    assert preds[0].seg_logits.data.shape == (1, 50, 100)
    assert preds[0].pred_sem_seg.data.shape == (1, 50, 100)
    assert set(preds[0].pred_sem_seg.data.unique().tolist()) <= {0, 1}


def test_letterbox_padding_is_cropped_before_resize():
    model = tiny_model().eval()
    logits = torch.zeros(1, 1, 64, 64)
    logits[:, :, 18:46] = 5.0  # valid band of the letterbox
    out = model.postprocess_result(logits, samples(1))
    assert out[0].pred_sem_seg.data.all()  # padding rows cropped away


def test_prediction_depends_on_text():
    model = tiny_model().eval()
    inputs = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = model(inputs, *text_of(samples(1, seed=0)))
        b = model(inputs, *text_of(samples(1, seed=1)))
    assert not torch.allclose(a, b)


def test_missing_tokens_is_a_clear_error():
    model = tiny_model()
    ds = [SegDataSample(metainfo=dict(ori_shape=(4, 4)))]
    with pytest.raises(ValueError, match='TokenizeText'):
        model.data_preprocessor(dict(
            inputs=[torch.zeros(3, 64, 64, dtype=torch.uint8)],
            data_samples=ds))
    with pytest.raises(ValueError, match='needs the text'):
        model(torch.randn(1, 3, 64, 64))


def test_output_size_input_keeps_the_network_grid():
    """LAVT's convention: predictions stay on the input grid (batch padding
    removed: img_shape 60x64 of a 64x64 batch) instead of ori_shape."""
    model = tiny_model(test_cfg=dict(mode='whole', output_size='input'))
    ds = samples(1)
    ds[0].set_metainfo(dict(img_shape=(60, 64)))
    logits = torch.zeros(1, 1, 64, 64)
    logits[:, :, :30] = 3.0
    out = model.postprocess_result(logits, ds)[0]
    assert out.pred_sem_seg.data.shape == (1, 60, 64)
    assert out.pred_sem_seg.data[0, :30].all()
    assert not out.pred_sem_seg.data[0, 30:].any()
    bad = tiny_model(test_cfg=dict(mode='whole', output_size='480'))
    with pytest.raises(ValueError, match='output_size'):
        bad.postprocess_result(logits, samples(1))


def test_threshold_metric_agrees_with_model_prediction():
    """RefSegMetric(threshold=t) on the model's 1-channel seg_logits gives
    the same mask as the model's own sigmoid > t prediction."""
    from ris_plugins.evaluation import RefSegMetric
    model = tiny_model().eval()
    model.decode_head.threshold = 0.35
    logits = torch.linspace(-3, 3, 64 * 64).reshape(1, 1, 64, 64)
    ds = model.postprocess_result(logits, samples(1))[0]
    metric = RefSegMetric(threshold=0.35)
    pred = metric._binarize(ds.to_dict())
    assert pred.shape == (50, 100)
    assert torch.equal(pred, ds.pred_sem_seg.data[0].bool())
    assert 0 < pred.float().mean() < 1


def test_fusion_word_width_mismatch_is_a_build_error():
    # TINY_BERT words are 32 wide; a fusion built for 48 must not build.
    fusion = dict(type='LanguageGatedFusion', in_channels=[8, 16, 32, 64],
                  channels=16, text_channels=48)
    with pytest.raises(ValueError, match=r'fusion LanguageGatedFusion.*'
                       r'word width 48.*BertTextEncoder.*width 32'):
        tiny_model(fusion=fusion)


def test_fusion_sentence_width_mismatch_is_a_build_error():
    # CRISFPN reads sent_feat; BERT's sentence is 32 wide, not 24.
    fusion = dict(type='CRISFPN', in_channels=[16, 32, 64],
                  out_channels=[8, 16, 24], text_channels=24)
    head = dict(type='FCNHead', in_channels=16, channels=8, num_convs=1,
                num_classes=2, in_index=0)
    backbone = dict(type='ResNet', depth=18, stem_channels=8,
                    base_channels=8, out_indices=(1, 2, 3))
    with pytest.raises(ValueError, match=r'CRISFPN.*sent width 24.*'
                       r'sent_feat of width 32'):
        tiny_model(fusion=fusion, decode_head=head, backbone=backbone)
