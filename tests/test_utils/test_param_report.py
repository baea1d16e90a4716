"""ris_plugins.utils.param_report: parameter tables."""
import logging

import torch
import torch.nn as nn
from mmengine.logging import MMLogger

from ris_plugins.utils.param_report import (format_param_table,
                                            log_param_table, param_table)


class Toy(nn.Module):

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(5))  # 5, trainable
        self.a = nn.Linear(3, 4)  # 16, frozen
        self.b = nn.Linear(4, 2)  # 10, trainable
        self.bn = nn.BatchNorm1d(2)  # 4 params (+ buffers, not counted)
        self.c = nn.Sequential(self.b)  # shared with b: counted once
        self.act = nn.ReLU()  # no params: no row
        self.a.requires_grad_(False)
        self.bn.weight.requires_grad_(False)


def test_param_table_hand_counts():
    rows = param_table(Toy())
    assert rows == [('(self)', 5, 0), ('a', 0, 16), ('b', 10, 0), ('bn', 2, 2),
                    ('total', 17, 18)]


def test_log_param_table(tmp_path):
    log_file = tmp_path / 'params.log'
    logger = MMLogger.get_instance(
        'test_param_report', log_file=str(log_file), log_level='INFO')
    text = log_param_table(Toy(), logger=logger)
    for h in logger.handlers:
        h.flush()
    lines = text.splitlines()
    assert lines[0].split() == [
        'module', 'trainable', 'frozen', 'trainable', '%'
    ]
    assert len({len(line)
                for line in lines[:-1] if set(line) != {'-'}}) == 1  # aligned
    assert lines[-2].split() == ['total', '17', '18', '48.57']
    assert lines[-1] == 'trainable: 17 / 35 parameters (48.571%)'
    assert 'trainable: 17 / 35' in log_file.read_text()
    assert format_param_table([('x', 1_234_567, 0), ('total', 1_234_567, 0)
                               ]).splitlines()[2].split()[1] == '1,234,567'
    logging.getLogger('test_param_report').handlers.clear()
