from .bert_text_encoder import BertTextEncoder
from .text_features import TextFeatures

__all__ = ['BertTextEncoder', 'TextFeatures']
