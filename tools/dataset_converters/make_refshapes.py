"""Generate RefShapes: a synthetic referring-expression dataset written in
the genuine RefCOCO (``lichengunc/refer``) layout, so ``RefCOCODataset``
reads it unchanged::

    <out>/images/mscoco/images/train2014/COCO_train2014_<id:012d>.jpg
    <out>/refshapes/instances.json      COCO images/annotations/categories
    <out>/refshapes/refs(unc).p         list of refs (pickle protocol 2)

Each image (varied size and aspect ratio, textured background) holds 2-6
shapes of several kinds, colours and sizes, some overlapping. Masks are the
visible part of each shape: COCO polygons for unoccluded shapes, compressed
RLE for occluded ones. Each referred shape gets 1-3 sentences that identify
it uniquely (checked against every shape in the image): attribute phrases
("the red circle"), spatial phrases ("the leftmost square", "the blue
triangle on the right") and relational phrases ("the star left of the green
square").

Splits are by image, as in RefCOCO (unc): train / val refer to any shape;
testA refers only to shapes of ``GROUP_A`` kinds and testB only to
``GROUP_B`` kinds, the analogue of RefCOCO's people / other objects.

Usage::

    python tools/dataset_converters/make_refshapes.py --out data/refshapes \
        --num-images 2400 --seed 0

The output is a deterministic function of ``--num-images`` and ``--seed``.
"""
import argparse
import json
import os
import os.path as osp
import pickle
import random
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

KINDS = ('circle', 'star', 'cross', 'square', 'triangle', 'diamond')
GROUP_A = ('circle', 'star', 'cross')  # testA refers to these
GROUP_B = ('square', 'triangle', 'diamond')  # testB refers to these
COLOURS: Dict[str, Tuple[int, int, int]] = {
    'red': (220, 30, 30),
    'green': (40, 170, 50),
    'blue': (40, 70, 220),
    'yellow': (240, 220, 40),
    'purple': (150, 50, 190),
    'white': (245, 245, 245),
}
SPLIT_FRACTIONS = (('train', 0.7), ('val', 0.1), ('testA', 0.1),
                   ('testB', 0.1))
IMAGE_DIR = osp.join('images', 'mscoco', 'images', 'train2014')


@dataclass
class Shape:
    """One shape: its kind, colour, size class, centre (x, y) in pixels and
    radius in pixels, and its visible mask after all shapes are drawn."""
    kind: str
    colour: str
    big: bool
    cx: float
    cy: float
    radius: float
    polygon: Optional[List[float]] = None
    visible: Optional[np.ndarray] = None
    occluded: bool = False


def shape_polygon(kind: str, cx: float, cy: float, r: float,
                  angle: float) -> List[float]:
    """Vertices of a shape as a flat COCO polygon ``[x0, y0, x1, y1, ...]``
    in pixel coordinates. ``angle`` (radians) is a small tilt; squares stay
    near axis-aligned and diamonds upright so the kinds remain distinct."""
    if kind == 'circle':
        n, radii = 40, [r]
    elif kind == 'star':
        n, radii = 10, [r, 0.45 * r]
    elif kind == 'cross':
        n, radii = 12, None
    elif kind == 'square':
        n, radii, angle = 4, [r], angle + np.pi / 4
    elif kind == 'triangle':
        n, radii = 3, [r]
    elif kind == 'diamond':
        n, radii, angle = 4, [r, 0.55 * r], 0.0
    else:
        raise ValueError(f'unknown shape kind {kind!r}; valid: {KINDS}')
    if kind == 'cross':  # a plus sign with arm half-width r / 3
        a, b = r, r / 3
        pts = np.array([(b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a),
                        (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b),
                        (-b, -a)])
        rot = np.array([[np.cos(angle), -np.sin(angle)],
                        [np.sin(angle), np.cos(angle)]])
        xy = pts @ rot.T + np.array([cx, cy])
    else:
        t = angle + 2 * np.pi * np.arange(n) / n
        rad = np.array([radii[i % len(radii)] for i in range(n)])
        xy = np.stack([cx + rad * np.sin(t), cy - rad * np.cos(t)], axis=1)
    return [round(float(v), 2) for v in xy.reshape(-1)]


