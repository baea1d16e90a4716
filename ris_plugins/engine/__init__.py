from .hooks import (ChannelsLastHook, PTQHook, RefSegVisualizationHook,
                    RNGStateHook, StrictLoadHook, TextInputCheckHook,
                    calibrate_on_dataset, to_channels_last)
from .optimizers import CPUAmpOptimWrapper

__all__ = [
    'PTQHook', 'RNGStateHook', 'StrictLoadHook', 'TextInputCheckHook',
    'calibrate_on_dataset', 'CPUAmpOptimWrapper', 'ChannelsLastHook',
    'to_channels_last', 'RefSegVisualizationHook'
]
