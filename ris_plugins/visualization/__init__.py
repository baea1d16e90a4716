from .contact_sheet import (CollectPredictionsHook, collect_predictions,
                            contact_sheet, record_of, sample_of,
                            select_samples, write_contact_sheet)
from .local_visualizer import (RefSegLocalVisualizer, align_image,
                               binary_contours, mask_iou, sample_masks)

__all__ = [
    'RefSegLocalVisualizer', 'align_image', 'binary_contours', 'mask_iou',
    'sample_masks', 'CollectPredictionsHook', 'collect_predictions',
    'contact_sheet', 'record_of', 'sample_of', 'select_samples',
    'write_contact_sheet'
]
