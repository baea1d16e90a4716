from .hooks import (PTQHook, RNGStateHook, StrictLoadHook,
                    TextInputCheckHook, calibrate_on_dataset)

__all__ = [
    'PTQHook', 'RNGStateHook', 'StrictLoadHook', 'TextInputCheckHook',
    'calibrate_on_dataset'
]
