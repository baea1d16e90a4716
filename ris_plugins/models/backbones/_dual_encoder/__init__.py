"""Private parts of :class:`~ris_plugins.models.backbones.DualEncoderBackbone`
(``dual_encoder.py``, the layer-synchronous runner): the state the towers
carry between blocks (``state.py``) and the code that steps each CLIP tower
one block at a time (``vit_tower.py``, ``resnet_tower.py``,
``text_tower.py``). The drivers are registered for their tower classes in
``dual_encoder.py`` (:func:`register_visual_tower`), which is also how a
new visual tower is added.

A visual tower driver is a class of static methods taking the tower module
itself (so no module reference is held twice):

* ``layout``: the :class:`DualEncoderState` layout, 'tokens' or 'map';
* ``vis_prefix``: tokens before the patches right after embedding;
* ``widths(tower)``: visual width after block 0 (embedding) .. N;
* ``embed(tower, img) -> (vis, grid)``;
* ``run_block(tower, state, i, shortcuts)``: run 0-based block ``i`` in
  place;
* ``tap(state)``: what ``patch_taps`` keeps of the current block;
* ``levels(tower, state, taps)``: the tapped maps and the final map.
"""