def textured_background(rng: np.random.Generator, h: int,
                        w: int) -> np.ndarray:
    """A muted background: a colour gradient, sinusoidal stripes and pixel
    noise. Returns (H, W, 3) float32 in [0, 255]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(60, 170, size=(2, 3))
    g = (xx / w * np.cos(rng.uniform(0, np.pi)) +
         yy / h * np.sin(rng.uniform(0, np.pi)))[..., None]
    img = c0 + (c1 - c0) * np.clip(g, 0, 1)
    freq, phase = rng.uniform(0.05, 0.3), rng.uniform(0, 2 * np.pi)
    theta = rng.uniform(0, np.pi)
    stripes = np.sin(freq * (xx * np.cos(theta) + yy * np.sin(theta)) +
                     phase)
    img = img + rng.uniform(5, 20) * stripes[..., None]
    img = img + rng.normal(0, 8, size=img.shape)
    return np.clip(img, 0, 255).astype(np.float32)


def place_shapes(rng: np.random.Generator, h: int, w: int,
                 kinds: Sequence[str]) -> List[Shape]:
    """Place 2-6 shapes with random attributes; overlaps are allowed but no
    shape centre lies inside another shape."""
    shapes: List[Shape] = []
    n = int(rng.integers(2, 7))
    short = min(h, w)
    for _ in range(50 * n):
        if len(shapes) == n:
            break
        big = bool(rng.random() < 0.5)
        r = short * (rng.uniform(0.15, 0.21) if big else rng.uniform(
            0.09, 0.12))
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
        if any(np.hypot(cx - s.cx, cy - s.cy) < 0.9 * max(r, s.radius)
               for s in shapes):
            continue
        shapes.append(
            Shape(
                kind=str(rng.choice(kinds)),
                colour=str(rng.choice(list(COLOURS))),
                big=big,
                cx=cx,
                cy=cy,
                radius=r))
    return shapes


def render(rng: np.random.Generator, h: int, w: int,
           shapes: List[Shape]) -> np.ndarray:
    """Paint shapes in order on a textured background and fill each shape's
    ``polygon``, ``visible`` mask (H, W) uint8 and ``occluded`` flag.
    Returns the (H, W, 3) uint8 RGB image."""
    img = textured_background(rng, h, w)
    full = []
    for s in shapes:
        s.polygon = shape_polygon(s.kind, s.cx, s.cy, s.radius,
                                  rng.uniform(-0.2, 0.2))
        rle = mask_utils.merge(mask_utils.frPyObjects([s.polygon], h, w))
        m = mask_utils.decode(rle).astype(bool)
        shade = rng.normal(0, 6, size=3)
        img[m] = np.clip(np.array(COLOURS[s.colour]) + shade, 0, 255)
        full.append(m)
    for i, s in enumerate(shapes):
        later = np.zeros((h, w), bool)
        for m in full[i + 1:]:
            later |= m
        s.visible = (full[i] & ~later).astype(np.uint8)
        s.occluded = bool((full[i] & later).any())
    return img.astype(np.uint8)


def _attribute(s: Shape, with_size: bool, with_colour: bool,
               with_kind: bool) -> Tuple[str, Callable[[Shape], bool]]:
    """A noun phrase built from the chosen attributes, and its predicate."""
    words, tests = [], []
    if with_size:
        words.append('big' if s.big else 'small')
        tests.append(lambda o, b=s.big: o.big == b)
    if with_colour:
        words.append(s.colour)
        tests.append(lambda o, c=s.colour: o.colour == c)
    words.append(s.kind if with_kind else 'shape')
    if with_kind:
        tests.append(lambda o, k=s.kind: o.kind == k)
    return ' '.join(words), lambda o: all(t(o) for t in tests)


def _extreme(group: List[Shape], s: Shape) -> List[str]:
    """Spatial words that single ``s`` out within ``group`` (its extremes)."""
    words = []
    for key, lo, hi in ((lambda o: o.cx, 'leftmost', 'rightmost'),
                        (lambda o: o.cy, 'topmost', 'bottom')):
        vals = sorted(key(o) for o in group)
        margin = 0.05 * (vals[-1] - vals[0] + 1)
        if key(s) == vals[0] and vals[1] - vals[0] > margin:
            words.append(lo)
        if key(s) == vals[-1] and vals[-1] - vals[-2] > margin:
            words.append(hi)
    return words


def describe(target: Shape, shapes: List[Shape],
             rng: random.Random) -> List[Tuple[str, str]]:
    """All phrases of each type that identify ``target`` uniquely among
    ``shapes``. Returns (type, sentence) pairs."""
    out = []
    for with_size in (False, True):
        for with_colour in (False, True):
            phrase, pred = _attribute(target, with_size, with_colour, True)
            if [o for o in shapes if pred(o)] == [target]:
                out.append(('attribute', f'the {phrase}'))
    for with_colour in (False, True):
        phrase, pred = _attribute(target, False, with_colour, True)
        group = [o for o in shapes if pred(o)]
        if len(group) < 2:
            continue
        for word in _extreme(group, target):
            if word in ('leftmost', 'rightmost', 'topmost'):
                out.append(('spatial', f'the {word} {phrase}'))
            elif len(group) == 2:
                side = {'bottom': 'at the bottom'}.get(word, word)
                out.append(('spatial', f'the {phrase} {side}'))
            else:
                out.append(('spatial', f'the bottom {phrase}'))
        if len(group) == 2:
            other = group[0] if group[1] is target else group[1]
            if abs(target.cx - other.cx) > target.radius:
                side = 'left' if target.cx < other.cx else 'right'
                out.append(('spatial', f'the {phrase} on the {side}'))
    for land in shapes:
        if land is target:
            continue
        lphrase, lpred = _attribute(land, False, True, True)
        if [o for o in shapes if lpred(o)] != [land]:
            continue
        dx, dy = target.cx - land.cx, target.cy - land.cy
        if abs(dx) > 1.5 * abs(dy):
            rel = 'left of' if dx < 0 else 'right of'
            same = [o for o in shapes if o is not land and o.kind ==
                    target.kind and np.sign(o.cx - land.cx) == np.sign(dx)]
        elif abs(dy) > 1.5 * abs(dx):
            rel = 'above' if dy < 0 else 'below'
            same = [o for o in shapes if o is not land and o.kind ==
                    target.kind and np.sign(o.cy - land.cy) == np.sign(dy)]
        else:
            continue
        if same == [target]:
            out.append(('relational', f'the {target.kind} {rel} the {lphrase}'))
    rng.shuffle(out)
    return out


def choose_sentences(cands: List[Tuple[str, str]],
                     rng: random.Random) -> List[str]:
    """Pick 1-3 sentences, preferring different phrase types."""
    k = rng.randint(1, 3)
    by_type: Dict[str, List[str]] = {}
    for kind, sent in cands:
        by_type.setdefault(kind, []).append(sent)
    picked: List[str] = []
    while len(picked) < k and any(by_type.values()):
        for kind in list(by_type):
            if by_type[kind] and len(picked) < k:
                picked.append(by_type[kind].pop(0))
    return picked


def assign_splits(num_images: int) -> List[str]:
    """Deterministic by-image split assignment in SPLIT_FRACTIONS order."""
    splits: List[str] = []
    for name, frac in SPLIT_FRACTIONS:
        splits += [name] * int(round(frac * num_images))
    splits += ['train'] * (num_images - len(splits))
    return splits[:num_images]


def make_image(image_id: int, split: str, seed: int):
    """Generate one image and its shapes; regenerate until at least one
    shape of the split's referable kinds has a unique description."""
    referable = {'testA': GROUP_A, 'testB': GROUP_B}.get(split, KINDS)
    for attempt in range(100):
        rng = np.random.default_rng([seed, image_id, attempt])
        prng = random.Random(f'{seed}-{image_id}-{attempt}')
        h, w = (int(v) for v in rng.integers(160, 321, size=2))
        kinds = KINDS if split in ('train', 'val') else referable
        shapes = place_shapes(rng, h, w, kinds if rng.random() < 0.5 else
                              KINDS)
        img = render(rng, h, w, shapes)
        refs = []
        for s in shapes:
            if s.kind not in referable or s.visible.sum() < 30:
                continue
            cands = describe(s, shapes, prng)
            if cands:
                refs.append((s, choose_sentences(cands, prng)))
        if refs:
            return img, shapes, refs
    raise RuntimeError(f'could not generate a referable image {image_id}')


