# BarLeRIa without the GST side network: SNF + LIM (both directions) only,
# 390,656 adapter parameters (the paper's "0.39M"). The release's
# use_side=False path crashes (UnboundLocalError); here the side net is
# simply left out of the backbone and the neck takes 3 levels.
_base_ = [
    '../../../configs/barleria/barleria_vit-b16_8xb4-50e_refcoco-416x416.py'
]
model = dict(
    backbone=dict(side_net=None), fusion=dict(extra_input=False))
