"""RefCOCO / RefCOCO+ / G-Ref (and RefShapes) in the genuine ``refer``
layout.

Source: the ``lichengunc/refer`` API (``refer.py``): ``refs(<splitBy>).p`` +
``instances.json``, COCO train2014 images; see
``shared/docs/refcoco_and_eval.md`` sections 1-3.
"""
import json
import os.path as osp
import pickle
import random
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

# (dataset, splitBy) -> splits present in the released pickles.
SPLITS: Dict[tuple, Sequence[str]] = {
    ('refcoco', 'unc'): ('train', 'val', 'testA', 'testB'),
    ('refcoco', 'google'): ('train', 'val', 'test'),
    ('refcoco+', 'unc'): ('train', 'val', 'testA', 'testB'),
    ('refcocog', 'umd'): ('train', 'val', 'test'),
    ('refcocog', 'google'): ('train', 'val'),
    ('refshapes', 'unc'): ('train', 'val', 'testA', 'testB'),
}
SENTENCE_MODES = ('random', 'all', 'first')


# The only globals a refs pickle may name: builtin containers and scalars
# (protocols 0-1 write sets, tuples-in-sets etc. through them). Python 2
# names are mapped by ``fix_imports`` (``__builtin__.unicode`` -> ``str``).
_SAFE_BUILTINS = frozenset({
    'dict', 'list', 'tuple', 'set', 'frozenset', 'str', 'bytes', 'int',
    'float', 'bool', 'complex'
})
REFS_PICKLE_GLOBALS = frozenset(
    {('builtins', n) for n in _SAFE_BUILTINS} |
    {('__builtin__', n) for n in _SAFE_BUILTINS | {'unicode', 'long'}})


class RefusedGlobalError(pickle.UnpicklingError):
    """A refs pickle names a global outside :data:`REFS_PICKLE_GLOBALS`."""


class RefsUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the globals in
    :data:`REFS_PICKLE_GLOBALS`, so loading a refs file can never call a
    function (``os.system``, ``eval``, a class constructor, ...).

    Every route by which a pickle reaches code (``GLOBAL``,
    ``STACK_GLOBAL``, ``INST``, ``OBJ`` and the copyreg ``EXT*`` opcodes)
    goes through :meth:`find_class`; persistent ids are refused by the base
    class.

    Args:
        file: Binary file object.
        path (str): The file's path, for error messages.
        encoding (str): How Python 2 ``str`` objects are decoded.

    Raises:
        RefusedGlobalError: From :meth:`load`, on any other global; the
            message names the file and the global (``module.name`` as the
            pickle spells it).
    """

    def __init__(self, file, path: str, encoding: str) -> None:
        super().__init__(file, fix_imports=True, encoding=encoding)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in REFS_PICKLE_GLOBALS:
            allowed = sorted(f'builtins.{n}' for n in _SAFE_BUILTINS)
            raise RefusedGlobalError(
                f'refs file {self.path!r} refers to the global '
                f'{module}.{name}, which a refs file never holds; refused '
                f'without calling it (allowed: {allowed}). Do not use this '
                'file.')
        return super().find_class(module, name)


def load_refer_pickle(path: str) -> List[dict]:
    """Load ``refs(<splitBy>).p``, including Python-2-era pickles, without
    running code from it (:class:`RefsUnpickler`).

    Python 2 byte strings are decoded as ASCII, then as latin-1 if that
    fails (the ``refer`` API's ``pickle.load(..., encoding=...)``).

    Args:
        path (str): Path of the pickle.

    Returns:
        list[dict]: The refs.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        RefusedGlobalError: The pickle names a global other than a builtin
            container or scalar (a ``pickle.UnpicklingError``; the message
            names the file and the global).
        ValueError: The file is not a readable list-of-refs pickle.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'refs file {path!r} does not exist')
    refs = None
    for encoding in ('ASCII', 'latin1'):
        try:
            with open(path, 'rb') as f:
                refs = RefsUnpickler(f, path, encoding).load()
            break
        except UnicodeDecodeError:
            continue
        except RefusedGlobalError:
            raise
        except Exception as err:  # corrupt or truncated pickle
            raise ValueError(
                f'cannot read refs file {path!r}: {type(err).__name__}: '
                f'{err}') from err
    if not isinstance(refs, list):
        raise ValueError(f'refs file {path!r} must hold a list of refs, got '
                         f'{type(refs).__name__}')
    return refs


