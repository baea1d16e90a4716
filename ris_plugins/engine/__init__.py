from .hooks import PTQHook  # noqa: F401

__all__ = ['PTQHook']
