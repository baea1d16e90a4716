"""Stepping a :class:`CLIPResNet` (CLIP's modified ResNet with CRIS's dense
attention pool) one stage at a time for :class:`DualEncoderBackbone`, as
ETRIS's ``Bridger_RN`` drives it (``kkakkkka/ETRIS: model/bridger.py``);
the library stages are called, never copied."""
from typing import List, Optional, Sequence, Tuple

from torch import Tensor

from ..clip_resnet import CLIPResNet
from .state import DualEncoderState

# ResNet "blocks" of the runner: block i (1-based) is this stage.
RESNET_BLOCKS = ('layer2', 'layer3', 'layer4')


class ResNetTower:
    """Driver of a :class:`CLIPResNet` tower: block 0 is the stem +
    ``layer1`` (B, 4w, H/4, W/4), blocks 1, 2, 3 are ``layer2``,
    ``layer3``, ``layer4`` (strides 8, 16, 32); the state holds the current
    map (B, C_v, h, w) (see the package doc for the interface)."""

    layout = 'map'
    vis_prefix = 0  # no token sequence

    @staticmethod
    def widths(rn: CLIPResNet) -> Tuple[int, ...]:
        """Channels after stem + ``layer1`` and after each of ``layer2``
        .. ``layer4`` (4w, 8w, 16w, 32w)."""
        return tuple(
            getattr(rn, n)[-1].bn3.num_features
            for n in ('layer1', ) + RESNET_BLOCKS)

    @staticmethod
    def embed(rn: CLIPResNet, img: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """CLIP ResNet stem + ``layer1``, as ``CLIPResNet.forward``: (B, 3,
        H, W) -> ((B, 4w, H/4, W/4), (H/4, W/4))."""
        x = img.type(rn.conv1.weight.dtype)
        for conv, bn in ((rn.conv1, rn.bn1), (rn.conv2, rn.bn2), (rn.conv3,
                                                                  rn.bn3)):
            x = rn.relu(bn(conv(x)))  # (B, w, H/2, W/2)
        x = rn.layer1(rn.avgpool(x))  # (B, 4w, H/4, W/4)
        return x, tuple(x.shape[-2:])

    @staticmethod
    def run_block(rn: CLIPResNet,
                  state: DualEncoderState,
                  i: int,
                  shortcuts: Optional[tuple] = None) -> None:
        """Run stage ``RESNET_BLOCKS[i]`` on the current map. ``shortcuts``
        is always None (the runner refuses them with a ResNet). Blocks are
        checkpointed when the tower's ``with_cp`` is set."""
        stage = getattr(rn, RESNET_BLOCKS[i])
        state.set_patches(rn.run_stage(stage,
                                       state.vis))  # (B, C_i, h_i, w_i)

    @staticmethod
    def tap(state: DualEncoderState) -> Tensor:
        """The current map (B, C_v, h, w)."""
        return state.vis

    @staticmethod
    def levels(rn: CLIPResNet, state: DualEncoderState,
               taps: Sequence[int]) -> List[Tensor]:
        """The ``taps`` maps and ``attnpool`` of the last map (B,
        output_dim, H/32, W/32), as :meth:`CLIPResNet.forward`."""
        levels = [state.patch_taps[v] for v in taps]
        levels.append(rn.attnpool(state.vis))  # (B, D, h, w)
        return levels
