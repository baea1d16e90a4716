from .bert_text_encoder import BertTextEncoder
from .clip_text_encoder import RefCLIPTextEncoder

__all__ = ['BertTextEncoder', 'RefCLIPTextEncoder']
