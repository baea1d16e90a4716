from .ptq_hook import PTQHook

__all__ = ['PTQHook']
