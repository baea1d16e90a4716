"""Browser demo of a referring image segmentation model (Gradio).

Upload an image (or pick a RefShapes sample), type one sentence per line and
press *Segment*: for each sentence the page shows the predicted mask drawn
over the image (the inferencer's visualisation) and the binary mask.

Usage::

    python tools/web_demo.py CONFIG CHECKPOINT [--port 7860]
        [--host 127.0.0.1] [--device cpu] [--max-pixels 16000000]
        [--max-mb 20] [--max-sentences 8] [--samples-root data/refshapes]

Safety: the server binds to 127.0.0.1 (this machine only) unless ``--host``
says otherwise; it has no authentication. It makes no outbound connection:
Gradio's telemetry and version check are switched off
(``GRADIO_ANALYTICS_ENABLED=False`` and ``analytics_enabled=False``), no
share link is made, server-side rendering is off and the page uses Gradio's
bundled fonts. Uploads over ``--max-mb`` are refused by the server (Gradio's
``max_file_size``) and again by the handler; images over ``--max-pixels``
(width x height, read from the file header before decoding) are refused with
a message in the page, as are files that are not images, an empty sentence
box and more than ``--max-sentences`` sentences.

The model runs through ``ris_plugins.apis.RefSegInferencer``; the image goes
to it as the uploaded file, so it is decoded exactly as in training and
testing (``LoadRefImage``: EXIF orientation ignored).
"""
import argparse
import os
import os.path as osp
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

# Before gradio is imported: no telemetry, no version check at launch.
os.environ['GRADIO_ANALYTICS_ENABLED'] = 'False'

import gradio as gr  # noqa: E402
import mmcv  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_SAMPLES_ROOT = osp.join(ROOT, 'data', 'refshapes')
# Element ids of the page's components (Selenium finds them by these).
ELEM_IDS = dict(
    image='input_image',
    sample='sample',
    text='sentences',
    button='submit',
    status='status',
    overlays='overlays',
    masks='masks')
# Image formats the model's loader (cv2 / mmcv) decodes, as PIL names them.
IMAGE_FORMATS = ('BMP', 'JPEG', 'PNG', 'TIFF', 'WEBP')

GalleryItems = List[Tuple[np.ndarray, str]]


class DemoInputError(ValueError):
    """Input the demo refuses; the message is shown in the page."""


@dataclass(frozen=True)
class DemoLimits:
    """What one request may hold.

    Args:
        max_pixels (int): Largest image area, width x height (pixels).
        max_bytes (int): Largest image file (bytes).
        max_sentences (int): Most sentences (lines) per request.
    """
    max_pixels: int = 16_000_000
    max_bytes: int = 20 * 2**20
    max_sentences: int = 8


@dataclass(frozen=True)
class Sample:
    """A RefShapes image offered in the page, with one sentence per
    referred object in it (the first sentence of each ref)."""
    label: str
    img_path: str
    sentences: Tuple[str, ...]


def load_samples(root: str, split: str = 'val',
                 max_images: int = 32) -> List[Sample]:
    """Samples from a RefShapes in the ``refer`` layout, read through
    :class:`ris_plugins.datasets.RefCOCODataset` (all its checks apply).

    Args:
        root (str): The dataset root (holding ``refshapes/refs(unc).p``).
        split (str): Split to offer.
        max_images (int): Most images offered (the first ones of the split).

    Returns:
        list[Sample]: One per image, in the split's order.

    Raises:
        FileNotFoundError: ``root``, its refs / instances file or an image
            does not exist. ValueError: a corrupt dataset (from
            ``RefCOCODataset``, naming the file and ref).
    """
    from ris_plugins.datasets.refcoco import RefCOCODataset
    if not osp.isdir(root):
        raise FileNotFoundError(
            f'samples root {root!r} does not exist; generate it with '
            'python tools/dataset_converters/make_refshapes.py --out '
            f'{root}')
    dataset = RefCOCODataset(
        data_root=root, dataset='refshapes', split_by='unc', split=split,
        sentence_mode='first', pipeline=[], test_mode=True)
    by_image: dict = {}
    for k in range(len(dataset)):
        info = dataset.get_data_info(k)
        by_image.setdefault(info['img_path'], []).append(info['text'])
    samples = []
    for img_path, sentences in list(by_image.items())[:max_images]:
        more = f' (+{len(sentences) - 1} more)' if len(sentences) > 1 else ''
        label = f'{osp.basename(img_path)}: {sentences[0]}{more}'
        samples.append(Sample(label, img_path, tuple(sentences)))
    return samples


