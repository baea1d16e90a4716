from .phrasecut import PhraseCutDataset
from .refcoco import SPLITS, RefCOCODataset, load_refer_pickle
from .shuffled_text import ShuffledTextDataset
from .transforms import *  # noqa: F401,F403

__all__ = [
    'RefCOCODataset', 'ShuffledTextDataset', 'SPLITS', 'load_refer_pickle'
]
