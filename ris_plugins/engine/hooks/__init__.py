from .ptq_hook import PTQHook, calibrate_on_dataset
from .rng_state_hook import RNGStateHook
from .strict_load_hook import StrictLoadHook

__all__ = ['PTQHook', 'calibrate_on_dataset', 'RNGStateHook', 'StrictLoadHook']