def parse_sentences(text: Optional[str], max_sentences: int) -> List[str]:
    """The sentences of the text box: one per non-blank line, stripped.

    Raises:
        DemoInputError: No sentence, or more than ``max_sentences``.
    """
    sentences = [line.strip() for line in (text or '').splitlines()]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise DemoInputError(
            'Type a sentence describing the object to segment (several '
            'sentences: one per line).')
    if len(sentences) > max_sentences:
        raise DemoInputError(
            f'{len(sentences)} sentences given; at most {max_sentences} per '
            'request.')
    return sentences


def check_image_file(path: Optional[str], limits: DemoLimits) -> None:
    """Refuse a missing, oversized or non-image file before decoding it
    (the size comes from the file header).

    Raises:
        DemoInputError: No image, a file over ``limits.max_bytes`` or
            ``limits.max_pixels``, or not an image in
            :data:`IMAGE_FORMATS`.
    """
    if not path:
        raise DemoInputError('Upload an image or pick a sample first.')
    name = osp.basename(path)
    if not osp.isfile(path):
        raise DemoInputError(f'Image {name} was not received; upload it '
                             'again.')
    size = osp.getsize(path)
    if size > limits.max_bytes:
        raise DemoInputError(
            f'Image {name} is {size / 2**20:.1f} MB; the limit is '
            f'{limits.max_bytes / 2**20:.1f} MB.')
    try:
        with Image.open(path) as im:  # reads the header only
            fmt, (w, h) = im.format, im.size
    except Image.DecompressionBombError as err:
        raise DemoInputError(f'Image {name} is too large: {err}') from err
    except (OSError, ValueError) as err:
        raise DemoInputError(
            f'{name} is not a readable image ({type(err).__name__}); '
            f'formats: {", ".join(IMAGE_FORMATS)}.') from err
    if fmt not in IMAGE_FORMATS:
        raise DemoInputError(f'{name} is a {fmt} file; formats: '
                             f'{", ".join(IMAGE_FORMATS)}.')
    if w * h > limits.max_pixels:
        raise DemoInputError(
            f'Image {name} is {w}x{h} = {w * h} pixels; the limit is '
            f'{limits.max_pixels} pixels.')