def segmentation(s: Shape) -> object:
    """COCO segmentation: polygon if the shape is fully visible, else
    compressed RLE of its visible part (counts as str, JSON-safe)."""
    if not s.occluded:
        return [s.polygon]
    rle = mask_utils.encode(np.asfortranarray(s.visible))
    return {'size': list(rle['size']), 'counts': rle['counts'].decode()}


def generate(out: str, num_images: int, seed: int) -> Dict[str, int]:
    """Write the dataset to ``out`` atomically (a temporary folder renamed
    into place) and return per-split ref counts."""
    parent = osp.dirname(osp.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.refshapes-', dir=parent)
    try:
        counts = _write(tmp, num_images, seed)
        if osp.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if osp.exists(tmp):
            shutil.rmtree(tmp)
    return counts


def _write(root: str, num_images: int, seed: int) -> Dict[str, int]:
    img_dir = osp.join(root, IMAGE_DIR)
    ann_dir = osp.join(root, 'refshapes')
    os.makedirs(img_dir)
    os.makedirs(ann_dir)
    images, anns, refs = [], [], []
    counts: Dict[str, int] = {}
    sent_id = 0
    for image_id, split in enumerate(assign_splits(num_images), start=1):
        img, shapes, chosen = make_image(image_id, split, seed)
        file_name = f'COCO_train2014_{image_id:012d}.jpg'
        Image.fromarray(img).save(osp.join(img_dir, file_name), quality=92)
        h, w = img.shape[:2]
        images.append(dict(id=image_id, file_name=file_name, height=h,
                           width=w))
        ann_ids = {}
        for s in shapes:
            ann_id = len(anns) + 1
            ann_ids[id(s)] = ann_id
            rle = mask_utils.encode(np.asfortranarray(s.visible))
            anns.append(dict(
                id=ann_id, image_id=image_id,
                category_id=KINDS.index(s.kind) + 1,
                segmentation=segmentation(s),
                area=float(mask_utils.area(rle)),
                bbox=[float(v) for v in mask_utils.toBbox(rle)],
                iscrowd=0))
        for s, sents in chosen:
            sentences = []
            for raw in sents:
                sentences.append(dict(tokens=raw.split(), raw=raw, sent=raw,
                                      sent_id=sent_id))
                sent_id += 1
            ann_id = ann_ids[id(s)]
            refs.append(dict(
                ref_id=len(refs), ann_id=ann_id, image_id=image_id,
                category_id=KINDS.index(s.kind) + 1, split=split,
                file_name=f'COCO_train2014_{image_id:012d}_{ann_id}.jpg',
                sent_ids=[x['sent_id'] for x in sentences],
                sentences=sentences))
            counts[split] = counts.get(split, 0) + 1
    categories = [dict(id=i + 1, name=k, supercategory='shape')
                  for i, k in enumerate(KINDS)]
    with open(osp.join(ann_dir, 'instances.json'), 'w') as f:
        json.dump(dict(images=images, annotations=anns,
                       categories=categories), f)
    with open(osp.join(ann_dir, 'refs(unc).p'), 'wb') as f:
        pickle.dump(refs, f, protocol=2)
    return counts


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/refshapes')
    parser.add_argument('--num-images', type=int, default=2400)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    if args.num_images < 10:
        parser.error(f'--num-images must be >= 10, got {args.num_images}')
    return args


def main() -> None:
    args = parse_args()
    counts = generate(args.out, args.num_images, args.seed)
    print(f'RefShapes written to {args.out}: refs per split {counts}')


if __name__ == '__main__':
    main()
