"""Pictures of every test sample, one file per (ref, sentence)."""
import os.path as osp
from typing import Dict, Optional, Sequence

import mmcv
import mmengine.fileio as fileio
from mmengine.runner import Runner

from mmseg.engine.hooks import SegVisualizationHook
from mmseg.registry import HOOKS
from mmseg.structures import SegDataSample

#: Metainfo keys that name a picture.
NAME_KEYS = ('img_path', 'ref_id', 'sent_id')


def picture_name(data_sample: SegDataSample) -> str:
    """``<image stem>_<ref_id>_<sent_id>``: unique per (ref, sentence).

    ``sent_id`` is the sentence's id in the refer annotations
    (``refs(<splitBy>).p``; PhraseCut: 0, one phrase per task), which
    traces a picture to its exact sentence.

    Raises:
        KeyError: A sample without ``img_path``, ``ref_id`` or ``sent_id``
            metainfo (they must be in ``PackSegInputs``' ``meta_keys``).
    """
    meta = data_sample.metainfo
    missing = [k for k in NAME_KEYS if k not in meta]
    if missing:
        raise KeyError(
            f'sample {meta.get("img_path")!r} has no metainfo {missing} '
            f'(has {sorted(meta)}); pictures are named '
            '<image stem>_<ref_id>_<sent_id>: add them to PackSegInputs\' '
            'meta_keys')
    stem = osp.splitext(osp.basename(meta['img_path']))[0]
    return f'{stem}_{meta["ref_id"]}_{meta["sent_id"]}'


@HOOKS.register_module()
class RefSegVisualizationHook(SegVisualizationHook):
    """Draws validation / test predictions with their sentence; in test
    one picture per (ref, sentence), never overwritten.

    mmseg's :class:`SegVisualizationHook` names pictures by image only, so
    every later sentence of an image overwrote the earlier ones. Here:

    * test: ``<image stem>_<ref_id>_<sent_id>.png`` (see
      :func:`picture_name`) in ``out_dir``; by default the visualizer's
      ``save_dir`` when one was given (``tools/test.py --show-dir DIR``,
      which also sets ``draw=True``), else ``<work_dir>/<timestamp>/
      vis_image``. Two samples with the same name in one run are an
      error naming both (nothing is overwritten).
    * val (``draw=True`` during training): through the visualizer's
      backends as ``val_<name>`` with the iteration as step, as mmseg.
    * ``show=True``: displayed only, nothing written (as mmseg).

    The image is read as the pipelines read it (EXIF orientation
    ignored, ``LoadRefImage``), so it matches the masks.

    Args:
        draw (bool): Draw at all (``--show`` / ``--show-dir`` set it).
        interval (int): Draw every ``interval``-th batch; 1 draws every
            sample.
        show (bool): Display instead of writing.
        wait_time (float): Display time in seconds.
        backend_args (dict, optional): mmengine file backend arguments.
        out_dir (str, optional): Where test pictures go (see above).

    Source: mmseg ``engine/hooks/visualization_hook.py``.
    """

    def __init__(self,
                 draw: bool = False,
                 interval: int = 1,
                 show: bool = False,
                 wait_time: float = 0.,
                 backend_args: Optional[dict] = None,
                 out_dir: Optional[str] = None) -> None:
        super().__init__(draw, interval, show, wait_time, backend_args)
        self.out_dir = out_dir
        self._written: Dict[str, str] = {}

    def test_dir(self, runner: Runner) -> str:
        """Directory of the test pictures (see the class doc)."""
        if self.out_dir is not None:
            return self.out_dir
        save_dir = getattr(self._visualizer, 'save_dir', None)
        if save_dir is not None and (osp.abspath(save_dir) !=
                                     osp.abspath(runner.log_dir)):
            return save_dir
        return osp.join(runner.log_dir, 'vis_image')

    def before_test(self, runner: Runner) -> None:
        """Start a new set of names."""
        self._written = {}

    def _after_iter(self,
                    runner: Runner,
                    batch_idx: int,
                    data_batch: dict,
                    outputs: Sequence[SegDataSample],
                    mode: str = 'val') -> None:
        """Draw each output of every ``interval``-th batch.

        Raises:
            KeyError: A sample without the naming metainfo.
            ValueError: Two test samples with the same picture name.
        """
        if self.draw is False or mode == 'train':
            return
        if not self.every_n_inner_iters(batch_idx, self.interval):
            return
        for output in outputs:
            name = picture_name(output)
            out_file = None
            if mode == 'test' and not self.show:
                out_file = osp.join(self.test_dir(runner), name + '.png')
                if out_file in self._written:
                    raise ValueError(
                        f'two test samples would both be drawn to '
                        f'{out_file!r}: {self._written[out_file]!r} and '
                        f'{output.img_path!r} share (ref_id, sent_id) = '
                        f'({output.ref_id}, {output.sent_id}); picture '
                        'names need unique (image, ref, sentence)')
                self._written[out_file] = output.img_path
            img_bytes = fileio.get(
                output.img_path, backend_args=self.backend_args)
            # mmcv applies channel_order only to flag='color': convert here
            img = mmcv.bgr2rgb(mmcv.imfrombytes(
                img_bytes, flag='color_ignore_orientation'))
            self._visualizer.add_datasample(
                f'{mode}_{name}',
                img,
                data_sample=output,
                show=self.show,
                wait_time=self.wait_time,
                out_file=out_file,
                step=runner.iter)
