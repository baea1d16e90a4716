from .ref_data_preprocessor import RefDataPreProcessor

__all__ = ['RefDataPreProcessor']
