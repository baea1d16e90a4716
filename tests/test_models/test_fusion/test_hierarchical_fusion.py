"""HierarchicalHLA (HARIS's hierarchical fusion)."""
import pytest
import torch

from ris_plugins.models.fusion.hierarchical_fusion import HierarchicalHLA

from ...conftest import text_feats

C_W, C_S, D = 24, 20, 16  # word, sentence, HLA widths


def test_hierarchical_shapes_injection_and_flags():
    torch.manual_seed(0)
    levels = [torch.randn(2, 12, 8, 8), torch.randn(2, 10, 8, 8),
              torch.randn(2, 6, 8, 8)]
    text = text_feats()
    fusion = HierarchicalHLA([12, 10, 6], C_W, C_S, D).eval()
    (x, ), out_text = fusion(levels, text)
    assert x.shape == (2, D, 8, 8) and out_text.word_feats.shape == (2, 5, D)
    assert out_text.sent_feat is text.sent_feat
    assert len(fusion.blocks) == 3 and len(fusion.inject) == 2
    assert fusion.inject[0].conv.out_channels == 10  # D -> C_2
    # Level 3 = HLA_3(F_3 + Conv(M_2)): changing the shallow level changes
    # the output only through the injection.
    (x2, ), _ = fusion([levels[0] + 1.0] + levels[1:], text)
    assert (x - x2).abs().max() > 1e-3
    flat = HierarchicalHLA([12, 10, 6], C_W, C_S, D,
                           use_hierarchy=False).eval()
    assert len(flat.blocks) == 1 and len(flat.inject) == 0
    (y, ), _ = flat(levels, text)
    (y2, ), _ = flat([levels[0] + 1.0] + levels[1:], text)
    torch.testing.assert_close(y, y2)  # shallow level unused
    pyramid = HierarchicalHLA([12, 10, 6], C_W, C_S, D, stride=2).eval()
    assert pyramid(levels, text)[0][0].shape == (2, D, 2, 2)  # 8 -> 4 -> 2
    chain = HierarchicalHLA([12, 10, 6], C_W, C_S, D,
                            word_flow='chain').eval()
    assert chain.blocks[1].text_channels == D  # reads level 1's words
    assert chain(levels, text)[1].word_feats.shape == (2, 5, D)
    with pytest.raises(ValueError, match='word_flow'):
        HierarchicalHLA([12], C_W, C_S, D, word_flow='sum')
    with pytest.raises(ValueError, match='3 visual levels'):
        fusion(levels[:2], text)
    with pytest.raises(ValueError, match='odd'):
        HierarchicalHLA([12], C_W, C_S, D, kernel_size=2)


@pytest.mark.parametrize('flow, dropped', [('mean', [0, 1, 2]),
                                           ('chain', [2])])
def test_drop_unread_words_keeps_the_visual_output(flow, dropped):
    """``drop_unread_words`` (a head that reads no words) removes the VWA
    of the blocks whose words nothing reads; the fused map M_n is
    unchanged and the words handed on are the projected words."""
    torch.manual_seed(0)
    levels = [torch.randn(2, 12, 8, 8), torch.randn(2, 10, 8, 8),
              torch.randn(2, 6, 8, 8)]
    text = text_feats()
    fusion = HierarchicalHLA([12, 10, 6], C_W, C_S, D,
                             word_flow=flow).eval()
    seen = {}  # block index -> the words it reads
    for i, block in enumerate(fusion.blocks):
        block.register_forward_pre_hook(
            lambda m, args, i=i: seen.__setitem__(i, args[1]))
    with torch.no_grad():
        (ref, ), ref_text = fusion(levels, text)
        keys = set(fusion.state_dict())
        assert fusion.drop_unread_words() == dropped
        assert fusion.drop_unread_words() == []  # idempotent
        (x, ), out_text = fusion(levels, text)
        removed = keys - set(fusion.state_dict())
        assert removed == {f'blocks.{i}.{m}.{p}' for i in dropped
                           for m in ('vw_value', 'vw_out', 'w_norm')
                           for p in ('weight', 'bias')}
        torch.testing.assert_close(x, ref)
        projected = [fusion.blocks[i].w_proj(seen[i]) for i in dropped]
        torch.testing.assert_close(out_text.word_feats,
                                   torch.stack(projected).mean(0))
        assert (out_text.word_feats - ref_text.word_feats).abs().max() > 1e-3
