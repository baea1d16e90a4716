from .ptq_hook import PTQHook, calibrate_on_dataset

__all__ = ['PTQHook', 'calibrate_on_dataset']
