# Control run of the demo: at test time every sample gets the sentence of
# another ref. A model that reads the sentence must score far lower.
_base_ = ['./ris-baseline_r18-minilm_1xb16-2k_refshapes-160x160.py']
test_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ShuffledTextDataset',
        seed=0,
        dataset={{_base_.val_dataloader.dataset}}))
