import json
import os
import os.path as osp
import pickle
import shutil

import numpy as np
import pytest

from ris_plugins.datasets import (RefCOCODataset, ShuffledTextDataset,
                                  load_refer_pickle)


def build(root, **kwargs):
    kwargs.setdefault('split', 'train')
    return RefCOCODataset(
        data_root=root, dataset='refshapes', split_by='unc', **kwargs)


def all_refs(root):
    return load_refer_pickle(osp.join(root, 'refshapes', 'refs(unc).p'))


def test_sentence_modes(refshapes_root):
    refs = [r for r in all_refs(refshapes_root) if r['split'] == 'val']
    n_sents = sum(len(r['sentences']) for r in refs)
    per_ref = build(refshapes_root, split='val')
    per_pair = build(refshapes_root, split='val', test_mode=True)
    first = build(refshapes_root, split='val', sentence_mode='first')
    assert len(per_ref) == len(refs) == len(first)
    assert len(per_pair) == n_sents
    pairs = {(d['ref_id'], d['sent_id'])
             for d in (per_pair.get_data_info(i)
                       for i in range(len(per_pair)))}
    assert pairs == {(r['ref_id'], s['sent_id']) for r in refs
                     for s in r['sentences']}
    assert first.get_data_info(0)['sent_id'] == refs[0]['sent_ids'][0]


def test_random_mode_draws_each_load(refshapes_root):
    ds = build(refshapes_root, serialize_data=False)
    multi = next(i for i in range(len(ds))
                 if len(ds.data_list[i]['sentences']) > 1)
    texts = {ds.get_data_info(multi)['text'] for _ in range(50)}
    assert texts == {s for _, s in ds.data_list[multi]['sentences']}


def test_test_split_is_union_of_testa_testb(refshapes_root):
    test = build(refshapes_root, split='test', sentence_mode='first')
    a = build(refshapes_root, split='testA', sentence_mode='first')
    b = build(refshapes_root, split='testB', sentence_mode='first')
    assert len(test) == len(a) + len(b) > 0


def test_sample_through_pipeline(refshapes_root):
    ds = build(refshapes_root, split='val', test_mode=True, pipeline=[
        dict(type='LoadImageFromFile'), dict(type='LoadRefMask')])
    item = ds[0]
    mask = item['gt_seg_map']
    assert mask.shape == item['ori_shape'] and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}


@pytest.mark.parametrize('kwargs, match', [
    (dict(dataset='refcocoz'), 'valid'),
    (dict(dataset='refcocog', split_by='unc'), 'valid'),
    (dict(split='testC'), "valid: \\['train', 'val', 'testA', 'testB'\\]"),
    (dict(sentence_mode='many'), 'valid'),
])
def test_bad_names(refshapes_root, kwargs, match):
    args = dict(dataset='refshapes', split_by='unc', split='train')
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        RefCOCODataset(data_root=refshapes_root, **args)


@pytest.fixture
def broken_copy(refshapes_root, tmp_path):
    root = str(tmp_path / 'copy')
    shutil.copytree(refshapes_root, root)
    return root


def test_missing_and_corrupt_files(broken_copy):
    refs_path = osp.join(broken_copy, 'refshapes', 'refs(unc).p')
    with open(refs_path, 'wb') as f:
        f.write(b'\x80\x02not a pickle')
    with pytest.raises(ValueError, match=r'refs\(unc\).p'):
        build(broken_copy)
    os.remove(refs_path)
    with pytest.raises(FileNotFoundError, match=r'refs\(unc\).p'):
        build(broken_copy)


def _rewrite_refs(root, edit):
    path = osp.join(root, 'refshapes', 'refs(unc).p')
    refs = load_refer_pickle(path)
    edit(refs)
    with open(path, 'wb') as f:
        pickle.dump(refs, f, protocol=2)
    return refs


def test_missing_annotation_is_an_error(broken_copy):
    refs = _rewrite_refs(broken_copy,
                         lambda refs: refs[0].update(ann_id=10**9))
    with pytest.raises(KeyError, match=f'ref {refs[0]["ref_id"]}'):
        build(broken_copy, split=refs[0]['split'])


