# Full BarLeRIa (SNF + LIM both directions + GST) on RefCOCO: the same as
# configs/barleria/barleria_vit-b16_8xb4-50e_refcoco-416x416.py, kept here
# beside its no-GST and as-released variants.
_base_ = [
    '../../../configs/barleria/barleria_vit-b16_8xb4-50e_refcoco-416x416.py'
]
