from .binary_focal_loss import BinaryFocalLoss

__all__ = ['BinaryFocalLoss']