def test_missing_image_is_an_error(broken_copy):
    refs = all_refs(broken_copy)
    img_dir = osp.join(broken_copy, 'images', 'mscoco', 'images',
                       'train2014')
    os.remove(osp.join(img_dir, sorted(os.listdir(img_dir))[0]))
    with pytest.raises(FileNotFoundError, match='COCO_train2014_0+1.jpg'):
        build(broken_copy, split=refs[0]['split'])


def test_empty_split_is_an_error(broken_copy):
    _rewrite_refs(broken_copy,
                  lambda refs: [r.update(split='train') for r in refs])
    with pytest.raises(ValueError, match="split 'val' .* is empty"):
        build(broken_copy, split='val')


def test_python2_pickle_loads(tmp_path):
    # A protocol-2 pickle as Python 2 writes it: a list holding a dict whose
    # str values are byte strings (SHORT_BINSTRING), one of them non-ASCII.
    payload = (b'\x80\x02]q\x00}q\x01(U\x03rawq\x02U\x04caf\xe9q\x03'
               b'U\x06ref_idq\x04K\x07ua.')
    path = tmp_path / 'refs(unc).p'
    path.write_bytes(payload)
    refs = load_refer_pickle(str(path))
    assert refs == [{'raw': 'caf\xe9', 'ref_id': 7}]


def test_shuffled_text_is_a_derangement(refshapes_root):
    base = build(refshapes_root, split='val', test_mode=True)
    shuffled = ShuffledTextDataset(base, seed=0)
    assert len(shuffled) == len(base)
    ref_ids = np.array([base.get_data_info(i)['ref_id']
                        for i in range(len(base))])
    assert sorted(shuffled.permutation) == list(range(len(base)))
    assert not (ref_ids[shuffled.permutation] == ref_ids).any()
    with pytest.raises(ValueError, match='random'):
        ShuffledTextDataset(build(refshapes_root, split='val'))


class _RunsCode:
    """Pickles as ``os.system(<command>)``: unpickling runs the command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command, ))


class _Evals:
    """Pickles as ``builtins.eval(<expression>)``, which creates ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (eval, (f'open({self.path!r}, "w")', ))


@pytest.mark.parametrize('protocol', [0, 2, 4])
def test_malicious_refs_pickle_runs_nothing(tmp_path, protocol):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'refs(unc).p'
    refs = [dict(ref_id=1, split='val', evil=_RunsCode(f'touch {marker}'))]
    path.write_bytes(pickle.dumps(refs, protocol=protocol))
    with pytest.raises(pickle.UnpicklingError) as info:
        load_refer_pickle(str(path))
    assert not marker.exists()
    msg = str(info.value)
    assert str(path) in msg
    assert f'{os.system.__module__}.system' in msg  # posix.system on Linux


def test_refs_pickle_refuses_unsafe_builtins(tmp_path):
    path = tmp_path / 'refs(unc).p'
    marker = tmp_path / 'marker'
    path.write_bytes(pickle.dumps([_Evals(str(marker))], protocol=2))
    with pytest.raises(pickle.UnpicklingError,
                       match=r'(__builtin__|builtins)\.eval'):
        load_refer_pickle(str(path))
    assert not marker.exists()


def test_refs_pickle_allows_builtin_containers(tmp_path):
    # protocol 0 writes sets and tuples-in-sets through builtins globals
    refs = [dict(ref_id=1, sent_ids={0, 1}, box=(1.5, 2), ok=True,
                 name='caf\xe9', n=None)]
    path = tmp_path / 'refs(unc).p'
    for protocol in (0, 1, 2, 4):
        path.write_bytes(pickle.dumps(refs, protocol=protocol))
        assert load_refer_pickle(str(path)) == refs


def _rewrite_instances(root, edit):
    path = osp.join(root, 'refshapes', 'instances.json')
    with open(path) as f:
        instances = json.load(f)
    edit(instances)
    with open(path, 'w') as f:
        json.dump(instances, f)


def _first_val_ref(root):
    return next(r for r in all_refs(root) if r['split'] == 'val')