def load_instances(path: str) -> dict:
    """Load a COCO ``instances.json``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: It is not JSON, or lacks ``images`` / ``annotations``.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'instances file {path!r} does not exist')
    try:
        with open(path) as f:
            instances = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f'cannot parse instances file {path!r}: '
                         f'{err}') from err
    missing = [k for k in ('images', 'annotations') if k not in instances]
    if missing:
        raise ValueError(f'instances file {path!r} lacks keys {missing}')
    return instances


@DATASETS.register_module()
class RefCOCODataset(BaseSegDataset):
    """Referring segmentation dataset in the ``refer`` layout.

    Reads ``<data_root>/<dataset>/refs(<split_by>).p`` and
    ``<data_root>/<dataset>/instances.json``; images are under
    ``<data_root>/<data_prefix.img_path>``. Each sample is one referred
    object: its COCO segmentation (polygons or RLE) is decoded by the
    ``LoadRefMask`` transform into a binary mask at the original
    resolution.

    Sentence sampling (``sentence_mode``):

    * ``'random'``: one sample per ref, a fresh random sentence each time it
      is loaded (training in LAVT / CRIS);
    * ``'all'``: one sample per (ref, sentence) pair, so every sentence is
      evaluated (the reported test protocol);
    * ``'first'``: one sample per ref with its first sentence (CRIS
      validation curves).

    Split matching follows ``refer.getRefIds``: ``'test'`` selects every split
    whose name contains ``'test'`` (RefCOCO/+: testA and testB); any other
    split must match exactly.

    Args:
        dataset (str): ``'refcoco'``, ``'refcoco+'``, ``'refcocog'`` or
            ``'refshapes'``.
        split_by (str): Partition: ``'unc'``, ``'google'`` or ``'umd'``
            (valid pairs in :data:`SPLITS`).
        split (str): ``'train'``, ``'val'``, ``'testA'``, ``'testB'`` or
            ``'test'`` (where the partition has it).
        sentence_mode (str, optional): One of :data:`SENTENCE_MODES`.
            Defaults to ``'all'`` if ``test_mode`` else ``'random'``.
        refs_file (str): Refs pickle name pattern, formatted with
            ``split_by``.
        instances_file (str): COCO instances file name.
        data_prefix (dict): ``img_path``: image folder under ``data_root``.
        **kwargs: Passed to :class:`mmseg.datasets.BaseSegDataset`.

    Each data info holds ``img_path``, ``ref_id``, ``ann_id``, ``image_id``,
    ``category_id``, ``ref_segmentation`` (COCO segmentation),
    ``ori_height`` / ``ori_width`` (pixels), ``text`` (raw sentence),
    ``sent_id`` and ``seg_fields``.

    Raises:
        ValueError: Unknown ``dataset`` / ``split_by`` / ``split`` /
            ``sentence_mode`` (the message lists the valid ones), an empty
            split, a ref without sentences, or a corrupt file.
        FileNotFoundError: Missing refs / instances file, or a missing image.
        KeyError: A ref whose annotation or image is not in
            ``instances.json``.
    """

    METAINFO = dict(
        classes=('background', 'object'), palette=[[0, 0, 0], [255, 255,
                                                               255]])

    def __init__(self,
                 dataset: str = 'refcoco',
                 split_by: str = 'unc',
                 split: str = 'train',
                 sentence_mode: Optional[str] = None,
                 refs_file: str = 'refs({split_by}).p',
                 instances_file: str = 'instances.json',
                 data_prefix: dict = dict(
                     img_path='images/mscoco/images/train2014'),
                 **kwargs) -> None:
        if (dataset, split_by) not in SPLITS:
            raise ValueError(
                f'unknown dataset/split_by {dataset!r}/{split_by!r}; valid: '
                f'{sorted(SPLITS)}')
        valid = SPLITS[(dataset, split_by)]
        if split not in valid and not (split == 'test' and any(
                'test' in s for s in valid)):
            raise ValueError(f'unknown split {split!r} for {dataset}/'
                             f'{split_by}; valid: {list(valid)}')
        test_mode = kwargs.get('test_mode', False)
        sentence_mode = sentence_mode or ('all' if test_mode else 'random')
        if sentence_mode not in SENTENCE_MODES:
            raise ValueError(f'unknown sentence_mode {sentence_mode!r}; '
                             f'valid: {SENTENCE_MODES}')
        self.dataset, self.split_by, self.split = dataset, split_by, split
        self.sentence_mode = sentence_mode
        self.refs_file = osp.join(dataset, refs_file.format(
            split_by=split_by))
        self.instances_file = osp.join(dataset, instances_file)
        super().__init__(data_prefix=data_prefix, **kwargs)

    def _join_prefix(self) -> None:
        super()._join_prefix()
        self.refs_file = osp.join(self.data_root, self.refs_file)
        self.instances_file = osp.join(self.data_root, self.instances_file)

    def _split_matches(self, ref_split: str) -> bool:
        if self.split == 'test':
            return 'test' in ref_split
        return ref_split == self.split

    def load_data_list(self) -> List[dict]:
        """Read the refs of ``split`` into data infos (see class doc)."""
        refs = load_refer_pickle(self.refs_file)
        instances = load_instances(self.instances_file)
        anns = {a['id']: a for a in instances['annotations']}
        imgs = {i['id']: i for i in instances['images']}
        data_list: List[dict] = []
        seen_images = set()
        for ref in refs:
            if not self._split_matches(ref['split']):
                continue
            info = self._ref_info(ref, anns, imgs)
            if info['image_id'] not in seen_images:
                seen_images.add(info['image_id'])
                if not osp.isfile(info['img_path']):
                    raise FileNotFoundError(
                        f'image {info["img_path"]!r} of ref {ref["ref_id"]} '
                        f'(in {self.refs_file!r}) does not exist')
            data_list.extend(self._expand_sentences(info))
        if not data_list:
            found = sorted(Counter(r['split'] for r in refs))
            raise ValueError(
                f'split {self.split!r} of {self.refs_file!r} is empty; '
                f'splits present: {found}')
        return data_list

    def _ref_info(self, ref: dict, anns: Dict[int, dict],
                  imgs: Dict[int, dict]) -> Dict[str, Any]:
        ref_id = ref['ref_id']
        if ref['ann_id'] not in anns:
            raise KeyError(
                f'ref {ref_id} in {self.refs_file!r} points to annotation '
                f'{ref["ann_id"]}, which is not in {self.instances_file!r}')
        if ref['image_id'] not in imgs:
            raise KeyError(
                f'ref {ref_id} in {self.refs_file!r} points to image '
                f'{ref["image_id"]}, which is not in {self.instances_file!r}')
        if not ref.get('sentences'):
            raise ValueError(f'ref {ref_id} in {self.refs_file!r} has no '
                             'sentences')
        img = imgs[ref['image_id']]
        return dict(
            img_path=osp.join(self.data_prefix['img_path'],
                              img['file_name']),
            ref_id=ref_id,
            ann_id=ref['ann_id'],
            image_id=ref['image_id'],
            category_id=ref['category_id'],
            ref_segmentation=anns[ref['ann_id']]['segmentation'],
            ori_height=img['height'],
            ori_width=img['width'],
            sentences=[(s['sent_id'], s['raw']) for s in ref['sentences']],
            seg_fields=[],
            reduce_zero_label=False)

    def _expand_sentences(self, info: dict) -> List[dict]:
        if self.sentence_mode == 'random':
            return [info]
        sentences = info.pop('sentences')
        if self.sentence_mode == 'first':
            sentences = sentences[:1]
        return [
            dict(info, sent_id=sent_id, text=text)
            for sent_id, text in sentences
        ]

    def get_data_info(self, idx: int) -> dict:
        """Data info of sample ``idx``; in ``'random'`` mode a sentence is
        drawn (Python ``random``, seeded per worker by mmengine) on every
        call."""
        info = super().get_data_info(idx)
        if self.sentence_mode == 'random':
            info['sent_id'], info['text'] = random.choice(
                info.pop('sentences'))
        return info
