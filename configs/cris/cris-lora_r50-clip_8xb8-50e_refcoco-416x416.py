# CRIS RN50 on RefCOCO with LoRA on the CLIP text encoder: a demonstration
# of the generic `LoRA` wrapper (ris_plugins/models/adapters/lora.py, on
# mmpretrain's LoRAModel / LoRALinear) inside an existing method's config.
# Everything is cris_r50_8xb8-50e_refcoco-416x416.py except the text
# encoder: instead of fine-tuning all of CLIP's text tower at lr 1e-5, the
# tower is frozen and rank-8 LoRA (alpha 16) is added to the q and v
# projections of its 12 self-attention layers (Hu et al., ICLR 2022, who
# adapt W_q and W_v). LoRA starts as the identity (up-projection = 0), so
# the model starts exactly as CLIP's text tower.
#
# Trainable in the text encoder: 12 layers x 2 projections x (512 x 8 +
# 8 x 512) = 196,608 parameters instead of the whole tower's 63,690,240
# (with the 1024-d projection); the text positional embedding and
# `text_projection` are frozen too. The visual backbone, neck and head
# train as in CRIS.
#
# The wrapper keeps the full state dict (frozen base + LoRA) under
# text_encoder.module.*, so a converted CLIP checkpoint must be loaded into
# the text tower before wrapping: give the inner RefCLIPTextEncoder a
# `pretrained` Hugging Face folder (see configs/_base_/models/cris_r50.py
# for the visual tower).
_base_ = ['./cris_r50_8xb8-50e_refcoco-416x416.py']
context_length = 17
model = dict(
    text_encoder=dict(
        _delete_=True,
        type='LoRA',
        module=dict(
            type='RefCLIPTextEncoder',
            context_length=context_length,
            config=dict(projection_dim=1024)),
        rank=8,
        alpha=16,
        drop_rate=0.0,
        # HF CLIP names: clip.text_model.encoder.layers.{i}.self_attn.q_proj
        targets=[dict(type=r'.*self_attn\.(q|v)_proj')]))
# The LoRA weights train at the base lr 1e-4 (CRIS's 0.1 multiplier for
# `text_encoder` would otherwise apply to them); the frozen text weights
# have requires_grad=False and get no update whatever their group.
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'text_encoder': dict(lr_mult=1.0)}))
