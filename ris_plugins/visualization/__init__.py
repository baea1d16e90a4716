from .local_visualizer import (RefSegLocalVisualizer, align_image,
                               binary_contours, mask_iou, sample_masks)

__all__ = [
    'RefSegLocalVisualizer', 'align_image', 'binary_contours', 'mask_iou',
    'sample_masks'
]
