"""Run ``cellclr`` under torchrun, but SIGKILL the main process when epoch ``KILL_AT_EPOCH``
(environment) starts: a node failure after a checkpoint. Used by test_distributed."""

import os
import signal
import sys

import cellclr.learning.train as train_module
from cellclr.cli import main

real_epoch = train_module._train_epoch


def epoch(*args, **kwargs):
    if kwargs["epoch"] == int(os.environ["KILL_AT_EPOCH"]) and os.environ["RANK"] == "0":
        os.kill(os.getpid(), signal.SIGKILL)
    return real_epoch(*args, **kwargs)


train_module._train_epoch = epoch
sys.exit(main(sys.argv[1:]))