@pytest.mark.parametrize('segm, match', [
    ([[1, 1, 9, 1, 9, 9, 1]], 'odd number of coordinates'),
    ([[1, 1, 9, 1]], 'at least 6 coordinates'),
    ([[1, 1, 9, 1, 9, 9], []], 'part 1 is empty'),
    ([], 'empty polygon list'),
    ('short', r'RLE counts sum to 5 pixels'),
    ('short-list', r'RLE counts sum to 5 pixels'),
])
def test_bad_segmentation_names_ref_annotation_and_file(
        broken_copy, segm, match):
    ref = _first_val_ref(broken_copy)

    def edit(instances):
        img = next(i for i in instances['images']
                   if i['id'] == ref['image_id'])
        size = [img['height'], img['width']]
        bad = dict(short={'size': size, 'counts': '41'},
                   **{'short-list': {'size': size, 'counts': [4, 1]}})
        ann = next(a for a in instances['annotations']
                   if a['id'] == ref['ann_id'])
        ann['segmentation'] = bad.get(segm, segm) if isinstance(
            segm, str) else segm

    _rewrite_instances(broken_copy, edit)
    pattern = (f'ref {ref["ref_id"]}.*annotation {ref["ann_id"]}.*'
               f'instances.json.*{match}')
    with pytest.raises(ValueError, match=pattern):
        build(broken_copy, split='val')


@pytest.mark.parametrize('where, key', [
    ('ref', 'split'), ('ref', 'sentences'), ('ref', 'ann_id'),
    ('sentence', 'raw'), ('sentence', 'sent_id'),
    ('image', 'height'), ('image', 'file_name'),
    ('annotation', 'segmentation'), ('annotation', 'id'),
])
def test_missing_keys_name_file_id_and_key(broken_copy, where, key):
    ref = _first_val_ref(broken_copy)
    if where in ('ref', 'sentence'):
        def edit(refs):
            r = next(r for r in refs if r['ref_id'] == ref['ref_id'])
            del (r if where == 'ref' else r['sentences'][0])[key]
        _rewrite_refs(broken_copy, edit)
        pattern = rf"ref {ref['ref_id']} .*refs\(unc\)\.p.*'{key}'"
    else:
        item_id = ref['image_id'] if where == 'image' else ref['ann_id']

        def edit(instances):
            items = instances[f'{where}s']
            next(i for i in items if i['id'] == item_id).pop(key)
        _rewrite_instances(broken_copy, edit)
        pattern = rf"instances\.json.*'{key}'"
        if key != 'id':
            pattern = rf"{where} {item_id} .*" + pattern
    with pytest.raises(ValueError, match=pattern):
        build(broken_copy, split='val')


@pytest.mark.parametrize('key, value', [
    ('annotations', {'1': {}}), ('images', None),
])
def test_wrong_type_in_instances_names_file_and_key(broken_copy, key, value):
    _rewrite_instances(broken_copy, lambda inst: inst.update({key: value}))
    with pytest.raises(ValueError,
                       match=rf"instances\.json.*'{key}'.*list"):
        build(broken_copy, split='val')


@pytest.mark.parametrize('edit, match', [
    (lambda r: r.update(sentences='the red circle'), 'list'),
    (lambda r: r['sentences'][0].update(raw=''), 'empty'),
    (lambda r: r['sentences'][0].update(raw=' \t '), 'empty'),
    (lambda r: r['sentences'][0].update(raw=42), 'string'),
    (lambda r: r['sentences'].__setitem__(0, 'the red circle'), 'dict'),
    (lambda r: r.update(split=None), 'split'),
])
def test_bad_sentences_name_the_ref(broken_copy, edit, match):
    ref = _first_val_ref(broken_copy)
    _rewrite_refs(broken_copy, lambda refs: edit(
        next(r for r in refs if r['ref_id'] == ref['ref_id'])))
    pattern = rf"ref {ref['ref_id']} .*refs\(unc\)\.p.*{match}"
    with pytest.raises(ValueError, match=pattern):
        build(broken_copy, split='val')


def test_ref_that_is_not_a_dict_is_an_error(broken_copy):
    _rewrite_refs(broken_copy, lambda refs: refs.insert(3, [1, 2]))
    with pytest.raises(ValueError, match=r'entry 3 of .*refs\(unc\)\.p.*'
                       'dict'):
        build(broken_copy, split='val')


def test_bad_image_size_names_the_image(broken_copy):
    ref = _first_val_ref(broken_copy)

    def edit(instances):
        next(i for i in instances['images']
             if i['id'] == ref['image_id'])['height'] = '240'
    _rewrite_instances(broken_copy, edit)
    with pytest.raises(ValueError, match=rf"image {ref['image_id']} .*"
                       r"instances\.json.*'height'.*positive integer"):
        build(broken_copy, split='val')
