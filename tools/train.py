"""``mim train ris_plugins CONFIG ...``: mmseg's tools/train.py on our configs.

Hands the command line unchanged to the installed mmseg's ``train.py``
(:func:`ris_plugins.utils.mim.run_mmseg_script`), so ``mim train
ris_plugins <config name>.py`` works from an installed wheel and behaves
exactly as ``mim train mmseg <config path>``.
"""
from ris_plugins.utils.mim import run_mmseg_script

if __name__ == '__main__':
    run_mmseg_script('train.py')
