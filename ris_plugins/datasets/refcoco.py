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

from .transforms.loading import check_segmentation

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
# Keys read from each entry of the refs pickle / instances.json.
REF_KEYS = ('ref_id', 'split', 'ann_id', 'image_id', 'category_id',
            'sentences')
SENTENCE_KEYS = ('sent_id', 'raw')
IMAGE_KEYS = ('id', 'file_name', 'height', 'width')
ANNOTATION_KEYS = ('id', 'segmentation')


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


def _missing(entry: dict, keys: Sequence[str]) -> List[str]:
    return [k for k in keys if k not in entry]


def load_instances(path: str) -> dict:
    """Load a COCO ``instances.json`` and index it.

    Args:
        path (str): Path of the file.

    Returns:
        dict: ``images`` and ``annotations``, each a dict id -> entry.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: It is not JSON or not a JSON object; ``images`` /
            ``annotations`` is missing or not a list; an entry is not a
            dict or lacks ``id`` (the message names the file, the list and
            the entry index).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'instances file {path!r} does not exist')
    try:
        with open(path) as f:
            instances = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f'cannot parse instances file {path!r}: '
                         f'{err}') from err
    if not isinstance(instances, dict):
        raise ValueError(f'instances file {path!r} must hold a JSON object, '
                         f'got {type(instances).__name__}')
    missing = _missing(instances, ('images', 'annotations'))
    if missing:
        raise ValueError(f'instances file {path!r} lacks keys {missing}')
    indexed = {}
    for key in ('images', 'annotations'):
        entries = instances[key]
        if not isinstance(entries, list):
            raise ValueError(f'instances file {path!r}: {key!r} must be a '
                             f'list, got {type(entries).__name__}')
        for k, entry in enumerate(entries):
            if not isinstance(entry, dict) or 'id' not in entry:
                raise ValueError(
                    f'instances file {path!r}: {key}[{k}] must be a dict '
                    f"with key 'id', got {str(entry)[:80]}")
        indexed[key] = {e['id']: e for e in entries}
    return indexed


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

    Every ref of ``split`` is checked when the dataset is built, so bad
    data fails before training starts and never changes from run to run.

    Raises:
        ValueError: Unknown ``dataset`` / ``split_by`` / ``split`` /
            ``sentence_mode`` (the message lists the valid ones); an empty
            split; a corrupt file; a ref, sentence, image or annotation
            lacking a key of :data:`REF_KEYS` / :data:`SENTENCE_KEYS` /
            :data:`IMAGE_KEYS` / :data:`ANNOTATION_KEYS` or holding a value
            of the wrong type (the message names the file, the id and the
            key); a sentence that is not a string or is empty / whitespace
            only; a segmentation that :func:`check_segmentation` rejects
            (named with its ref, annotation and both files).
        pickle.UnpicklingError: The refs pickle names a global other than a
            builtin container or scalar (:class:`RefsUnpickler`).
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
        anns, imgs = instances['annotations'], instances['images']
        data_list: List[dict] = []
        seen_images = set()
        for k, ref in enumerate(refs):
            self._check_ref(k, ref)
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

    def _check_ref(self, k: int, ref: Any) -> None:
        """Entry ``k`` of the refs file is a dict with :data:`REF_KEYS` and a
        string ``split``."""
        if not isinstance(ref, dict):
            raise ValueError(f'entry {k} of {self.refs_file!r} must be a ref '
                             f'dict, got {type(ref).__name__}')
        where = f'ref {ref.get("ref_id")} (entry {k}) in {self.refs_file!r}'
        missing = _missing(ref, REF_KEYS)
        if missing:
            raise ValueError(f'{where} lacks keys {missing} (required: '
                             f'{REF_KEYS})')
        if not isinstance(ref['split'], str):
            raise ValueError(f"{where}: 'split' must be a string, got "
                             f'{ref["split"]!r}')

    def _sentences(self, ref: dict) -> List[tuple]:
        """(sent_id, raw) of every sentence of ``ref``; each must be a
        non-blank string."""
        where = f'ref {ref["ref_id"]} in {self.refs_file!r}'
        sentences = ref['sentences']
        if not isinstance(sentences, list) or not sentences:
            raise ValueError(f'{where}: sentences must be a non-empty list, '
                             f'got {sentences!r:.80}')
        out = []
        for j, sent in enumerate(sentences):
            if not isinstance(sent, dict):
                raise ValueError(f'{where}: sentence {j} must be a dict with '
                                 f'keys {SENTENCE_KEYS}, got '
                                 f'{type(sent).__name__}')
            missing = _missing(sent, SENTENCE_KEYS)
            if missing:
                raise ValueError(f'{where}: sentence {j} lacks keys '
                                 f'{missing} (required: {SENTENCE_KEYS})')
            raw = sent['raw']
            if not isinstance(raw, str):
                raise ValueError(f"{where}: sentence {j} (sent_id "
                                 f"{sent['sent_id']}) 'raw' must be a string, "
                                 f'got {type(raw).__name__} {raw!r:.40}')
            if not raw.strip():
                raise ValueError(f'{where}: sentence {j} (sent_id '
                                 f"{sent['sent_id']}) is empty or whitespace "
                                 f'only ({raw!r})')
            out.append((sent['sent_id'], raw))
        return out

    def _image(self, image_id: Any, imgs: Dict[Any, dict]) -> dict:
        """The checked ``images`` entry ``image_id``."""
        img = imgs[image_id]
        where = f'image {image_id} in {self.instances_file!r}'
        missing = _missing(img, IMAGE_KEYS)
        if missing:
            raise ValueError(f'{where} lacks keys {missing} (required: '
                             f'{IMAGE_KEYS})')
        for key in ('height', 'width'):
            value = img[key]
            if not (isinstance(value, int) and not isinstance(value, bool)
                    and value > 0):
                raise ValueError(f'{where}: {key!r} must be a positive '
                                 f'integer (pixels), got {value!r}')
        if not isinstance(img['file_name'], str) or not img['file_name']:
            raise ValueError(f"{where}: 'file_name' must be a non-empty "
                             f"string, got {img['file_name']!r}")
        return img

    def _segmentation(self, ref: dict, anns: Dict[Any, dict],
                      img: dict) -> Any:
        """The referred annotation's segmentation, checked against the
        image size (:func:`check_segmentation`)."""
        ann_id = ref['ann_id']
        ann = anns[ann_id]
        missing = _missing(ann, ANNOTATION_KEYS)
        if missing:
            raise ValueError(f'annotation {ann_id} in '
                             f'{self.instances_file!r} lacks keys {missing} '
                             f'(required: {ANNOTATION_KEYS})')
        try:
            check_segmentation(ann['segmentation'], img['height'],
                               img['width'])
        except ValueError as err:
            raise ValueError(
                f'ref {ref["ref_id"]} (in {self.refs_file!r}): annotation '
                f'{ann_id} in {self.instances_file!r} has a bad '
                f'segmentation: {err}') from err
        return ann['segmentation']

    def _ref_info(self, ref: dict, anns: Dict[int, dict],
                  imgs: Dict[int, dict]) -> Dict[str, Any]:
        ref_id = ref['ref_id']
        for key, table, what in (('ann_id', anns, 'annotation'),
                                 ('image_id', imgs, 'image')):
            if ref[key] not in table:
                raise KeyError(
                    f'ref {ref_id} in {self.refs_file!r} points to {what} '
                    f'{ref[key]}, which is not in {self.instances_file!r}')
        sentences = self._sentences(ref)
        img = self._image(ref['image_id'], imgs)
        return dict(
            img_path=osp.join(self.data_prefix['img_path'],
                              img['file_name']),
            ref_id=ref_id,
            ann_id=ref['ann_id'],
            image_id=ref['image_id'],
            category_id=ref['category_id'],
            ref_segmentation=self._segmentation(ref, anns, img),
            ori_height=img['height'],
            ori_width=img['width'],
            sentences=sentences,
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
