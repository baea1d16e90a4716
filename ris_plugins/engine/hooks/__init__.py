from .channels_last_hook import ChannelsLastHook, to_channels_last
from .ptq_hook import PTQHook, calibrate_on_dataset
from .ref_visualization_hook import RefSegVisualizationHook
from .rng_state_hook import RNGStateHook
from .strict_load_hook import StrictLoadHook
from .text_check_hook import TextInputCheckHook

__all__ = [
    'PTQHook', 'RNGStateHook', 'StrictLoadHook', 'TextInputCheckHook',
    'calibrate_on_dataset', 'ChannelsLastHook', 'to_channels_last',
    'RefSegVisualizationHook'
]
