from .bert_text_encoder import BertTextEncoder
from .clip_text_encoder import RefCLIPTextEncoder
from .text_features import TextFeatures

__all__ = ['BertTextEncoder', 'RefCLIPTextEncoder', 'TextFeatures']
