"""A control dataset: sentences shuffled across samples."""
from typing import Union

import numpy as np
from mmengine.dataset import BaseDataset

from mmseg.registry import DATASETS


@DATASETS.register_module()
class ShuffledTextDataset:
    """Pair every sample with the sentence of another ref (a control run).

    A model that uses the sentence must score far lower on this dataset than
    on the wrapped one; a model that ignores it scores the same. The
    pairing is a fixed permutation (``seed``) in which no sample keeps a
    sentence of its own ref.

    Args:
        dataset (dict | BaseDataset): A ``RefCOCODataset`` (config or
            object) with ``sentence_mode='all'`` or ``'first'``.
        seed (int): Seed of the permutation.

    Raises:
        ValueError: The wrapped dataset draws random sentences
            (``sentence_mode='random'``), or all its samples share one ref.
    """

    def __init__(self, dataset: Union[dict, BaseDataset],
                 seed: int = 0) -> None:
        if isinstance(dataset, dict):
            dataset = DATASETS.build(dataset)
        if getattr(dataset, 'sentence_mode', None) == 'random':
            raise ValueError("ShuffledTextDataset needs sentence_mode='all' "
                             "or 'first', got 'random'")
        self.dataset = dataset
        self.metainfo = dataset.metainfo
        ref_ids = np.array(
            [dataset.get_data_info(i)['ref_id'] for i in range(len(dataset))])
        self.permutation = self._derangement(ref_ids, seed)

    @staticmethod
    def _derangement(ref_ids: np.ndarray, seed: int) -> np.ndarray:
        """A permutation p with ref_ids[p[i]] != ref_ids[i] for every i."""
        if len(np.unique(ref_ids)) < 2:
            raise ValueError('ShuffledTextDataset needs samples of at least '
                             'two refs')
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(ref_ids))
        for i in np.flatnonzero(ref_ids[perm] == ref_ids):
            # swap with a partner j such that both pairs become valid
            for j in rng.permutation(len(ref_ids)):
                if (ref_ids[perm[j]] != ref_ids[i]
                        and ref_ids[perm[i]] != ref_ids[j]):
                    perm[i], perm[j] = perm[j], perm[i]
                    break
        assert not (ref_ids[perm] == ref_ids).any()
        return perm

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> dict:
        info = self.dataset.get_data_info(idx)
        donor = self.dataset.get_data_info(int(self.permutation[idx]))
        info['text'], info['sent_id'] = donor['text'], donor['sent_id']
        return self.dataset.pipeline(info)
