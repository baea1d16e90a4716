from .hooks import PTQHook, RNGStateHook, StrictLoadHook, calibrate_on_dataset

__all__ = ['PTQHook', 'calibrate_on_dataset', 'RNGStateHook', 'StrictLoadHook']