class RefSegDemo:
    """The page's handlers, independent of Gradio (tests call them).

    Args:
        inferencer: Callable as ``ris_plugins.apis.RefSegInferencer``:
            ``inferencer(image_path, [sentence, ...], return_vis=True)``
            returning ``predictions`` (dicts with ``mask`` (H, W) uint8 in
            {0, 1} and ``text``) and ``visualization`` ((H, W, 3) uint8
            RGB), one per sentence.
        samples (Sequence[Sample]): Images offered in the sample picker.
        limits (DemoLimits): Request limits.
    """

    def __init__(self,
                 inferencer: Any,
                 samples: Sequence[Sample] = (),
                 limits: DemoLimits = DemoLimits()) -> None:
        self.inferencer = inferencer
        self.samples = {s.label: s for s in samples}
        self.limits = limits

    def segment(self, image: Optional[str],
                text: Optional[str]) -> Tuple[GalleryItems, GalleryItems,
                                              str]:
        """Segment the object each sentence refers to.

        Args:
            image (str | None): Path of the uploaded image file.
            text (str | None): Sentences, one per line.

        Returns:
            tuple: ``(overlays, masks, message)``: per sentence the overlay
            (H, W, 3) uint8 RGB and the mask (H, W) uint8 in {0, 255}, each
            with a caption; and a Markdown message (the refusal reason on
            bad input, then both lists are empty).
        """
        try:
            check_image_file(image, self.limits)
            sentences = parse_sentences(text, self.limits.max_sentences)
            out = self._infer(image, sentences)
        except DemoInputError as err:
            return [], [], f'**{err}**'
        overlays, masks, captions = [], [], []
        for k, (pred, vis) in enumerate(
                zip(out['predictions'], out['visualization']), start=1):
            mask = np.asarray(pred['mask'], dtype=np.uint8)
            area = int(mask.sum())
            caption = (f'{k}. "{pred["text"]}": {area} px '
                       f'({100 * area / mask.size:.1f}% of the image)')
            overlays.append((np.asarray(vis, dtype=np.uint8), caption))
            masks.append((mask * 255, caption))
            captions.append(caption)
        return overlays, masks, '\n'.join(captions)  # a Markdown list

    def _infer(self, image: str, sentences: List[str]) -> dict:
        """Run the inferencer; its bad-input errors become
        :class:`DemoInputError`; checks that it answered every sentence."""
        try:
            out = self.inferencer(image, sentences, return_vis=True)
        except (ValueError, OSError) as err:
            raise DemoInputError(f'The model refused the input: {err}') \
                from err
        n_pred, n_vis = len(out['predictions']), len(out['visualization'])
        if not n_pred == n_vis == len(sentences):
            raise RuntimeError(
                f'the inferencer returned {n_pred} predictions and {n_vis} '
                f'visualisations for {len(sentences)} sentences')
        return out

    def load_sample(self, label: Optional[str]) -> Tuple[Any, Any]:
        """The picked sample's image ((H, W, 3) uint8 RGB, decoded as the
        model's loader does: EXIF orientation ignored) and its sentences,
        one per line; ``gr.update()`` (no change) when nothing is picked.

        Raises:
            KeyError: ``label`` is not a sample (the message lists how
                many there are).
        """
        if not label:
            return gr.update(), gr.update()
        if label not in self.samples:
            raise KeyError(f'no sample {label!r} (there are '
                           f'{len(self.samples)})')
        sample = self.samples[label]
        # mmcv applies channel_order only to flag 'color': flip BGR here.
        bgr = mmcv.imread(sample.img_path, 'color_ignore_orientation')
        return np.ascontiguousarray(bgr[..., ::-1]), '\n'.join(
            sample.sentences)


def build_app(inferencer: Any,
              samples: Sequence[Sample] = (),
              limits: DemoLimits = DemoLimits(),
              title: str = 'Referring image segmentation'
              ) -> Tuple[gr.Blocks, RefSegDemo]:
    """Build the page.

    Args:
        inferencer: See :class:`RefSegDemo`.
        samples (Sequence[Sample]): Offered in a picker (hidden if empty).
        limits (DemoLimits): Request limits.
        title (str): Page title (e.g. the config name).

    Returns:
        tuple: The ``gr.Blocks`` app (not launched; see :func:`launch`)
        and its :class:`RefSegDemo` handlers.
    """
    demo = RefSegDemo(inferencer, samples, limits)
    # Uploads and outputs older than an hour are deleted every 10 minutes.
    with gr.Blocks(title=title, analytics_enabled=False,
                   delete_cache=(600, 3600)) as app:
        gr.Markdown(f'## {title}\nUpload an image or pick a sample, type '
                    'one sentence per line (each names one object), press '
                    '**Segment**.')
        with gr.Row():
            with gr.Column():
                image = gr.Image(
                    type='filepath', image_mode=None, format='png',
                    sources=['upload', 'clipboard'], label='Image',
                    elem_id=ELEM_IDS['image'])
                sample = gr.Dropdown(
                    choices=[s.label for s in samples], value=None,
                    label='... or a RefShapes sample', visible=bool(samples),
                    elem_id=ELEM_IDS['sample'])
                text = gr.Textbox(
                    lines=3, label='Sentences (one per line)',
                    placeholder='the red circle', elem_id=ELEM_IDS['text'])
                button = gr.Button('Segment', variant='primary',
                                   elem_id=ELEM_IDS['button'])
            with gr.Column():
                status = gr.Markdown(elem_id=ELEM_IDS['status'])
                overlays = gr.Gallery(
                    label='Overlay', format='png', columns=2,
                    object_fit='contain', elem_id=ELEM_IDS['overlays'])
                masks = gr.Gallery(
                    label='Mask', format='png', columns=2,
                    object_fit='contain', elem_id=ELEM_IDS['masks'])
        button.click(demo.segment, [image, text], [overlays, masks, status])
        sample.change(demo.load_sample, [sample], [image, text])
    return app, demo


