from .bottleneck import BottleneckAdapter
from .bridger_rn import BridgerRN
from .bridger_vit import BridgerViT, GatedCrossAttention
from .gst_side_net import GSTSideNet
from .lim import LIMPrompts
from .lora import LoRA
from .snf import SNF, ShortcutFlow

__all__ = [
    'BottleneckAdapter', 'BridgerRN', 'BridgerViT', 'GSTSideNet',
    'GatedCrossAttention', 'LIMPrompts', 'LoRA', 'SNF', 'ShortcutFlow'
]
