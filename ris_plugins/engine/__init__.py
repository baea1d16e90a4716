from .hooks import (PTQHook, RefSegVisualizationHook, RNGStateHook,
                    StrictLoadHook, TextInputCheckHook, calibrate_on_dataset)

__all__ = [
    'PTQHook', 'RNGStateHook', 'StrictLoadHook', 'TextInputCheckHook',
    'calibrate_on_dataset', 'RefSegVisualizationHook'
]