def launch(app: gr.Blocks,
           host: str = '127.0.0.1',
           port: int = 7860,
           limits: DemoLimits = DemoLimits(),
           block: bool = True) -> None:
    """Serve ``app`` on ``host:port`` with no outbound connection (no
    share link, no SSR, no telemetry), uploads capped at
    ``limits.max_bytes`` and one request at a time.

    Args:
        block (bool): Serve until interrupted; ``False`` returns once the
            server is up (close it with ``app.close()``).

    Raises:
        OSError: The port is taken.
    """
    app.queue(default_concurrency_limit=1, max_size=16)
    app.launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,
        show_error=True,
        max_file_size=limits.max_bytes,
        prevent_thread_lock=not block,
        quiet=not block)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to bind (default: this machine only)')
    parser.add_argument('--port', type=int, default=7860)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--max-pixels', type=int,
                        default=DemoLimits.max_pixels,
                        help='largest image area, width x height')
    parser.add_argument('--max-mb', type=float,
                        default=DemoLimits.max_bytes / 2**20,
                        help='largest image file, MB (2**20 bytes)')
    parser.add_argument('--max-sentences', type=int,
                        default=DemoLimits.max_sentences)
    parser.add_argument('--samples-root', default=None,
                        help='RefShapes root offered as samples (default: '
                        'data/refshapes when it exists)')
    parser.add_argument('--samples-split', default='val')
    args = parser.parse_args(argv)
    for name in ('max_pixels', 'max_mb', 'max_sentences'):
        if getattr(args, name) <= 0:
            parser.error(f'--{name.replace("_", "-")} must be > 0, got '
                         f'{getattr(args, name)}')
    if not 0 < args.port < 65536:
        parser.error(f'--port must be in 1..65535, got {args.port}')
    if args.samples_root and not osp.isdir(args.samples_root):
        parser.error(f'--samples-root {args.samples_root!r} does not exist')
    return args


def main() -> None:
    args = parse_args()
    from ris_plugins.apis import RefSegInferencer
    limits = DemoLimits(
        max_pixels=args.max_pixels,
        max_bytes=int(args.max_mb * 2**20),
        max_sentences=args.max_sentences)
    root = args.samples_root or DEFAULT_SAMPLES_ROOT
    samples = []
    if osp.isdir(root):
        samples = load_samples(root, args.samples_split)
    else:
        print(f'No RefShapes at {root}: the sample picker is hidden '
              '(tools/dataset_converters/make_refshapes.py makes one).')
    inferencer = RefSegInferencer(
        model=args.config, weights=args.checkpoint, device=args.device)
    if args.host not in ('127.0.0.1', 'localhost', '::1'):
        print(f'WARNING: binding to {args.host}: the demo (no '
              'authentication) is reachable from other machines.')
    app, _ = build_app(inferencer, samples, limits,
                       title=osp.splitext(osp.basename(args.config))[0])
    launch(app, args.host, args.port, limits)


if __name__ == '__main__':
    main()
