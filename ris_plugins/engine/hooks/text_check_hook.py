"""Check, before any step runs, that the pipelines' tokenizers fit the
model's text encoder."""
from typing import Iterator, Optional

import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmseg.registry import HOOKS, TRANSFORMS

LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def tokenizer_steps(dataset_cfg) -> Iterator[dict]:
    """Every ``TokenizeText`` step in a dataset config, wrappers included
    (``dataset`` / ``datasets`` keys, e.g. ``ShuffledTextDataset``)."""
    if not isinstance(dataset_cfg, dict):
        return
    for step in dataset_cfg.get('pipeline') or []:
        if isinstance(step, dict) and step.get('type') == 'TokenizeText':
            yield step
    inner = dataset_cfg.get('dataset')
    yield from tokenizer_steps(inner)
    for ds in dataset_cfg.get('datasets') or []:
        yield from tokenizer_steps(ds)


def check_tokenizer(tokenizer, where: str, encoder_name: str,
                    encoder: nn.Module) -> None:
    """Compare one ``TokenizeText`` with the text encoder.

    Args:
        tokenizer (TokenizeText): The built pipeline step.
        where (str): Where it sits (for the message), e.g.
            ``'train_dataloader'``.
        encoder_name (str): Slot of the encoder, e.g. ``'text_encoder'``.
        encoder (nn.Module): The encoder (``vocab_size``, ``max_length``).

    Raises:
        ValueError: The tokenizer emits ids outside the encoder's
            vocabulary (tokenizer and encoder do not match), or more tokens
            than the encoder has positions. The message names both
            modules and both numbers.
    """
    desc = (f'TokenizeText(tokenizer={tokenizer.tokenizer!r}, '
            f'context_length={tokenizer.context_length}) in {where}')
    enc = f'{encoder_name} {type(encoder).__name__}'
    vocab = getattr(encoder, 'vocab_size', None)
    if vocab is not None and tokenizer.vocab_size > vocab:
        raise ValueError(
            f'{desc} emits ids up to {tokenizer.vocab_size - 1}, outside the '
            f'{vocab} ids of {enc}: the tokenizer does not match the text '
            "encoder (CLIP BPE: 'clip' with RefCLIPTextEncoder; WordPiece: "
            "'bert' with BertTextEncoder)")
    longest = getattr(encoder, 'max_length', None)
    if longest is not None and tokenizer.context_length > longest:
        raise ValueError(
            f'{desc} emits {tokenizer.context_length} tokens but {enc} '
            f'takes at most {longest}: lower context_length or raise the '
            "encoder's")


@HOOKS.register_module()
class TextInputCheckHook(Hook):
    """Refuse to run when a dataloader's ``TokenizeText`` does not fit the
    model's text encoder: a vocabulary the encoder lacks, or a context
    longer than its positions. Runs in ``before_run`` (``mim train``,
    ``mim test`` and ``Runner.val`` all call it), once, instead of a check
    on every step. Registered in ``configs/_base_/default_runtime.py`` as
    ``default_hooks.text_check``.

    Raises:
        ValueError: From ``before_run`` (see :func:`check_tokenizer`).
    """

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        source = getattr(model, 'text_source', None)
        if source is None or source[1] is None:
            return
        for loader in LOADERS:
            cfg: Optional[dict] = runner.cfg.get(loader)
            if not cfg:
                continue
            for step in tokenizer_steps(cfg.get('dataset')):
                check_tokenizer(TRANSFORMS.build(step), loader, *source)
